"""One entry point for every erasure method: :func:`erase`."""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2iguard.core.errors import ConfigurationError
from t2iguard.erase.components import cast
from t2iguard.erase.config import ErasureConfig
from t2iguard.erase.record import PIPELINE_DIR, apply_weights, save_erasure
from t2iguard.erase.trainer import CHECKPOINT_DIR, GradientMethod, resolve_device, train

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents
    from t2iguard.erase.safegen import TripletSource

PAPERS: dict[str, str] = {
    "esd-x": "Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023 (ESD-x)",
    "esd-u": "Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023 (ESD-u)",
    "uce": "Gandikota et al., Unified Concept Editing in Diffusion Models, WACV 2024",
    "sdd": "Kim et al., Towards Safe Self-Distillation of Internet-Scale Text-to-Image Diffusion Models, 2023",
    "safegen": "Li et al., SafeGen: Mitigating Sexually Explicit Content Generation in T2I Models, CCS 2024",
}


@dataclass
class ErasureResult:
    """The outcome of :func:`erase`: the changed weights and the record (``finished`` is False
    when a run stopped early with ``stop_after``; it resumes from ``out_dir``)."""

    weights: dict[str, torch.Tensor]
    record: dict[str, Any]
    finished: bool = True
    out_dir: Path | None = None
    losses: list[float] = field(default_factory=list)


def make_method(
    components: DiffusionComponents, config: ErasureConfig, triplets: TripletSource | None = None
) -> GradientMethod:
    """The gradient method object for ``config.method`` (not UCE, which is closed form)."""
    method = config.method
    if method in ("esd-x", "esd-u"):
        from t2iguard.erase.esd import ESD

        return ESD(components, config)
    if method == "sdd":
        from t2iguard.erase.sdd import SDD

        return SDD(components, config)
    if method == "safegen":
        from t2iguard.erase.safegen import SafeGen

        return SafeGen(components, config, triplets)
    raise ConfigurationError(f"{method} is not a gradient method")


def _summary(losses: list[float]) -> dict[str, Any]:
    if not losses:
        return {}
    k = max(1, min(10, len(losses) // 5 or 1))
    stride = max(1, len(losses) // 200)
    return {
        "loss_first": statistics.fmean(losses[:k]),
        "loss_last": statistics.fmean(losses[-k:]),
        "losses": [round(x, 6) for x in losses[::stride]],
        "losses_stride": stride,
    }


def erase(
    components: DiffusionComponents,
    config: ErasureConfig,
    out_dir: str | Path | None = None,
    *,
    base_model: str | None = None,
    triplets: TripletSource | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    save_pipeline: bool = False,
) -> ErasureResult:
    """Erase ``config.concepts`` from ``components.unet`` (edited in place).

    With ``out_dir``, writes the changed weights and the JSON record there (and a full diffusers
    folder with ``save_pipeline``); gradient methods checkpoint there and resume.
    """
    import torch

    cfg = config.resolved()
    unet = components.unet
    base_dtype = unet.dtype
    n_total = sum(p.numel() for p in unet.parameters())
    losses: list[float] = []
    if cfg.method == "uce":
        from t2iguard.erase.uce import uce_edit

        components.to(resolve_device(cfg.device), torch.float32)
        res = uce_edit(components, cfg)
        weights = res.weights
        train_info: dict[str, Any] = {
            "steps": 0,
            "seconds": res.seconds,
            "erase_vectors": res.n_erase_vectors,
            "preserve_vectors": res.n_preserve_vectors,
        }
    else:
        method = make_method(components, cfg, triplets)
        state, finished = train(method, out_dir, resume=resume, stop_after=stop_after, progress=progress)
        losses = state.losses
        if not finished:
            partial = {"method": cfg.method, "step": state.step, "steps": cfg.steps}
            return ErasureResult({}, partial, finished=False, out_dir=Path(out_dir) if out_dir else None, losses=losses)
        weights = method.result()
        apply_weights(unet, weights)  # the in-memory model is the saved one (SDD: the EMA teacher)
        train_info = {"steps": state.step, "seconds": state.seconds, **_summary(losses)}
        train_info["device"], train_info["precision"] = method.device, method.precision
        del method
    cast(unet, dtype=base_dtype)
    weights = {k: v.to(base_dtype) for k, v in weights.items()}
    record: dict[str, Any] = {
        "method": cfg.method,
        "paper": PAPERS[cfg.method],
        "concepts": cfg.concepts,
        "preserve": cfg.preserve,
        "seed": cfg.seed,
        "base_model": base_model or components.source,
        "config": cfg.model_dump(),
        "changed_parameters": sorted(weights),
        "changed_numel": int(sum(v.numel() for v in weights.values())),
        "total_numel": int(n_total),
        "train": train_info,
    }
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        record = save_erasure(out, weights, record)
        if save_pipeline:
            components.save_pretrained(out / PIPELINE_DIR)
        if (out / CHECKPOINT_DIR).is_dir():
            shutil.rmtree(out / CHECKPOINT_DIR)
    return ErasureResult(weights, record, True, out, losses)
