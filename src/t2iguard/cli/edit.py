"""``t2iguard check-edit``: the multimodal check of an edit made by any generator."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from t2iguard.core.errors import ConfigurationError, InputError, PolicyError
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import default_policy, load_policy


def check_edit(
    input_image: Annotated[Path, typer.Argument(help="the uploaded image")],
    output_image: Annotated[Path, typer.Argument(help="the edited image")],
    prompt: Annotated[str, typer.Option("--prompt", help="the edit instruction")],
    mask: Annotated[Path | None, typer.Option(help="inpainting mask (white = edited)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the decision as one JSON object")] = False,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="policy YAML file")] = None,
) -> None:
    """Check an edit (inpainting, img2img): instruction, upload, result and what changed."""
    try:
        pol = load_policy(policy) if policy else default_policy()
        stack = SafetyStack(pol)
    except (PolicyError, ConfigurationError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(2) from None
    try:
        d = stack.check_edit(input_image, output_image, prompt, mask=mask)
    except InputError as exc:
        if as_json:
            sys.stdout.write(json.dumps({"input": exc.source, "error": exc.reason}) + "\n")
        sys.stderr.write(f"invalid input {exc}\n")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(d.to_json() + "\n")
        return
    sys.stdout.write(f"{d.action}: {d.reason}\n")
    for r in d.stages:
        if r.stage == "edit_transform" and r.trace:
            ev = r.trace[0].evidence
            signals = {k: v for e in r.trace for k, v in e.evidence.get("signals", {}).items()}
            sys.stdout.write(f"  real person: {ev.get('real_person')}; signals: {signals}\n")
