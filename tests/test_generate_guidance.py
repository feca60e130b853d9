"""Safety-guided sampling: SLD's equations and presets, and both guidances installed on a real
diffusers pipeline (SD 1.x-architecture, random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.tiny_sd import build_sd
from t2iguard.generate.guidance import (
    SLD_PRESETS,
    ClassifierGuidance,
    SLDConfig,
    SLDGuidance,
    safety_guidance,
    sld_combine,
)


def _reference_sld(uncond, text, safety, momentum, cfg: SLDConfig, active: bool):  # type: ignore[no-untyped-def]
    """SLD Eqs. 3-8 written out elementwise in numpy, independently of the implementation."""
    guidance = text - uncond
    diff = text - safety
    scale = np.minimum(np.abs(diff) * cfg.guidance_scale, 1.0)
    scale = np.where(diff >= cfg.threshold, 0.0, scale)
    term = (safety - uncond) * scale + cfg.momentum_scale * momentum
    new_momentum = cfg.momentum_beta * momentum + (1 - cfg.momentum_beta) * term
    return (guidance - term if active else guidance), new_momentum


@pytest.mark.parametrize("preset", list(SLD_PRESETS))
def test_sld_combine_matches_the_paper(preset: str) -> None:
    rng = np.random.default_rng(0)
    u, t, s, m = (rng.normal(scale=0.05, size=(2, 4, 3, 3)).astype(np.float32) for _ in range(4))
    cfg = SLD_PRESETS[preset]
    for active in (False, True):
        got, mom = sld_combine(*(torch.from_numpy(x) for x in (u, t, s)), torch.from_numpy(m), cfg, active)
        want, want_mom = _reference_sld(u, t, s, m, cfg, active)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mom.numpy(), want_mom, rtol=1e-5, atol=1e-6)


def test_presets_are_the_published_ones() -> None:
    assert SLD_PRESETS["weak"] == SLDConfig(15, 20, 0.0, 0.0, 0.0)
    assert SLD_PRESETS["medium"] == SLDConfig(10, 1000, 0.01, 0.3, 0.4)
    assert SLD_PRESETS["strong"] == SLDConfig(7, 2000, 0.025, 0.5, 0.7)
    assert SLD_PRESETS["max"] == SLDConfig(0, 5000, 1.0, 0.5, 0.7)
    g = SLDGuidance.preset("strong", "weapons")
    assert g.warmup_for(50) == 7 and g.warmup_for(20) == 3 and g.describe()["preset"] == "strong"
    with pytest.raises(ValueError, match="unknown SLD preset"):
        SLDGuidance.preset("extreme")


@pytest.fixture(scope="module")
def pipe():  # type: ignore[no-untyped-def]
    p = build_sd()
    p.set_progress_bar_config(disable=True)
    return p


def _run(pipe, **kw):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    return pipe(
        "a red car", num_inference_steps=3, guidance_scale=6.0, height=32, width=32, generator=g, output_type="np", **kw
    ).images


def test_sld_on_a_pipeline_warmup_and_restore(pipe) -> None:  # type: ignore[no-untyped-def]
    plain = _run(pipe)
    forward = pipe.unet.forward
    with safety_guidance(pipe, sld=SLDGuidance.preset("weak", "violence"), num_inference_steps=3) as stats:
        weak = _run(pipe)  # warm-up 15/50 of 3 steps = 1 step
    assert stats["steps"] == 3 and stats["sld_active_steps"] == 2
    with safety_guidance(pipe, sld=SLDGuidance.preset("max", "violence"), num_inference_steps=3) as stats:
        strong = _run(pipe)
    assert stats["sld_active_steps"] == 3
    assert pipe.unet.forward == forward  # uninstalled
    assert np.array_equal(_run(pipe), plain)  # and the pipeline is as before
    assert np.abs(strong - plain).mean() > np.abs(weak - plain).mean() > 0


def test_sld_needs_classifier_free_guidance(pipe) -> None:  # type: ignore[no-untyped-def]
    with (
        safety_guidance(pipe, sld=SLDGuidance.preset("medium", "violence")),
        pytest.raises(ValueError, match="classifier-free"),
    ):
        pipe("a car", num_inference_steps=2, guidance_scale=1.0, height=32, width=32, output_type="np")


def test_classifier_guidance_lowers_the_harm_score(pipe) -> None:  # type: ignore[no-untyped-def]
    """A differentiable 'harm' score (mean redness of the decoded x0) is pushed down."""

    def redness(images: torch.Tensor) -> torch.Tensor:
        return 20.0 * (images[:, 0] - images[:, 1:].mean(1)).mean(dim=(1, 2))

    plain = _run(pipe)
    with safety_guidance(pipe, classifier=ClassifierGuidance(redness, scale=2000.0, name="redness")) as stats:
        guided = _run(pipe)
    assert stats["classifier_steps"] == 3

    def red(x: np.ndarray) -> float:
        return float((x[..., 0] - x[..., 1:].mean(-1)).mean())

    assert red(guided) < red(plain) - 0.005
