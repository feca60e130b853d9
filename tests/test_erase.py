"""Concept erasure on tiny random-weight SD-architecture models (diffusers UNet + CLIP text
encoder built from configs): each method touches exactly the parameters it should, lowers its
loss, saves only what changed, resumes exactly; UCE's closed form is checked against a numeric
minimisation of its objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from t2iguard.core.errors import ConfigurationError
from t2iguard.erase import ErasureConfig, erase, load_components
from t2iguard.erase.api import make_method
from t2iguard.erase.components import DiffusionComponents
from t2iguard.erase.random_models import random_components
from t2iguard.erase.record import WEIGHTS_FILE, apply_weights, read_record
from t2iguard.erase.safegen import TensorTriplets, mosaic
from t2iguard.erase.sampling import generate
from t2iguard.erase.trainer import CHECKPOINT_DIR, parameter_filter, train
from t2iguard.erase.uce import closed_form, objective, text_projections, token_vectors, uce_edit, with_ones

GROUP = {"esd-x": "xattn", "esd-u": "noxattn", "sdd": "xattn", "safegen": "selfattn"}
LR = {"esd-x": 1e-3, "esd-u": 1e-4, "sdd": 1e-3, "safegen": 1e-3}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    # tiny models: one thread is fastest, and avoids oversubscribing a shared CI machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def snapshot(unet: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in unet.named_parameters()}


def changed(unet: Any, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in unet.named_parameters() if not torch.equal(p.detach(), before[n])}


def triplets(seed: int = 1, n: int = 6, size: int = 16) -> TensorTriplets:
    g = torch.Generator().manual_seed(seed)
    unsafe = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    censored = mosaic(unsafe, [[(4, 4, 12, 12)]] * n, block=4)
    benign = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return TensorTriplets(unsafe, censored, benign)


def components_for(method: str) -> DiffusionComponents:
    # SafeGen encodes images: give it a VAE; the others work on latents directly
    return random_components(vae=method == "safegen")


def config(method: str, **kw: Any) -> ErasureConfig:
    base: dict[str, Any] = {
        "method": method,
        "concepts": ["a knife"],
        "steps": 2,
        "lr": LR.get(method),
        "sample_steps": 4,
        "ema_decay": 0.5,
    }
    return ErasureConfig(**{**base, **kw})


def test_parameter_groups_partition_the_unet() -> None:
    unet = random_components().unet
    names = [n for n, _ in unet.named_parameters()]
    x = {n for n in names if parameter_filter("xattn")(n)}
    u = {n for n in names if parameter_filter("noxattn")(n)}
    s = {n for n in names if parameter_filter("selfattn")(n)}
    assert x and u and s
    assert all(".attn2." in n for n in x) and all(".attn1." in n for n in s)
    assert not x & u and s <= u
    rest = set(names) - x - u
    assert rest and all(n.startswith(("time_embedding.", "conv_out.", "conv_norm_out.")) for n in rest)
    assert {n for n in names if parameter_filter("full")(n)} == set(names)


TEXT_ADD = {"addition_embed_type": "text", "addition_embed_type_num_heads": 4}


def test_a_text_add_embedding_counts_as_reading_the_prompt() -> None:
    # a UNet that also pools the prompt into its time embedding (the bundled tiny model does)
    comps = random_components(unet_config=TEXT_ADD)
    m = make_method(comps, config("esd-x"))
    names = {n for n, _ in m.params}
    assert any(n.startswith("add_embedding.") for n in names) and all(
        ".attn2." in n or n.startswith("add_embedding.") for n in names
    )
    u = make_method(random_components(unet_config=TEXT_ADD), config("esd-u"))
    assert not any(n.startswith("add_embedding.") or ".attn2." in n for n, _ in u.params)


@pytest.mark.parametrize("method", ["esd-x", "esd-u", "sdd", "safegen"])
def test_gradient_method_trains_exactly_its_parameters_and_lowers_its_loss(method: str) -> None:
    comps = components_for(method)
    before = snapshot(comps.unet)
    m = make_method(comps, config(method, steps=8, sample_steps=3), triplets() if method == "safegen" else None)
    draws = [torch.Generator().manual_seed(1000 + i).get_state() for i in range(4)]

    def loss_on_fixed_draws() -> float:
        total = 0.0
        with torch.no_grad():
            for state in draws:
                m.generator.set_state(state)
                total += float(m.loss(0))
        return total / len(draws)

    l0 = loss_on_fixed_draws()
    m.generator.manual_seed(0)
    state, finished = train(m, None, progress=False)
    l1 = loss_on_fixed_draws()
    assert finished and state.step == 8 and len(state.losses) == 8
    assert l1 < l0, (l0, l1)
    keep = parameter_filter(GROUP[method])
    expected = {n for n in before if keep(n)}
    assert changed(comps.unet, before) == expected


@pytest.mark.parametrize("method", ["esd-x", "esd-u", "sdd", "safegen", "uce"])
def test_erase_saves_only_the_changed_weights(method: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    comps = components_for(method)
    before = snapshot(comps.unet)
    cfg = config(method, concepts=["a knife", "a gun"], preserve=["a cat"])
    res = erase(comps, cfg, tmp_path, triplets=triplets() if method == "safegen" else None, progress=False)
    saved = load_file(str(tmp_path / WEIGHTS_FILE))
    if method == "uce":
        expected = {n for n in before if ".attn2.to_k." in n or ".attn2.to_v." in n}
    else:
        expected = {n for n in before if parameter_filter(GROUP[method])(n)}
    assert set(saved) == expected == set(res.weights)
    assert changed(comps.unet, before) == expected
    for n, p in comps.unet.named_parameters():  # the in-memory model is the saved one
        assert torch.equal(p.detach(), saved[n] if n in saved else before[n])
    rec = read_record(tmp_path)
    assert rec["method"] == method and rec["concepts"] == ["a knife", "a gun"] and rec["preserve"] == ["a cat"]
    assert rec["seed"] == 0 and rec["changed_parameters"] == sorted(expected)
    assert rec["changed_numel"] == sum(v.numel() for v in saved.values()) < rec["total_numel"]
    assert rec["config"]["steps"] == (0 if method == "uce" else 2) and rec["paper"]
    assert rec["train"]["seconds"] > 0 and len(rec["weights_sha256"]) == 64
    assert not (tmp_path / CHECKPOINT_DIR).exists()


@pytest.mark.parametrize("method", ["esd-x", "sdd"])
def test_an_interrupted_run_resumes_to_the_same_weights(method: str, tmp_path: Path) -> None:
    cfg = config(method, steps=4, save_every=2)
    straight = erase(random_components(), cfg, tmp_path / "a", progress=False)
    part = erase(random_components(), cfg, tmp_path / "b", stop_after=3, progress=False)
    assert not part.finished and part.record["step"] == 3
    assert (tmp_path / "b" / CHECKPOINT_DIR / "params.safetensors").is_file()
    resumed = erase(random_components(), cfg, tmp_path / "b", progress=False)
    assert resumed.finished and resumed.losses == straight.losses and len(resumed.losses) == 4
    for n, w in straight.weights.items():
        assert torch.equal(w, resumed.weights[n]), n


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    erase(random_components(), config("esd-x", steps=4), tmp_path, stop_after=1, progress=False)
    with pytest.raises(ConfigurationError, match="different configuration"):
        erase(random_components(), config("esd-x", steps=4, lr=5e-4), tmp_path, progress=False)
    # --restart discards the checkpoint
    res = erase(random_components(), config("esd-x", steps=2, lr=5e-4), tmp_path, resume=False, progress=False)
    assert res.finished


def test_bf16_mixed_precision_keeps_the_model_dtype() -> None:
    comps = random_components()
    res = erase(comps, config("esd-x", steps=1, precision="bf16"), progress=False)
    assert res.record["train"]["precision"] == "bf16" and torch.isfinite(torch.tensor(res.losses)).all()
    assert all(w.dtype == torch.float32 for w in res.weights.values()) and comps.unet.dtype == torch.float32


def test_uce_closed_form_is_the_minimiser_of_its_objective() -> None:
    g = torch.Generator().manual_seed(0)
    w_old = torch.randn(6, 5, generator=g, dtype=torch.float64)
    erase_v = torch.randn(4, 5, generator=g, dtype=torch.float64)
    guide_v = torch.randn(4, 5, generator=g, dtype=torch.float64)
    keep_v = torch.randn(3, 5, generator=g, dtype=torch.float64)
    kw = {"lamb": 0.3, "erase_scale": 1.5, "preserve_scale": 0.7}
    w_star = closed_form(w_old, erase_v, guide_v, keep_v, **kw)

    # direct numeric minimisation of the same least-squares objective
    w = w_old.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = objective(w, w_old, erase_v, guide_v, keep_v, **kw)
        f.backward()
        return f

    opt.step(closure)
    assert torch.allclose(w.detach(), w_star, atol=1e-7)
    # the gradient vanishes at the closed form, and any perturbation costs more
    ws = w_star.clone().requires_grad_(True)
    objective(ws, w_old, erase_v, guide_v, keep_v, **kw).backward()
    assert ws.grad is not None and ws.grad.abs().max() < 1e-9
    f_star = objective(w_star, w_old, erase_v, guide_v, keep_v, **kw)
    for _ in range(5):
        bumped = w_star + 1e-3 * torch.randn(w_star.shape, generator=g, dtype=torch.float64)
        assert objective(bumped, w_old, erase_v, guide_v, keep_v, **kw) > f_star


def test_uce_edit_maps_the_concept_to_the_guide_and_keeps_the_preserved() -> None:
    comps = random_components()
    before = snapshot(comps.unet)
    cfg = ErasureConfig(method="uce", concepts=["a knife"], preserve=["a cat"], uce_lambda=0.01)
    res = uce_edit(comps, cfg)
    kv = {n for n in before if ".attn2.to_k." in n or ".attn2.to_v." in n}
    assert set(res.weights) == kv == changed(comps.unet, before)
    erase_v, guide_v = token_vectors(comps, ["a knife"], [""], "tail")
    keep_v, _ = token_vectors(comps, ["a cat"], ["a cat"], "tail")
    assert res.n_erase_vectors == erase_v.shape[0] > 1  # the concept's last token + end/padding tokens
    for name in kv:
        w_old, w_new = before[name].double(), res.weights[name].double()
        target = guide_v @ w_old.T
        assert (erase_v @ w_new.T - target).norm() < 0.5 * (erase_v @ w_old.T - target).norm()
        assert (keep_v @ w_new.T - keep_v @ w_old.T).norm() < 0.1 * (keep_v @ w_old.T).norm()
    only_v = uce_edit(random_components(), cfg.model_copy(update={"uce_edit_keys": False, "uce_tokens": "last"}))
    assert all(".to_v." in n for n in only_v.weights) and only_v.n_erase_vectors == 1


def test_uce_also_edits_the_text_add_embedding_pooling_with_its_bias() -> None:
    comps = random_components(unet_config=TEXT_ADD)
    before = snapshot(comps.unet)
    cfg = ErasureConfig(method="uce", concepts=["a knife"], preserve=["a cat"], uce_lambda=0.1)
    pooled = [p for p in text_projections(comps.unet) if p.pre is not None]
    assert [p.name for p in pooled] == ["add_embedding.pool.v_proj", "add_embedding.pool.k_proj"]
    res = uce_edit(comps, cfg)
    expected = {n for n in before if ".attn2.to_k." in n or ".attn2.to_v." in n}
    expected |= {f"add_embedding.pool.{p}.{w}" for p in ("k_proj", "v_proj") for w in ("weight", "bias")}
    assert set(res.weights) == expected == changed(comps.unet, before)
    # the pooled projection's new [W b] is the minimiser of UCE's objective on [norm1(c) 1]
    norm = comps.unet.add_embedding.norm1
    e, g = token_vectors(comps, ["a knife"], [""], "tail")
    p, _ = token_vectors(comps, ["a cat"], ["a cat"], "tail")
    e, g, p = (with_ones(norm(x.float()).double()) for x in (e, g, p))
    name = "add_embedding.pool.v_proj"
    w_old = torch.cat([before[f"{name}.weight"], before[f"{name}.bias"][:, None]], 1).double()
    w_new = torch.cat([res.weights[f"{name}.weight"], res.weights[f"{name}.bias"][:, None]], 1).double()
    w = w_new.clone().requires_grad_(True)
    objective(w, w_old, e, g, p, lamb=0.1).backward()
    assert w.grad is not None and w.grad.abs().max() < 1e-3 * (1 + w_old.abs().max())


def test_mosaic_pixelates_only_the_box() -> None:
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    out = mosaic(img, [[(4, 4, 12, 12)]], block=4)
    assert torch.equal(out[..., :4, :], img[..., :4, :]) and torch.equal(out[..., :, 12:], img[..., :, 12:])
    cell = out[0, :, 4:8, 4:8]
    assert torch.allclose(cell, img[0, :, 4:8, 4:8].mean(dim=(1, 2), keepdim=True).expand_as(cell))
    assert not torch.equal(out, img)


def test_saved_erasure_loads_onto_its_base_model(tmp_path: Path) -> None:
    comps = random_components(vae=True)
    comps.save_pretrained(tmp_path / "base")
    base = load_components(tmp_path / "base")
    assert base.vae is not None and base.image_size == 16
    erase(base, ErasureConfig(method="uce", concepts=["a knife"]), tmp_path / "out", base_model=str(tmp_path / "base"))
    reloaded = load_components(tmp_path / "out")
    assert reloaded.extras["erasure"]["method"] == "uce"
    for (n, p), (_, q) in zip(base.unet.named_parameters(), reloaded.unet.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    with pytest.raises(ConfigurationError, match="unknown parameters"):
        apply_weights(base.unet, {"nope.weight": torch.zeros(1)})
    (tmp_path / "out" / WEIGHTS_FILE).write_bytes((tmp_path / "out" / WEIGHTS_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ConfigurationError, match="sha256"):
        load_components(tmp_path / "out")


def test_generation_is_fixed_by_the_seed() -> None:
    comps = random_components(vae=True)
    a = generate(comps, ["a knife", "a cat"], [1, 2], steps=3)
    b = generate(comps, ["a knife", "a cat"], [1, 2], steps=3, batch_size=1)
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a[0], generate(comps, ["a knife"], [3], steps=3)[0])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="both erased and preserved"):
        ErasureConfig(method="uce", concepts=["a knife"], preserve=["a knife"])
    with pytest.raises(ValueError):
        ErasureConfig(method="nope", concepts=["a knife"])  # type: ignore[arg-type]
    cfg = ErasureConfig(method="esd-u", concepts=["a knife"]).resolved()
    assert (cfg.steps, cfg.lr, cfg.parameters, cfg.optimizer) == (1000, 1e-5, "noxattn", "adam")
    assert ErasureConfig(method="safegen", concepts=["x"]).resolved().parameters == "selfattn"
