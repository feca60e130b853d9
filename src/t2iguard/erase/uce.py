"""UCE: Unified Concept Editing (Gandikota, Orgad, Belinkov, Materzyńska & Bau, *Unified Concept
Editing in Diffusion Models*, WACV 2024).

A closed-form edit of the cross-attention key and value projections (``attn2.to_k``,
``attn2.to_v``; plus the key/value of a text add-embedding's attention pooling where the UNet has
one, see :func:`text_projections`), for many concepts at once. For each projection W (old value W₀), with c_i the
text-embedding vectors of the concepts to erase, c_i* the guide's vectors at the same positions
(``guide=""`` maps the concept to the unconditional embedding), and c_j those of the concepts to
preserve, UCE solves

    min_W  s_e Σ_i ‖W c_i − W₀ c_i*‖² + s_p Σ_j ‖W c_j − W₀ c_j‖² + λ ‖W − W₀‖²_F

whose minimiser is (the paper's Eq. 7, with the λ term of the reference code):

    W = (s_e Σ_i W₀ c_i* c_iᵀ + s_p Σ_j W₀ c_j c_jᵀ + λ W₀) (s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ + λ I)⁻¹

The vectors are the text encoder's outputs at the concept's last token and, by default
(``uce_tokens="tail"``, as in the paper's code), every position after it (end and padding tokens,
which a causal text encoder fills with the whole prompt); ``"last"`` uses that token alone, as the
authors' later code does. The erase and guide spans are right-aligned on the guide's length.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from t2iguard.core.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents
    from t2iguard.erase.config import ErasureConfig


@dataclass
class UCEResult:
    weights: dict[str, torch.Tensor]
    seconds: float
    n_erase_vectors: int
    n_preserve_vectors: int


@dataclass
class TextProjection:
    """A linear map of the UNet that reads the text encoder's states: its name, the ``Linear``,
    and the module applied to the states before it (``None`` for cross-attention)."""

    name: str
    linear: Any
    pre: Any = None


def text_projections(unet: Any, keys: bool = True) -> list[TextProjection]:
    """Every value (and key) projection that reads the prompt: the cross-attention ``to_v``/``to_k``
    of each ``attn2`` and, in a UNet with a text add-embedding (``addition_embed_type="text"``,
    whose attention pooling feeds the prompt into the time embedding), that pooling's
    ``v_proj``/``k_proj`` (after its LayerNorm). UCE edits them all: leaving the second path alone
    would leave the concept a way around the edit."""
    out = []
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_v") or (keys and name.endswith("attn2.to_k")):
            out.append(TextProjection(name, module))
    if not out:
        raise ConfigurationError("the UNet has no cross-attention projections (attn2.to_k / attn2.to_v)")
    add = getattr(unet, "add_embedding", None)
    if unet.config.get("addition_embed_type") == "text" and add is not None and hasattr(add, "pool"):
        for proj in ("v_proj", "k_proj") if keys else ("v_proj",):
            out.append(TextProjection(f"add_embedding.pool.{proj}", getattr(add.pool, proj), add.norm1))
    return out


def _last_token(mask_row: torch.Tensor) -> int:
    # index of the last non-special token: [BOS, w1 .. wn, EOS, pad...] -> n (the BOS for "")
    return max(int(mask_row.sum().item()) - 2, 0)


def token_vectors(
    components: DiffusionComponents, prompts: Sequence[str], guides: Sequence[str], mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (prompt vectors, guide vectors) at aligned positions, float64."""
    import torch

    if len(prompts) != len(guides):
        raise ValueError("one guide per prompt")
    if not prompts:
        empty = torch.zeros((0, int(components.text_encoder.config.hidden_size)), dtype=torch.float64)
        return empty, empty
    emb_p = components.encode_prompts(list(prompts)).double().cpu()
    emb_g = components.encode_prompts(list(guides)).double().cpu()
    mask_p = components.tokenize(list(prompts))["attention_mask"]
    mask_g = components.tokenize(list(guides))["attention_mask"]
    seq = emb_p.shape[1]
    rows_p, rows_g = [], []
    for k in range(len(prompts)):
        i_p, i_g = _last_token(mask_p[k]), _last_token(mask_g[k])
        if mode == "last":
            rows_p.append(emb_p[k, i_p : i_p + 1])
            rows_g.append(emb_g[k, i_g : i_g + 1])
        elif mode == "tail":
            far = max(i_p, i_g)
            n = seq - far
            rows_p.append(emb_p[k, i_p : i_p + n])
            rows_g.append(emb_g[k, i_g : i_g + n])
        else:
            raise ConfigurationError(f"unknown UCE token mode {mode!r}")
    return torch.cat(rows_p), torch.cat(rows_g)


