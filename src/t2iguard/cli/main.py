"""The ``t2iguard`` command line.

Every command prints a table for people and, with ``--json``, one JSON object per input (JSON
Lines) for programs. Exit status: 0 when every input was processed (whatever the verdicts),
1 when some input was invalid (the others are still processed), 2 for usage or policy errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from t2iguard import __version__
from t2iguard.cli import erase as _erase_cli
from t2iguard.cli import redteam as redteam_cli
from t2iguard.cli import serve as serve_cli
from t2iguard.cli.bench import bench_app
from t2iguard.cli.edit import check_edit
from t2iguard.cli.provenance import app as provenance_app
from t2iguard.core.decision import Decision
from t2iguard.core.errors import ConfigurationError, InputError, PolicyError
from t2iguard.core.inputs import PromptRecord, read_prompts
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import Policy, default_policy, default_policy_path, load_policy
from t2iguard.core.registry import StageRegistry
from t2iguard.core.types import Action, Phase

app = typer.Typer(
    name="t2iguard",
    help="t2iguard: an end-to-end safety stack for text-to-image generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Show and validate policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(bench_app, name="bench")
serve_cli.register(app)  # t2iguard serve / keys / db / escalations (the gateway)
app.add_typer(provenance_app, name="provenance")
app.command("check-edit")(check_edit)
app.command("generate")(import_module("t2iguard.cli.generate").generate)

PolicyOpt = Annotated[
    Path | None, typer.Option("--policy", "-p", help="policy YAML file (default: the built-in policy)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per input (JSON Lines)")]

_ACTION_STYLE = {
    Action.ALLOW: "green",
    Action.TRANSFORM: "cyan",
    Action.REGENERATE: "yellow",
    Action.REVIEW: "magenta",
    Action.BLOCK: "bold red",
}


def _out() -> Console:
    console = Console()
    if not console.is_terminal:  # files and pipes get full-width tables
        console = Console(width=160)
    return console


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err().print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def load_policy_or_exit(path: Path | None) -> Policy:
    try:
        return load_policy(path) if path else default_policy()
    except PolicyError as exc:
        raise _fail(str(exc)) from None


def build_stack(path: Path | None, **kwargs: Any) -> SafetyStack:
    policy = load_policy_or_exit(path)
    try:
        stack = SafetyStack(policy, **kwargs)
    except (PolicyError, ConfigurationError) as exc:
        raise _fail(str(exc)) from None
    return stack


def _emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _input_error(err: InputError, as_json: bool) -> None:
    if as_json:
        _emit_json({"input": err.source, "error": err.reason})
    _err().print(f"[red]invalid input[/] {err.source or ''}: {err.reason}", highlight=False, markup=True)


def _decision_json(d: Decision, *, prompt: bool) -> dict[str, Any]:
    data = d.to_dict()
    if not prompt:
        for key in ("prompt", "original_prompt", "changes"):
            data.pop(key, None)
    return data


def _table(title: str, rows: Iterable[tuple[str, Decision]], *, prompt: bool) -> Table:
    t = Table(title=title, show_lines=False, expand=False)
    t.add_column("input", overflow="fold", max_width=48)
    t.add_column("action")
    t.add_column("top scores", overflow="fold")
    t.add_column("why", overflow="fold", max_width=70)
    if prompt:
        t.add_column("final prompt", overflow="fold", max_width=40)
    for src, d in rows:
        top = sorted(d.categories.items(), key=lambda kv: -kv[1])[:3]
        scores = ", ".join(f"{c} {s:.2f}" for c, s in top if s > 0) or "-"
        cells = [src, f"[{_ACTION_STYLE[d.action]}]{d.action}[/]", scores, d.reason]
        if prompt:
            cells.append(d.prompt if d.prompt and d.prompt != d.original_prompt else "(unchanged)")
        t.add_row(*cells)
    return t


@app.command("check-prompt")
def check_prompt(
    text: Annotated[list[str] | None, typer.Argument(help="prompt(s) to check")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="one prompt per line, or a CSV with --column")
    ] = None,
    column: Annotated[str | None, typer.Option("--column", "-c", help="CSV column holding the prompts")] = None,
    as_json: JsonOpt = False,
    policy: PolicyOpt = None,
    batch_size: Annotated[int, typer.Option(help="prompts checked together")] = 64,
) -> None:
    """Check prompts against the policy's prompt stages."""
    if not text and file is None:
        raise _fail("give prompt text or --file PATH")
    if column and file is None:
        raise _fail("--column needs --file")
    stack = build_stack(policy)
    records: list[PromptRecord | InputError] = [PromptRecord(t, f"<arg {i}>") for i, t in enumerate(text or [])]
    if file is not None:
        try:
            records += list(read_prompts(file, column=column, limits=stack.policy.limits))
        except InputError as err:
            raise _fail(str(err)) from None
    had_error = False
    rows: list[tuple[str, Decision]] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        good = [r for r in chunk if isinstance(r, PromptRecord)]
        results = stack.check_prompts([r.text for r in good], sources=[r.source for r in good])
        it = iter(results)
        for rec in chunk:
            res: Decision | InputError = rec if isinstance(rec, InputError) else next(it)
            if isinstance(res, InputError):
                had_error = True
                _input_error(res, as_json)
            elif as_json:
                _emit_json(_decision_json(res, prompt=True))
            else:
                rows.append((res.original_prompt or "", res))
    if not as_json and rows:
        _out().print(_table("prompt decisions", rows, prompt=True))
    raise typer.Exit(1 if had_error else 0)


