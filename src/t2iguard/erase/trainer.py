"""The training loop shared by the gradient methods (ESD-x, ESD-u, SDD, SafeGen).

A method says which UNet parameters train, what the loss of one step is, and (optionally) what to
do after each optimiser step (SDD's EMA teacher). The loop does the rest, the same way for all:
optimiser, mixed precision (bf16 autocast on CUDA, fp32 master weights), gradient clipping, a
progress bar, and resumable checkpoints — trainable weights, optimiser state, the method's extra
state, the random generator's state and the losses so far, written atomically every
``save_every`` steps to ``OUT/checkpoint/``. A resumed run continues exactly where it stopped: on
CPU, 2 + 2 resumed steps give the same weights as 4 steps in one go (tested).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2iguard.core.errors import ConfigurationError
from t2iguard.erase.components import cast
from t2iguard.erase.config import ErasureConfig

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents

CHECKPOINT_DIR = "checkpoint"

_NOXATTN_EXCLUDED_PREFIXES = ("time_embedding.", "add_embedding.", "conv_norm_out.", "conv_out.")


def parameter_filter(selector: str, text_add_embedding: bool = False) -> Callable[[str], bool]:
    """Name predicate of a parameter group of a diffusers ``UNet2DConditionModel``.

    - ``xattn``: the layers that read the prompt — cross-attention (``attn2``) and, in a UNet with
      a text add-embedding (``addition_embed_type="text"``: the prompt pooled into the time
      embedding; SD 1.x/2.x have none), that add-embedding — ESD-x, SDD.
    - ``noxattn``: everything else except the time embedding and the output head — ESD-u, as in
      ESD's reference (CompVis) code, which trains all but ``attn2``, ``time_embed`` and ``out.``.
    - ``selfattn``: self-attention only (``attn1``) — SafeGen.
    - ``full``: every parameter.
    """

    def reads_text(n: str) -> bool:
        return ".attn2." in f".{n}" or (text_add_embedding and n.startswith("add_embedding."))

    if selector == "xattn":
        return reads_text
    if selector == "selfattn":
        return lambda n: ".attn1." in f".{n}"
    if selector == "noxattn":
        return lambda n: not reads_text(n) and not n.startswith(_NOXATTN_EXCLUDED_PREFIXES)
    if selector == "full":
        return lambda n: True
    raise ConfigurationError(f"unknown parameter group {selector!r}")


def has_text_add_embedding(unet: Any) -> bool:
    return unet.config.get("addition_embed_type") == "text"


def select_parameters(unet: Any, selector: str) -> list[tuple[str, torch.nn.Parameter]]:
    keep = parameter_filter(selector, has_text_add_embedding(unet))
    chosen = [(n, p) for n, p in unet.named_parameters() if keep(n)]
    if not chosen:
        raise ConfigurationError(f"the UNet has no parameters in group {selector!r}")
    return chosen


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


class GradientMethod:
    """One gradient-based erasure method on top of :func:`train`."""

    name: str = ""

    def __init__(self, components: DiffusionComponents, config: ErasureConfig) -> None:
        import torch

        self.config = config.resolved()
        self.components = components
        self.device = resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.frozen_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        components.freeze()
        cast(components.text_encoder, self.device, self.frozen_dtype)
        if components.vae is not None:
            cast(components.vae, self.device, self.frozen_dtype)
        # the trained UNet keeps fp32 master weights; autocast runs its forward in bf16
        self.unet = cast(components.unet, self.device, torch.float32)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.params = select_parameters(self.unet, self.config.parameters or "xattn")
        for _, p in self.params:
            p.requires_grad_(True)
        self.unet.train()

    # --- what a method defines -------------------------------------------------------------
    def loss(self, step: int) -> torch.Tensor:
        """The loss of training step ``step`` (random draws from ``self.generator``)."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after every optimiser step (SDD updates its EMA teacher here)."""
        return None

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors the method needs to resume (e.g. an EMA copy)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned."""
        return None

    def result(self) -> dict[str, torch.Tensor]:
        """The changed weights to save (default: the trained parameters)."""
        return {n: p.detach().clone() for n, p in self.params}

    # --- helpers shared by the methods -----------------------------------------------------
    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """N(0, I) drawn on CPU from the run's generator (same numbers on every device)."""
        import torch

        return torch.randn(shape, generator=self.generator).to(self.device)

    def randint(self, low: int, high: int) -> int:
        import torch

        return int(torch.randint(low, high, (1,), generator=self.generator).item())

    def autocast(self) -> Any:
        import torch

        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)
        return nullcontext()

    def frozen_copy(self, unet: Any) -> Any:
        """A frozen copy of ``unet`` in the frozen dtype (the teacher / original model)."""
        import copy

        twin = cast(copy.deepcopy(unet), self.device, self.frozen_dtype)
        twin.requires_grad_(False)
        twin.eval()
        return twin