def closed_form(
    w_old: torch.Tensor,
    erase: torch.Tensor,
    guide: torch.Tensor,
    preserve: torch.Tensor,
    *,
    lamb: float,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """UCE's minimiser for one projection ``w_old`` (out × in); vector sets are rows (n × in).

    A projection with a bias b is edited as the map [W b] of the vector [c 1] (bias included)."""
    import torch

    w0 = w_old.double()
    d = w0.shape[1]
    v_star = guide.double() @ w0.T  # targets W0 c*, as rows (n × out)
    p = preserve.double()
    e = erase.double()
    lhs = lamb * w0 + erase_scale * (v_star.T @ e) + preserve_scale * (w0 @ (p.T @ p))
    rhs = (
        lamb * torch.eye(d, dtype=torch.float64, device=w0.device)
        + erase_scale * (e.T @ e)
        + preserve_scale * (p.T @ p)
    )
    # rhs is symmetric positive definite: W = lhs rhs^-1  <=>  rhs W^T = lhs^T
    return torch.linalg.solve(rhs, lhs.T).T


def with_ones(vectors: torch.Tensor) -> torch.Tensor:
    """Rows [c 1]: the input of a projection with a bias, as a bias-free map [W b]."""
    import torch

    return torch.cat([vectors, torch.ones((vectors.shape[0], 1), dtype=vectors.dtype, device=vectors.device)], 1)


def objective(
    w: torch.Tensor,
    w_old: torch.Tensor,
    erase: torch.Tensor,
    guide: torch.Tensor,
    preserve: torch.Tensor,
    *,
    lamb: float,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """UCE's least-squares objective (what :func:`closed_form` minimises)."""
    v_star = guide @ w_old.T
    return (
        erase_scale * ((erase @ w.T - v_star) ** 2).sum()
        + preserve_scale * ((preserve @ w.T - preserve @ w_old.T) ** 2).sum()
        + lamb * ((w - w_old) ** 2).sum()
    )


def uce_edit(components: DiffusionComponents, config: ErasureConfig) -> UCEResult:
    """Edit ``components.unet`` in place; returns the new weights of the edited projections."""
    import torch

    cfg = config.resolved()
    t0 = time.perf_counter()
    with torch.no_grad():
        erase, guide = token_vectors(components, cfg.concepts, [cfg.guide] * len(cfg.concepts), cfg.uce_tokens)
        preserve, _ = token_vectors(components, cfg.preserve, cfg.preserve, cfg.uce_tokens)
        weights: dict[str, torch.Tensor] = {}
        for proj in text_projections(components.unet, keys=cfg.uce_edit_keys):
            lin = proj.linear
            dev = lin.weight.device
            sets = [erase.to(dev), guide.to(dev), preserve.to(dev)]
            if proj.pre is not None:  # e.g. the add-embedding's LayerNorm before its pooling
                pre = proj.pre
                sets = [pre(x.to(pre.weight.dtype)).double() if len(x) else x for x in sets]
            w_old = lin.weight.double()
            if lin.bias is not None:
                sets = [with_ones(x) for x in sets]
                w_old = torch.cat([w_old, lin.bias.double()[:, None]], 1)
            w_new = closed_form(
                w_old,
                *sets,
                lamb=cfg.uce_lambda,
                erase_scale=cfg.uce_erase_scale,
                preserve_scale=cfg.uce_preserve_scale,
            )
            if lin.bias is not None:
                lin.bias.copy_(w_new[:, -1].to(lin.bias.dtype))
                weights[f"{proj.name}.bias"] = lin.bias.detach().clone()
                w_new = w_new[:, :-1]
            lin.weight.copy_(w_new.to(lin.weight.dtype))
            weights[f"{proj.name}.weight"] = lin.weight.detach().clone()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return UCEResult(weights, time.perf_counter() - t0, int(erase.shape[0]), int(preserve.shape[0]))
