"""What an erasure leaves behind: the changed weights only, and a JSON record.

An erasure output folder holds

- ``unet_erased.safetensors``: the UNet parameters the method changed (names as in the diffusers
  ``UNet2DConditionModel``), nothing else — a few MB for ESD-x/UCE/SDD/SafeGen on SD 1.5;
- ``erasure.json``: method, concepts, preserved concepts, the resolved hyper-parameters, seed,
  base model, changed parameter names and counts, training time and losses, versions, the
  weights' sha256, and ``metrics`` (filled in by ``t2iguard eval-erasure --write``);
- optionally ``pipeline/``: a complete diffusers folder of the erased model (``--save-pipeline``);
- ``checkpoint/`` while a run is in progress (removed when it finishes).

:func:`load_erased` rebuilds the erased model from the base model named in the record.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2iguard.core.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents

RECORD_FILE = "erasure.json"
WEIGHTS_FILE = "unet_erased.safetensors"
PIPELINE_DIR = "pipeline"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    import diffusers
    import torch

    from t2iguard import __version__

    out = {"t2iguard": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__}
    out["python"] = platform.python_version()
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers comes with the extra
        pass
    return out


def save_erasure(out_dir: str | Path, weights: dict[str, torch.Tensor], record: dict[str, Any]) -> dict[str, Any]:
    """Write the changed weights and the record (adding the weights' sha256, the date and the
    library versions); returns the record as written."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / WEIGHTS_FILE
    save_file({k: v.detach().contiguous().cpu() for k, v in sorted(weights.items())}, str(weights_path))
    full = {
        "format_version": FORMAT_VERSION,
        **record,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _sha256(weights_path),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    full.setdefault("metrics", {})
    write_record(out, full)
    return full


def write_record(out_dir: str | Path, record: dict[str, Any]) -> None:
    path = Path(out_dir) / RECORD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_record(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"{Path(out_dir)}: not an erasure output folder (no {RECORD_FILE})") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: cannot read the erasure record: {exc}") from exc
    if not isinstance(data, dict) or "method" not in data:
        raise ConfigurationError(f"{path}: not an erasure record")
    return data


def load_weights(out_dir: str | Path, *, verify: bool = True) -> dict[str, torch.Tensor]:
    """The changed weights of an erasure output folder (checked against the record's sha256)."""
    from safetensors.torch import load_file

    out = Path(out_dir)
    record = read_record(out)
    path = out / str(record.get("weights_file", WEIGHTS_FILE))
    if not path.is_file():
        raise ConfigurationError(f"{out}: the erased weights file {path.name} is missing")
    if verify and record.get("weights_sha256") and _sha256(path) != record["weights_sha256"]:
        raise ConfigurationError(f"{path}: sha256 does not match the record (file changed or corrupt)")
    return load_file(str(path))


def apply_weights(unet: Any, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` into ``unet`` (every name must exist with the same shape)."""
    import torch

    params = dict(unet.named_parameters())
    bad = [n for n in weights if n not in params]
    if bad:
        raise ConfigurationError(f"the erased weights do not fit this UNet: unknown parameters {bad[:3]}")
    for n, w in weights.items():
        if tuple(params[n].shape) != tuple(w.shape):
            raise ConfigurationError(
                f"{n}: erased weight has shape {tuple(w.shape)}, the UNet {tuple(params[n].shape)}"
            )
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))


def apply_erasure(unet: Any, out_dir: str | Path) -> dict[str, Any]:
    """Apply an erasure output folder's weights to ``unet``; returns its record."""
    apply_weights(unet, load_weights(out_dir))
    return read_record(out_dir)


def load_erased(out_dir: str | Path, base: str | Path | None = None) -> DiffusionComponents:
    """The erased model: the record's base model (or ``base``) with the changed weights applied."""
    from t2iguard.erase.components import load_components

    out = Path(out_dir)
    record = read_record(out)
    if (out / PIPELINE_DIR / "model_index.json").is_file() and base is None:
        comps = load_components(out / PIPELINE_DIR)
    else:
        base_spec = base or record.get("base_model")
        if not base_spec:
            raise ConfigurationError(f"{out}: the record names no base model; pass one")
        comps = load_components(base_spec)
        apply_weights(comps.unet, load_weights(out))
    comps.source = str(out)
    comps.extras["erasure"] = record
    return comps