def _optimizer(method: GradientMethod) -> torch.optim.Optimizer:
    import torch

    cfg = method.config
    params = [p for _, p in method.params]
    assert cfg.lr is not None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    raise ConfigurationError(f"method {cfg.method} has no optimiser ({cfg.optimizer})")


def _save_checkpoint(ckpt: Path, method: GradientMethod, opt: torch.optim.Optimizer, state: TrainState) -> None:
    import torch
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().contiguous().cpu() for n, p in method.params}, str(tmp / "params.safetensors"))
    extra = {k: v.detach().contiguous().cpu() for k, v in method.extra_state().items()}
    if extra:
        save_file(extra, str(tmp / "extra.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "generator": method.generator.get_state()}, tmp / "state.pt")
    meta = {
        "step": state.step,
        "losses": state.losses,
        "seconds": state.seconds,
        "config": method.config.fingerprint(),
    }
    (tmp / "progress.json").write_text(json.dumps(meta))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)


def _load_checkpoint(ckpt: Path, method: GradientMethod, opt: torch.optim.Optimizer) -> TrainState:
    import torch
    from safetensors.torch import load_file

    meta = json.loads((ckpt / "progress.json").read_text())
    if meta["config"] != method.config.fingerprint():
        raise ConfigurationError(
            f"{ckpt} was written with a different configuration; delete it or use the same settings to resume"
        )
    saved = load_file(str(ckpt / "params.safetensors"))
    with torch.no_grad():
        for n, p in method.params:
            p.copy_(saved[n].to(p.device, p.dtype))
    if (ckpt / "extra.safetensors").is_file():
        method.load_extra_state(load_file(str(ckpt / "extra.safetensors")))
    blob = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    opt.load_state_dict(blob["optimizer"])
    method.generator.set_state(blob["generator"])
    return TrainState(step=int(meta["step"]), losses=list(meta["losses"]), seconds=float(meta["seconds"]))


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


def train(
    method: GradientMethod,
    out_dir: str | Path | None = None,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
) -> tuple[TrainState, bool]:
    """Run ``method`` for ``config.steps`` steps; returns the state and whether it finished.

    With ``out_dir``, a checkpoint is written every ``save_every`` steps (and when stopping early
    after ``stop_after`` steps of this call), and an existing one is resumed when ``resume``.
    """
    import torch

    cfg = method.config
    total = int(cfg.steps or 0)
    opt = _optimizer(method)
    ckpt = Path(out_dir) / CHECKPOINT_DIR if out_dir is not None else None
    state = TrainState()
    if ckpt is not None and ckpt.is_dir():
        if not resume:
            shutil.rmtree(ckpt)
        else:
            state = _load_checkpoint(ckpt, method, opt)
    params = [p for _, p in method.params]
    done_now = 0
    bar = _progress(total, state.step, f"{cfg.method} {', '.join(cfg.concepts)}"[:60], progress)
    try:
        while state.step < total:
            if stop_after is not None and done_now >= stop_after:
                break
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with method.autocast():
                loss = method.loss(state.step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.method}: the loss is {loss.item()} at step {state.step}")
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            method.after_step(state.step)
            state.step += 1
            done_now += 1
            state.losses.append(float(loss.detach().float().item()))
            state.seconds += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{state.losses[-1]:.4g}")
            if ckpt is not None and state.step % cfg.save_every == 0 and state.step < total:
                _save_checkpoint(ckpt, method, opt, state)
    finally:
        bar.close()
    finished = state.step >= total
    if ckpt is not None and not finished:
        _save_checkpoint(ckpt, method, opt, state)
    return state, finished
