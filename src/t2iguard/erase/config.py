"""One configuration for every erasure method.

Fields left ``None`` take the method's published default (:data:`METHOD_DEFAULTS`, from each
paper's reference implementation); :meth:`ErasureConfig.resolved` fills them in, and the resolved
configuration is what the JSON record stores.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from t2iguard.core.errors import ConfigurationError

Method = Literal["esd-x", "esd-u", "uce", "sdd", "safegen"]
METHODS: tuple[str, ...] = ("esd-x", "esd-u", "uce", "sdd", "safegen")

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # ESD (Gandikota et al., ICCV 2023), CompVis reference: 1000 iterations, batch 1, Adam lr 1e-5,
    # negative guidance eta = 1, training states drawn from 50 DDIM steps at guidance 3.
    "esd-x": {"steps": 1000, "lr": 1e-5, "optimizer": "adam", "weight_decay": 0.0, "max_grad_norm": None},
    "esd-u": {"steps": 1000, "lr": 1e-5, "optimizer": "adam", "weight_decay": 0.0, "max_grad_norm": None},
    # SDD (Kim et al., 2023), reference train_sdd.py: 1500 steps, AdamW lr 1e-5, weight decay 1e-4,
    # gradient clipping 1.0, EMA teacher decay 0.999, cross-attention fine-tuning.
    "sdd": {"steps": 1500, "lr": 1e-5, "optimizer": "adamw", "weight_decay": 1e-4, "max_grad_norm": 1.0},
    # SafeGen (Li et al., CCS 2024), reference run_adjust_SD.sh: 1000 steps, AdamW lr 1e-5,
    # weight decay 1e-2, gradient clipping 1.0, loss weights 0.1 (mosaic) / 0.9 (preserve).
    "safegen": {"steps": 1000, "lr": 1e-5, "optimizer": "adamw", "weight_decay": 1e-2, "max_grad_norm": 1.0},
    # UCE is closed form: no optimiser.
    "uce": {"steps": 0, "lr": None, "optimizer": "none", "weight_decay": 0.0, "max_grad_norm": None},
}


class ErasureConfig(BaseModel):
    """What to erase, how, and with which hyper-parameters."""

    model_config = ConfigDict(extra="forbid")

    method: Method
    concepts: list[str] = Field(min_length=1, description="prompts naming the concepts to erase")
    preserve: list[str] = Field(default_factory=list, description="prompts of concepts to keep (UCE, SafeGen)")
    guide: str = Field("", description="UCE: concept the erased ones are mapped to ('' = unconditional)")
    seed: int = 0

    # shared by the gradient methods (None = the method's default)
    steps: int | None = Field(None, ge=0)
    lr: float | None = Field(None, gt=0)
    optimizer: Literal["adam", "adamw", "none"] | None = None
    weight_decay: float | None = Field(None, ge=0)
    max_grad_norm: float | None = Field(None, gt=0)
    batch_size: int = Field(1, ge=1)
    parameters: Literal["xattn", "noxattn", "selfattn", "full"] | None = Field(
        None, description="which UNet parameters train (default: the method's own)"
    )

    # ESD and SDD draw training states x_t from the model: DDIM chain length and guidance scale
    sample_steps: int = Field(50, ge=1)
    sample_guidance: float = Field(3.0, ge=0)
    # ESD
    negative_guidance: float = Field(1.0, description="ESD's eta: target = e(x,0) - eta (e(x,c) - e(x,0))")
    # SDD
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # UCE
    uce_lambda: float = Field(0.5, gt=0, description="weight of ||W - W_old||^2 (keeps the solve well posed)")
    uce_erase_scale: float = Field(1.0, ge=0)
    uce_preserve_scale: float = Field(1.0, ge=0)
    uce_tokens: Literal["tail", "last"] = Field(
        "tail", description="tail: the concept's last token through the end of the sequence (paper); last: that token"
    )
    uce_edit_keys: bool = Field(True, description="edit to_k as well as to_v")
    # SafeGen
    mosaic_weight: float = Field(0.1, ge=0)
    preserve_weight: float = Field(0.9, ge=0)
    mosaic_block: int = Field(8, ge=2, description="side of a mosaic cell, in pixels")

    # runtime
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    save_every: int = Field(50, ge=1, description="checkpoint every N steps (resumable)")

    @field_validator("concepts", "preserve")
    @classmethod
    def _strip(cls, v: list[str]) -> list[str]:
        out = [c.strip() for c in v]
        if any(not c for c in out):
            raise ValueError("concept prompts must not be empty")
        return out

    @model_validator(mode="after")
    def _check(self) -> ErasureConfig:
        overlap = set(self.concepts) & set(self.preserve)
        if overlap:
            raise ValueError(f"a concept cannot be both erased and preserved: {sorted(overlap)}")
        return self

    def resolved(self) -> ErasureConfig:
        """A copy with every ``None`` replaced by the method's default."""
        defaults = dict(METHOD_DEFAULTS[self.method])
        defaults["parameters"] = default_parameters(self.method)
        data = self.model_dump()
        for key, value in defaults.items():
            if data.get(key) is None:
                data[key] = value
        if self.method == "uce":  # closed form: no optimiser, no steps
            data.update(steps=0, lr=None, optimizer="none")
        return ErasureConfig.model_validate(data)

    def fingerprint(self) -> dict[str, Any]:
        """The fields that determine the result (a resumed run must match them)."""
        data = self.resolved().model_dump()
        for key in ("device", "save_every"):
            data.pop(key)
        return data


def default_parameters(method: str) -> Literal["xattn", "noxattn", "selfattn", "full"]:
    """ESD-x, SDD and UCE touch cross-attention; ESD-u everything else; SafeGen self-attention."""
    if method == "esd-u":
        return "noxattn"
    if method == "safegen":
        return "selfattn"
    return "xattn"


def load_config(path: str, **overrides: Any) -> ErasureConfig:
    """An :class:`ErasureConfig` from a YAML or JSON file, with ``overrides`` applied."""
    import json
    from pathlib import Path

    import yaml
    from pydantic import ValidationError

    p = Path(path)
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{p}: cannot read the erasure config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{p}: an erasure config is a mapping of fields")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ErasureConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"{p}: invalid erasure config:\n{exc}") from exc