@app.command("check-image")
def check_image(
    images: Annotated[list[Path], typer.Argument(help="image file(s) to check")],
    as_json: JsonOpt = False,
    policy: PolicyOpt = None,
    phase: Annotated[str, typer.Option(help="output (generated images) or input (uploads)")] = "output",
    prompt: Annotated[str | None, typer.Option(help="the prompt the images belong to, if any")] = None,
) -> None:
    """Check images with the policy's image stages."""
    ph = {"output": Phase.OUTPUT_IMAGE, "input": Phase.INPUT_IMAGE}.get(phase)
    if ph is None:
        raise _fail("--phase must be 'output' or 'input'")
    stack = build_stack(policy)
    results = stack.check_images([str(p) for p in images], phase=ph, prompt=prompt, sources=[str(p) for p in images])
    had_error = False
    rows = []
    for res in results:
        if isinstance(res, InputError):
            had_error = True
            _input_error(res, as_json)
        elif as_json:
            _emit_json(_decision_json(res, prompt=False))
        else:
            rows.append((res.input.source or "", res))
    if not as_json and rows:
        _out().print(_table("image decisions", rows, prompt=False))
    raise typer.Exit(1 if had_error else 0)


@policy_app.command("show")
def policy_show(
    file: Annotated[Path | None, typer.Argument(help="policy file (default: the built-in policy)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a policy with every default filled in."""
    pol = load_policy_or_exit(file)
    if as_json:
        _emit_json({"source": pol.source, "sha256": pol.sha256, **pol.model_dump(mode="json")})
        return
    sys.stdout.write(f"# source: {pol.source}\n# sha256: {pol.sha256}\n")
    sys.stdout.write(pol.to_yaml())


@policy_app.command("validate")
def policy_validate(
    file: Annotated[Path, typer.Argument(help="policy file to validate")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a policy file: schema, categories, stage names and their parameters."""
    try:
        pol = load_policy(file)
        warnings = StageRegistry().validate(pol)
    except PolicyError as exc:
        if as_json:
            _emit_json({"policy": str(file), "valid": False, "errors": str(exc).splitlines()[1:] or [str(exc)]})
        raise _fail(str(exc)) from None
    if as_json:
        _emit_json(
            {
                "policy": str(file),
                "valid": True,
                "name": pol.name,
                "version": pol.version,
                "stages": [s.instance_name for s in pol.stages],
                "warnings": warnings,
            }
        )
        return
    _out().print(f"[green]valid[/]: {file} ({pol.name} {pol.version}, {len(pol.stages)} stages)", highlight=False)
    for w in warnings:
        _err().print(f"[yellow]warning:[/] {w}", highlight=False)


@policy_app.command("path")
def policy_path() -> None:
    """Print the path of the built-in default policy (copy it to start your own)."""
    sys.stdout.write(str(default_policy_path()) + "\n")


@app.command("demo")
def demo(
    as_json: JsonOpt = False,
    policy: PolicyOpt = None,
) -> None:
    """Run the stack on built-in example prompts and images and print the decisions."""
    from t2iguard.cli.examples import example_images, example_prompts

    stack = build_stack(policy)
    prompts = example_prompts()
    decisions = stack.check_prompts(prompts, sources=[f"example {i}" for i in range(len(prompts))])
    images = example_images()
    img_decisions = stack.check_images([img for _, img in images], sources=[name for name, _ in images])
    if as_json:
        for d in [*decisions, *img_decisions]:
            if isinstance(d, Decision):
                _emit_json(_decision_json(d, prompt=d.input.kind == "prompt"))
        return
    console = _out()
    prompt_rows = [(p, d) for p, d in zip(prompts, decisions, strict=True) if isinstance(d, Decision)]
    console.print(_table("t2iguard demo: prompts", prompt_rows, prompt=True))
    image_rows = [(n, d) for (n, _), d in zip(images, img_decisions, strict=True) if isinstance(d, Decision)]
    console.print(_table("t2iguard demo: images", image_rows, prompt=False))
    blocked = sum(1 for _, d in prompt_rows if d.action == Action.BLOCK)
    console.print(
        f"{len(prompt_rows)} prompts ({blocked} blocked), {len(image_rows)} images checked "
        f"with policy {stack.policy.name} {stack.policy.version}. "
        "Run `t2iguard check-prompt --json TEXT` for the full decision trace."
    )


@app.command("version")
def version() -> None:
    """Print the t2iguard version."""
    sys.stdout.write(f"t2iguard {__version__}\n")


# red-teaming and the system benchmark (t2iguard.cli.redteam)
app.command("redteam")(redteam_cli.redteam)
bench_app.command("system")(redteam_cli.bench_system)
_erase_cli.register(app)  # concept erasure: erase, eval-erasure


def main(argv: Sequence[str] | None = None) -> None:
    app(args=list(argv) if argv is not None else None, prog_name="t2iguard")


if __name__ == "__main__":
    main()
