"""Character-level attacks: the spelling games attackers play with keyword filters.

Each attack rewrites the unsafe terms of a prompt the way people do in the wild (and as the
character-level baselines of SneakyPrompt, Yang et al., IEEE S&P 2024, and the typo attacks of
Gao et al., "Black-box generation of adversarial text sequences", 2018): leetspeak digits and
symbols, Cyrillic/Greek look-alike letters, invisible zero-width characters, separators between
letters, realistic typos, full-width and other stylised Unicode letters. None of them is shaped by
what t2iguard's normalizer knows.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import ClassVar

from t2iguard.prompt.vocabulary import Vocabulary
from t2iguard.redteam.attack import STOPWORDS, WORD_RE, Attack, RedteamLexicon, Target, replace_spans

# -- leetspeak: the common single-character substitutions (1337 "basic" level)
LEET_SUBS: dict[str, tuple[str, ...]] = {
    "a": ("4", "@"),
    "e": ("3",),
    "i": ("1", "!"),
    "o": ("0",),
    "s": ("5", "$"),
    "t": ("7",),
    "g": ("9",),
    "b": ("8",),
    "l": ("1",),
}

# -- homoglyphs: letters of other scripts that look like Latin letters
CYRILLIC: dict[str, str] = {
    "a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і", "j": "ј", "s": "ѕ",
    "h": "һ", "d": "ԁ", "k": "к", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М",
    "O": "О", "P": "Р", "T": "Т", "X": "Х",
}  # fmt: skip
GREEK: dict[str, str] = {
    "a": "α", "o": "ο", "v": "ν", "i": "ι", "k": "κ", "t": "τ", "u": "υ", "n": "η", "e": "ε", "p": "ρ",
    "x": "χ", "w": "ω", "y": "γ", "A": "Α", "B": "Β", "E": "Ε", "H": "Η", "I": "Ι", "K": "Κ", "M": "Μ",
    "N": "Ν", "O": "Ο", "P": "Ρ", "T": "Τ", "X": "Χ", "Z": "Ζ",
}  # fmt: skip
HOMOGLYPH_SCRIPTS: dict[str, dict[str, str]] = {"cyrillic": CYRILLIC, "greek": GREEK}

# -- invisible characters
ZERO_WIDTH: tuple[str, ...] = (
    "\u200b",  # zero width space
    "\u200c",  # zero width non-joiner
    "\u200d",  # zero width joiner
    "\u2060",  # word joiner
    "\ufeff",  # zero width no-break space (BOM)
    "\u00ad",  # soft hyphen
)

# -- separators people put between letters
SEPARATORS: tuple[str, ...] = (".", "-", "_", " ", "*", "/", "|", "+", "~", "•", ":", ",")

# -- keyboard neighbours (QWERTY) for substitution typos
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KEYBOARD_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _ch in enumerate(_row):
        near = []
        for dr in (-1, 0, 1):
            rr = _r + dr
            if 0 <= rr < len(_ROWS):
                for dc in (-1, 0, 1):
                    cc = _c + dc
                    if (dr, dc) != (0, 0) and 0 <= cc < len(_ROWS[rr]):
                        near.append(_ROWS[rr][cc])
        KEYBOARD_NEIGHBOURS[_ch] = "".join(near)
VOWELS = "aeiou"
# phonetic respellings (both directions where natural)
PHONETIC: tuple[tuple[str, str], ...] = (
    ("ph", "f"), ("f", "ph"), ("ck", "k"), ("c", "k"), ("k", "c"), ("s", "z"), ("x", "ks"), ("ks", "x"),
    ("ee", "ea"), ("oo", "u"), ("u", "oo"), ("qu", "kw"), ("er", "ur"), ("y", "i"), ("i", "y"), ("ed", "d"),
)  # fmt: skip


def _styled_alphabet(base_lower: int | None, base_upper: int | None, exceptions: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(26):
        lo, up = chr(ord("a") + i), chr(ord("A") + i)
        if base_lower is not None:
            out[lo] = exceptions.get(lo, chr(base_lower + i))
        if base_upper is not None:
            out[up] = exceptions.get(up, chr(base_upper + i))
    return out


SMALL_CAPS = dict(zip("abcdefghijklmnopqrstuvwxyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘǫʀꜱᴛᴜᴠᴡxʏᴢ", strict=True))

# -- stylised Unicode letters: what "font generator" sites produce
UNICODE_STYLES: dict[str, dict[str, str]] = {
    "fullwidth": {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)},
    "math_bold": _styled_alphabet(0x1D41A, 0x1D400, {}),
    "math_italic": _styled_alphabet(0x1D44E, 0x1D434, {"h": "ℎ"}),
    "math_bold_script": _styled_alphabet(0x1D4EA, 0x1D4D0, {}),
    "double_struck": _styled_alphabet(
        0x1D552, 0x1D538, {"C": "ℂ", "H": "ℍ", "N": "ℕ", "P": "ℙ", "Q": "ℚ", "R": "ℝ", "Z": "ℤ"}
    ),
    "sans_bold": _styled_alphabet(0x1D5EE, 0x1D5D4, {}),
    "monospace": _styled_alphabet(0x1D68A, 0x1D670, {}),
    "circled": _styled_alphabet(0x24D0, 0x24B6, {}),
    "parenthesized": _styled_alphabet(0x249C, None, {}),
    "negative_squared": {k.lower(): v for k, v in _styled_alphabet(None, 0x1F170, {}).items()},
    "small_caps": SMALL_CAPS,
}


@lru_cache(maxsize=1)
def _english() -> Vocabulary:
    return Vocabulary.english()


class _PerWord(Attack):
    """An attack that rewrites the content words of each target (the words of a multi-word term
    like "stabbed to death", without its stop words) independently."""

    one_per_target: ClassVar[bool] = False

    def transform(self, prompt: str, rng: random.Random) -> str | None:
        reps = []
        for t in self.targets(prompt):
            words = [
                Target(t.start + m.start(), t.start + m.end(), m.group(0), t.entry)
                for m in WORD_RE.finditer(t.text)
                if m.group(0).lower() not in STOPWORDS
            ] or [t]
            if self.one_per_target:
                words = [rng.choice(words)]
            for w in words:
                new = self.rewrite(w, rng)
                if new is not None and new != w.text:
                    reps.append((w.start, w.end, new))
        return replace_spans(prompt, reps) if reps else None

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        raise NotImplementedError


def _substitute(word: str, table: dict[str, tuple[str, ...]] | dict[str, str], rate: float, rng: random.Random) -> str:
    """Replace each letter that ``table`` knows with probability ``rate`` (at least one)."""
    positions = [i for i, c in enumerate(word) if c in table]
    if not positions:
        return word
    chosen = [i for i in positions if rng.random() < rate] or [rng.choice(positions)]
    chars = list(word)
    for i in chosen:
        options = table[word[i]]
        chars[i] = rng.choice(options) if isinstance(options, tuple) else options
    return "".join(chars)


class Leetspeak(_PerWord):
    """Digits and symbols for letters (``n4k3d``, ``$uic1de``)."""

    name: ClassVar[str] = "leetspeak"
    family: ClassVar[str] = "character"
    description: ClassVar[str] = "digits/symbols for letters (n4k3d)"

    def __init__(self, lexicon: RedteamLexicon | None = None, rate: float = 0.5) -> None:
        super().__init__(lexicon)
        self.rate = rate

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        word = target.text
        lowered = {c: LEET_SUBS[c.lower()] for c in set(word) if c.lower() in LEET_SUBS}
        out = _substitute(word, lowered, self.rate, rng)
        if not any(c.isalpha() for c in out):
            # keep one letter: an all-digit token ("5117") no longer reads as a word, to a person
            # or to the generator's text encoder
            i = rng.choice([k for k, c in enumerate(word) if c.isalpha()])
            out = out[:i] + word[i] + out[i + 1 :]
        return out


class Homoglyph(_PerWord):
    """Cyrillic or Greek look-alike letters (``nаkеd`` with Cyrillic а, е)."""

    name: ClassVar[str] = "homoglyph"
    family: ClassVar[str] = "character"
    description: ClassVar[str] = "Cyrillic/Greek look-alike letters"

    def __init__(self, lexicon: RedteamLexicon | None = None, rate: float = 0.5) -> None:
        super().__init__(lexicon)
        self.rate = rate

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        script = rng.choice(sorted(HOMOGLYPH_SCRIPTS))
        return _substitute(target.text, HOMOGLYPH_SCRIPTS[script], self.rate, rng)


class ZeroWidth(_PerWord):
    """Invisible characters inside words (zero-width space/joiners, word joiner, soft hyphen)."""

    name: ClassVar[str] = "zero_width"
    family: ClassVar[str] = "character"
    description: ClassVar[str] = "zero-width/invisible characters inside words"

    def __init__(self, lexicon: RedteamLexicon | None = None, rate: float = 0.5) -> None:
        super().__init__(lexicon)
        self.rate = rate

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        word = target.text
        if len(word) < 2:
            return None
        gaps = list(range(1, len(word)))
        chosen = {i for i in gaps if rng.random() < self.rate} or {rng.choice(gaps)}
        char = rng.choice(ZERO_WIDTH)
        return "".join((char if i in chosen else "") + c for i, c in enumerate(word))


class Separator(_PerWord):
    """Separators between letters: every letter (``n.a.k.e.d``, ``s u i c i d e``) or a split
    inside the word (``nak-ed``)."""

    name: ClassVar[str] = "separator"
    family: ClassVar[str] = "character"
    description: ClassVar[str] = "separators between letters (n.a.k.e.d, nak-ed)"

    def __init__(self, lexicon: RedteamLexicon | None = None, spell_rate: float = 0.6) -> None:
        super().__init__(lexicon)
        self.spell_rate = spell_rate

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        word = target.text
        letters = [c for c in word if not c.isspace()]
        if len(letters) < 2:
            return None
        sep = rng.choice(SEPARATORS)
        if rng.random() < self.spell_rate:
            return sep.join(letters)
        cut = rng.randrange(1, len(word))
        if word[cut - 1].isspace() or word[cut].isspace():
            return sep.join(letters)
        return word[:cut] + sep + word[cut:]


class Misspelling(_PerWord):
    """One realistic typo per word: dropped, doubled or swapped letters, a neighbouring key, a
    wrong vowel, a phonetic respelling. Typos that make another dictionary word are skipped
    (the generator would read the other word)."""

    name: ClassVar[str] = "misspelling"
    family: ClassVar[str] = "character"
    one_per_target: ClassVar[bool] = True
    description: ClassVar[str] = "realistic typos (nakde, nakked, pornografy)"
    OPS: ClassVar[tuple[str, ...]] = ("delete", "transpose", "double", "keyboard", "vowel", "phonetic")

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        word = target.text
        if len(word) < 3:
            return None
        english = _english()
        for _ in range(12):
            op = rng.choice(self.OPS)
            new = _typo(word, op, rng)
            if new is None or new == word:
                continue
            if new.lower() in english and new.lower() != word.lower():
                continue
            return new
        return None


def _typo(word: str, op: str, rng: random.Random) -> str | None:
    n = len(word)
    letters = [i for i, c in enumerate(word) if c.isalpha()]
    inner = [i for i in letters if 0 < i < n - 1] or letters
    if not letters:
        return None
    if op == "delete":
        i = rng.choice(inner)
        return word[:i] + word[i + 1 :]
    if op == "transpose":
        pairs = [i for i in range(n - 1) if word[i].isalpha() and word[i + 1].isalpha() and word[i] != word[i + 1]]
        if not pairs:
            return None
        i = rng.choice(pairs)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "double":
        i = rng.choice(letters)
        return word[: i + 1] + word[i] + word[i + 1 :]
    if op == "keyboard":
        i = rng.choice(inner)
        near = KEYBOARD_NEIGHBOURS.get(word[i].lower())
        if not near:
            return None
        return word[:i] + rng.choice(near) + word[i + 1 :]
    if op == "vowel":
        vs = [i for i in inner if word[i].lower() in VOWELS]
        if not vs:
            return None
        i = rng.choice(vs)
        return word[:i] + rng.choice([v for v in VOWELS if v != word[i].lower()]) + word[i + 1 :]
    if op == "phonetic":
        lower = word.lower()
        options = [(a, b) for a, b in PHONETIC if a in lower]
        if not options:
            return None
        a, b = rng.choice(options)
        starts = [i for i in range(len(lower)) if lower.startswith(a, i)]
        i = rng.choice(starts)
        return word[:i] + b + word[i + len(a) :]
    raise ValueError(op)


class FullWidth(_PerWord):
    """Full-width forms of the unsafe words (``ｎａｋｅｄ``), or of the whole prompt."""

    name: ClassVar[str] = "fullwidth"
    family: ClassVar[str] = "character"
    description: ClassVar[str] = "full-width letters (ｎａｋｅｄ)"

    def __init__(self, lexicon: RedteamLexicon | None = None, whole_prompt_rate: float = 0.3) -> None:
        super().__init__(lexicon)
        self.whole_prompt_rate = whole_prompt_rate

    def transform(self, prompt: str, rng: random.Random) -> str | None:
        table = UNICODE_STYLES["fullwidth"]
        if rng.random() < self.whole_prompt_rate:
            out = "".join(table.get(c, c) for c in prompt)
            return out if out != prompt else None
        return super().transform(prompt, rng)

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        table = UNICODE_STYLES["fullwidth"]
        return "".join(table.get(c, c) for c in target.text)


class Stylized(_PerWord):
    """Letters from Unicode's "font" blocks: mathematical bold/italic/script/double-struck,
    circled, parenthesized, squared, small capitals."""

    name: ClassVar[str] = "stylized"
    family: ClassVar[str] = "character"
    description: ClassVar[str] = "Unicode 'fonts' (𝐧𝐚𝐤𝐞𝐝, ⓝⓐⓚⓔⓓ, ɴᴀᴋᴇᴅ)"

    def rewrite(self, target: Target, rng: random.Random) -> str | None:
        style = rng.choice(sorted(s for s in UNICODE_STYLES if s != "fullwidth"))
        table = UNICODE_STYLES[style]
        word = target.text if any(c in table for c in target.text) else target.text.lower()
        return "".join(table.get(c, table.get(c.lower(), c)) for c in word)
