"""``t2iguard generate``: the whole stack around a generator — prompt checks, generation, output
checks, regeneration with safety guidance, provenance — writing the images and the decision."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from t2iguard.core.errors import ConfigurationError, InputError, PolicyError
from t2iguard.core.inputs import load_image
from t2iguard.core.policy import Policy, default_policy, load_policy
from t2iguard.core.types import Action


def builtin_policy_path(name: str) -> Path | None:
    """The packaged policy called ``name`` (``"tiny-demo"``), if there is one."""
    candidate = resources.files("t2iguard.policies").joinpath(f"{name}.yaml")
    return Path(str(candidate)) if candidate.is_file() else None


def resolve_policy(spec: str | None, backend: str) -> Policy:
    """A policy file, a built-in policy name, or (none given) ``tiny-demo`` for the tiny backend
    and the default policy otherwise."""
    if spec is None:
        if backend.split(":", 1)[0] == "tiny":
            path = builtin_policy_path("tiny-demo")
            assert path is not None
            return load_policy(path)
        return default_policy()
    p = Path(spec)
    if not p.exists() and (builtin := builtin_policy_path(spec)) is not None:
        p = builtin
    return load_policy(p)


def _parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None:
        return None
    w, sep, h = size.lower().partition("x")
    try:
        return (int(w), int(h or w)) if sep or w else None
    except ValueError:
        raise typer.BadParameter(f"size must be WIDTHxHEIGHT or SIDE, got {size!r}") from None


def _image_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(n)]


def generate(
    prompt: Annotated[str, typer.Argument(help="what to generate")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="image file to write (PATH-0.png ... for -n > 1)")
    ] = Path("out.png"),
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="tiny | diffusers:PATH | http:URL | procedural")
    ] = "tiny",
    policy: Annotated[
        str | None,
        typer.Option("--policy", "-p", help="policy file or built-in name (default: tiny-demo for tiny, else default)"),
    ] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="number of images")] = 1,
    seed: Annotated[int | None, typer.Option(help="random seed (default: random)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampling steps (default: the backend's)")] = None,
    guidance: Annotated[float | None, typer.Option("--guidance", help="classifier-free guidance scale")] = None,
    negative: Annotated[str | None, typer.Option("--negative", help="negative prompt")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT (default: the backend's native size)")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="input image: img2img / inpainting")] = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="inpainting mask (white = repaint); needs --image")
    ] = None,
    strength: Annotated[float | None, typer.Option(help="edit strength in (0, 1]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the decision as one JSON object")] = False,
) -> None:
    """Generate images through the whole safety stack and write them with the decision."""
    from t2iguard.cli.main import _decision_json, _emit_json, _fail, _out, _table
    from t2iguard.core.pipeline import SafetyStack
    from t2iguard.generate.base import GenerationRequest
    from t2iguard.generate.factory import make_generator

    if mask is not None and image is None:
        raise _fail("--mask needs --image")
    try:
        pol = resolve_policy(policy, backend)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    try:
        gen = make_generator(backend)
        stack = SafetyStack(pol, generator=gen)
    except (ConfigurationError, PolicyError) as exc:
        raise _fail(str(exc)) from None
    native = int(getattr(gen, "default_size", 512))
    w, h = _parse_size(size) or (native, native)
    try:
        img_item = load_image(image, limits=pol.limits, source=str(image)) if image else None
        mask_item = load_image(mask, limits=pol.limits, source=str(mask)) if mask else None
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            n=n,
            width=w,
            height=h,
            steps=steps,
            guidance_scale=guidance,
            seed=seed,
            image=img_item,
            mask=mask_item,
            strength=strength,
        )
        outcome = stack.generate(request)
    except InputError as exc:
        if as_json:
            _emit_json({"input": exc.source, "error": exc.reason})
        raise _fail(str(exc), code=1) from None
    finally:
        stack.close()
    decision = outcome.decision
    written: list[str] = []
    if outcome.images:
        output.parent.mkdir(parents=True, exist_ok=True)
        for path, img, enc in zip(
            _image_paths(output, len(outcome.images)), outcome.images, outcome.encoded, strict=True
        ):
            if enc is not None:
                path.write_bytes(enc)
            else:
                img.save(path)
            written.append(str(path))
        for rec, path_str in zip(decision.images, written, strict=False):
            rec.path = path_str
    if as_json:
        data: dict[str, Any] = _decision_json(decision, prompt=True)
        data["backend"] = backend
        data["written"] = written
        _emit_json(data)
        return
    console = _out()
    console.print(_table("t2iguard generate", [(prompt, decision)], prompt=True))
    for a in decision.attempts:
        g = a.guidance
        how = (
            f"{g.get('strength')} guidance away from {', '.join(g.get('concepts') or g.get('categories') or [])}"
            if g
            else "unguided"
        )
        console.print(f"  attempt {a.attempt}: seed {a.seed}, {how} -> {a.action}", highlight=False)
    if written:
        console.print(f"wrote {', '.join(written)} ({decision.action})", highlight=False)
    else:
        console.print(f"no image returned ({decision.action}): {decision.reason}", highlight=False)
    if decision.action >= Action.REVIEW:
        sys.stderr.write(json.dumps({"decision": decision.id, "action": str(decision.action)}) + "\n")
