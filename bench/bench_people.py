"""Named-people benchmark: PERSON detection recall, public/private accuracy and latency.

    python bench/bench_people.py [--out bench/results]

Each name of ``bench/data/people_prompts.py`` (50 public figures — with misspellings, case changes
and 4 people outside the gazetteer — and 50 invented private names) is put into two of four
templates (200 prompts). A prompt counts as *detected* when the analysis has a person span that
overlaps the name, and as *correctly classified* when that span is public (matched to the expected
figure) for a public name and private for a private one. Latency is the wall time of one
uncached analysis per prompt (spaCy NER + Presidio recognizers + gazetteer), after a warm-up.

Second part, the written prompts of ``bench/data/people_captions.yaml`` (1,939, see its header),
``people_captions_2.yaml`` (1,281), ``people_captions_3.yaml`` (981) and ``people_captions_4.yaml`` to
``_8.yaml`` (660, 590, 620, 630, 620), each written later as a fresh held-out set for the next change of the
people rules (see their headers; F4 to F7 are art prompts that credit creators, pictured private people,
and private people named after "by" as the ones who act, reported per group; F8 is everyday prompts that
name a brand, a food, a breed or a place holding a person's name, with no person or beside a pictured
private person; in F6 to F8 the writers marked the pictured names, and the report counts whether that
name was found): the default
policy's prompt checks on captions that name nobody (how many the people checks flag: anonymized or
blocked as naming someone — false positives), on prompts naming invented private people (how many get
a ``private_individual`` flag) and on prompts naming famous people (how many are recognised as public
figures), on the DEV and HELD halves of the first file and on the whole later files (``F2`` to ``F8``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from data.people_prompts import PRIVATE, PUBLIC, TEMPLATES
from t2iguard.core.decision import Decision
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.stage import ModelCache
from t2iguard.core.types import Action, Category
from t2iguard.prompt.people import get_people_analyzer

CAPTIONS = Path(__file__).parent / "data" / "people_captions.yaml"
# the other files of written prompts and their labels in the report
CAPTIONS_MORE = {f"F{i}": CAPTIONS.with_name(f"people_captions_{i}.yaml") for i in range(2, 9)}
PEOPLE_STAGES = frozenset({"public_figure", "anonymize"})


def prompts() -> list[tuple[str, str, bool, str | None]]:
    out = []
    for i, (name, canonical) in enumerate(PUBLIC):
        for t in (TEMPLATES[i % 4], TEMPLATES[(i + 1) % 4]):
            out.append((t.format(name), name, True, canonical))
    for i, name in enumerate(PRIVATE):
        for t in (TEMPLATES[(i + 2) % 4], TEMPLATES[(i + 3) % 4]):
            out.append((t.format(name), name, False, None))
    return out


def half(text: str) -> str:
    """DEV or HELD: the file's split (the parity of the last hex digit of the prompt's SHA-1)."""
    return "DEV" if int(hashlib.sha1(text.encode()).hexdigest()[-1], 16) % 2 == 0 else "HELD"


def written_captions(models: ModelCache) -> dict[str, dict[str, int]]:
    """The default policy's people checks on the written captions: counts per kind and half."""
    items = []
    for label, path in {"": CAPTIONS, **CAPTIONS_MORE}.items():
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        # a set's `group` (credit, depicted, ...) refines its kind in the report
        # ... and its `pictured` lists the names of the people a prompt pictures (files 6 to 8)
        items += [
            (s["people"] + (f" ({s['group']})" if "group" in s else ""), str(p), label, names)
            for s in spec["sets"]
            for p, names in zip(s["prompts"], s.get("pictured") or [None] * len(s["prompts"]), strict=True)
        ]
    stack = SafetyStack(models=models)
    counts: dict[str, dict[str, int]] = {}
    for start in range(0, len(items), 256):
        chunk = items[start : start + 256]
        for (kind, text, label, names), d in zip(chunk, stack.check_prompts([t for _, t, _, _ in chunk]), strict=True):
            part = label or half(text)
            c = counts.setdefault(f"{kind}/{part}", {"prompts": 0, "people_flag": 0, "private": 0, "public": 0})
            c["prompts"] += 1
            if names:
                c.setdefault("pictured", 0)
                c.setdefault("pictured_found", 0)
                c["pictured"] += 1
            if not isinstance(d, Decision):
                c["people_flag"] += 1  # rejected input: counted against the recogniser
                continue
            c["people_flag"] += any(e.stage in PEOPLE_STAGES for e in d.decided_by)
            pf = next((r for r in d.stages if r.stage == "public_figure"), None)
            c["private"] += pf is not None and any(
                e.category == Category.PRIVATE_INDIVIDUAL and e.action > Action.ALLOW for e in pf.trace
            )
            analysis = pf.artifacts.get("people") if pf is not None else None
            c["public"] += analysis is not None and bool(analysis.public)
            if names and analysis is not None:
                # the pictured name itself found as a private person (not some other span)
                c["pictured_found"] += any(
                    n.lower() in m.text.lower() or m.text.lower() in n.lower() for m in analysis.private for n in names
                )
    order = ["DEV", "HELD", *CAPTIONS_MORE]
    return dict(sorted(counts.items(), key=lambda kv: (kv[0].split("/")[0], order.index(kv[0].split("/")[1]))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    models = ModelCache()
    analyzer = get_people_analyzer(models)
    items = prompts()
    for p, *_ in items[:20]:
        analyzer.analyze(p)
    detected = correct = 0
    rows = []
    lat: list[float] = []
    for prompt, name, public, canonical in items:
        times = []
        for _ in range(args.repeats):
            analyzer._cache.clear()
            t0 = time.perf_counter()
            a = analyzer.analyze(prompt)
            times.append((time.perf_counter() - t0) * 1000)
        lat.append(float(np.median(times)))
        start = prompt.index(name)
        end = start + len(name)
        spans = [m for m in a.people if m.start < end and start < m.end]
        hit = bool(spans)
        detected += hit
        if public:
            ok = any(m.public and m.match is not None and m.match.figure.name == canonical for m in spans)
        else:
            ok = hit and all(m.private for m in spans)
        correct += ok
        rows.append(
            {
                "prompt": prompt,
                "public": public,
                "detected": hit,
                "correct": ok,
                "found": [m.to_dict() for m in a.people],
            }
        )
    n = len(items)
    res: dict[str, Any] = {
        "prompts": n,
        "public": sum(1 for r in rows if r["public"]),
        "private": sum(1 for r in rows if not r["public"]),
        "person_recall": detected / n,
        "public_private_accuracy": correct / n,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_max": float(np.max(lat)),
        "machine": f"{platform.processor() or platform.machine()}, shared CPU (2 cores, other jobs running)",
        "errors": [r for r in rows if not r["correct"]],
        "written_captions": written_captions(models),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "people.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    md = [
        "| prompts | PERSON recall | public/private accuracy | latency p50 | latency p95 |",
        "|---|---|---|---|---|",
        f"| {n} ({res['public']} public, {res['private']} private) | {res['person_recall']:.1%} | "
        f"{res['public_private_accuracy']:.1%} | {res['latency_ms_p50']:.1f} ms | {res['latency_ms_p95']:.1f} ms |",
        "",
        "Misclassified: " + "; ".join(r["prompt"] for r in res["errors"]) if res["errors"] else "Misclassified: none",
        "",
        "Written prompts (`bench/data/people_captions.yaml`, DEV and HELD halves; `people_captions_2.yaml`,"
        " F2; `people_captions_3.yaml` to `_8.yaml`, F3 to F8), the default policy's prompt checks. In F6 to F8"
        " the writers marked each pictured private person's name: the last column counts prompts whose marked"
        " name itself was found as a private person.",
        "",
        "| prompts | half | n | flagged by the people checks | private_individual flag | public figure recognised"
        " | pictured name found |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, c in res["written_captions"].items():
        kind, part = key.split("/")
        n_k = c["prompts"]
        md.append(
            f"| {kind} | {part} | {n_k} | {c['people_flag']} ({c['people_flag'] / n_k:.1%}) | "
            f"{c['private']} ({c['private'] / n_k:.1%}) | {c['public']} ({c['public'] / n_k:.1%}) | "
            + (f"{c['pictured_found']} of {c['pictured']} |" if c.get("pictured") else "– |")
        )
    (out / "people.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
