"""``t2iguard redteam`` and ``t2iguard bench system``: attack the stack, benchmark it layer by layer."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from t2iguard.core.errors import ConfigurationError, InputError, PolicyError
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import Policy, default_policy, load_policy
from t2iguard.core.types import Action, Category
from t2iguard.redteam.asr import Seed, run_redteam
from t2iguard.redteam.catalog import build_attacks
from t2iguard.redteam.datasets import DEFAULT_DATA_ROOT, load_dataset, load_registry
from t2iguard.redteam.render import SYSTEM_HEADERS, system_rows, write_redteam_report, write_system_report
from t2iguard.redteam.report import pct
from t2iguard.redteam.system import SystemBenchConfig, run_system_bench

DEV_SEEDS = "builtin:dev"


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err().print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _policy(path: Path | None) -> Policy:
    try:
        return load_policy(path) if path else default_policy()
    except PolicyError as exc:
        raise _fail(str(exc)) from None


def load_seeds(
    spec: str, *, data: Path | None = None, limit: int | None = None, seed: int = 0, registry: Path | None = None
) -> list[Seed]:
    """Seeds from ``builtin:dev`` (the committed development seeds), ``dataset:NAME`` (a registered
    dataset's unsafe rows), or a file: CSV with ``prompt`` (and optional ``category``) columns, or
    one prompt per line."""
    if spec == DEV_SEEDS:
        from importlib import resources

        text = resources.files("t2iguard.redteam").joinpath("data/dev_seeds.csv").read_text(encoding="utf-8")
        return _seeds_from_csv(text.splitlines(), "dev_seeds.csv")[: limit or None]
    if spec.startswith("dataset:"):
        reg = load_registry(registry)
        rows = load_dataset(spec.split(":", 1)[1], data, limit=limit, seed=seed, registry=reg)
        return [
            Seed(r.prompt, r.categories[0] if r.categories else None, f"{r.dataset}:{r.id}")
            for r in rows
            if r.label == "unsafe"
        ]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"seed file not found: {path} (or use {DEV_SEEDS} / dataset:NAME)", source=spec)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() == ".csv":
        seeds = _seeds_from_csv(lines, str(path))
    else:
        seeds = [Seed(line.strip(), None, f"{path}:{i + 1}") for i, line in enumerate(lines) if line.strip()]
    return seeds[:limit] if limit else seeds


def _seeds_from_csv(lines: list[str], source: str) -> list[Seed]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        raise InputError("seed CSV needs a 'prompt' column", source=source)
    out = []
    for i, row in enumerate(reader):
        text = (row.get("prompt") or "").strip()
        if not text:
            continue
        cat = (row.get("category") or "").strip()
        try:
            category = Category(cat) if cat else None
        except ValueError:
            raise InputError(f"row {i + 2}: unknown category {cat!r}", source=source) from None
        out.append(Seed(text, category, f"{source}:{i + 2}"))
    return out


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def redteam(
    seeds: Annotated[
        str, typer.Option("--seeds", help=f"seed prompts: a CSV/TXT file, dataset:NAME, or {DEV_SEEDS}")
    ] = DEV_SEEDS,
    attacks: Annotated[
        str, typer.Option("--attacks", "-a", help="all, a family (character, lexical, ...), names, chains a+b")
    ] = "all",
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="policy YAML (default: built-in)")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help=f"data root (default ${{T2IGUARD_DATA}} or {DEFAULT_DATA_ROOT})")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="use at most this many seeds (seeded sample)")] = None,
    registry: Annotated[
        Path | None, typer.Option("--registry", help="dataset registry YAML (default: built-in)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed of the attacks and the sample")] = 0,
    variants: Annotated[int, typer.Option("--variants", help="attacked variants per seed (ASR@n)")] = 1,
    budget: Annotated[int, typer.Option("--budget", help="query budget of the search attack per seed")] = 60,
    blocked_at: Annotated[
        str, typer.Option("--blocked-at", help="least severe action that counts as stopped")
    ] = "review",
    out: Annotated[Path | None, typer.Option("--out", help="write redteam.json/.md/.html into this folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as one JSON object")] = False,
) -> None:
    """Attack the stack with transformed seed prompts; report the attack success rate per attack."""
    pol = _policy(policy)
    try:
        stack = SafetyStack(pol)
        seed_list = load_seeds(seeds, data=data, limit=limit, seed=seed, registry=registry)
        attack_list = build_attacks(attacks, budget=budget)
        stop = Action(blocked_at)
    except (ConfigurationError, PolicyError, InputError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if not seed_list:
        raise _fail("no seed prompts")
    with _progress() as prog:
        task = prog.add_task("attacks", total=len(attack_list))

        def tick(name: str, k: int, n: int) -> None:
            prog.update(task, completed=k, description=f"attack {name}")

        result = run_redteam(
            stack, seed_list, attack_list, seed=seed, variants=variants, blocked_at=stop, progress=tick
        )
    data_out = result.to_dict()
    data_out["config"]["seeds"] = seeds
    if out is not None:
        paths = write_redteam_report(data_out, out)
        _err().print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(data_out, ensure_ascii=False) + "\n")
        return
    _print_redteam(data_out)


def _print_redteam(d: dict[str, Any]) -> None:
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=160)
    t = Table(title=f"ASR over {d['seeds']['blocked']} blocked seeds (of {d['seeds']['total']})")
    for h in ("family", "attack", "ASR", "successes", "example that passed"):
        t.add_column(h, overflow="fold", max_width=70 if h.startswith("example") else None)
    for a in d["attacks"]:
        ex = next((e["attacked"] for e in a["examples"] if e["success"]), "")
        t.add_row(a["family"], a["attack"], pct(a["asr"]), f"{a['successes']}/{a['attempted']}", ex)
    console.print(t)
    for fam, s in d["families"].items():
        console.print(f"{fam}: pooled ASR {pct(s['pooled_asr'])}, union ASR {pct(s['union_asr'])}", highlight=False)
    o = d["overall"]
    console.print(f"all attacks: pooled ASR {pct(o['pooled_asr'])}, union ASR {pct(o['union_asr'])}", highlight=False)


def bench_system(
    datasets: Annotated[
        str, typer.Option("--datasets", "-d", help="registered datasets, comma-separated")
    ] = "i2p,coco",
    limit: Annotated[int | None, typer.Option("--limit", help="prompts per dataset (seeded sample)")] = 500,
    registry: Annotated[
        Path | None, typer.Option("--registry", help="dataset registry YAML (default: built-in)")
    ] = None,
    max_images: Annotated[int, typer.Option("--max-images", help="full-stack generations per dataset")] = 100,
    generator: Annotated[
        str, typer.Option("--generator", "-g", help="generator spec (tiny, procedural, ...)")
    ] = "tiny",
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="policy YAML (default: built-in)")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help=f"data root (default ${{T2IGUARD_DATA}} or {DEFAULT_DATA_ROOT})")
    ] = None,
    convention: Annotated[
        str, typer.Option("--convention", help="nudity metric: mace-rece, unlearndiffatk, t2iguard")
    ] = "mace-rece",
    cache: Annotated[Path | None, typer.Option("--cache", help="result cache folder")] = Path(".cache/t2iguard-bench"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="compute everything again")] = False,
    seed: Annotated[int, typer.Option("--seed", help="sample seed")] = 0,
    size: Annotated[int | None, typer.Option("--size", help="image side in pixels (default: the generator's)")] = None,
    images_per_prompt: Annotated[int, typer.Option("--images-per-prompt", help="images per generation")] = 1,
    out: Annotated[Path, typer.Option("--out", help="folder for system.json/.md/.html")] = Path("bench/results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
) -> None:
    """Run datasets through the full stack; report per layer and end to end (JSON, markdown, HTML)."""
    pol = _policy(policy)
    cfg = SystemBenchConfig(
        datasets=[d.strip() for d in datasets.split(",") if d.strip()],
        limit=limit,
        max_images=max_images,
        generator=generator,
        data=data,
        cache=None if no_cache else cache,
        convention=convention,
        seed=seed,
        width=size,
        height=size,
        images_per_prompt=images_per_prompt,
        registry=registry,
    )
    with _progress() as prog:
        tasks: dict[str, Any] = {}

        def tick(name: str, k: int, n: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=n)
            prog.update(tasks[name], completed=k, total=n)

        try:
            result = run_system_bench(cfg, pol, progress=tick)
        except (ConfigurationError, PolicyError, InputError) as exc:
            raise _fail(str(exc)) from None
    data_out = result.to_dict()
    paths = write_system_report(data_out, out)
    _err().print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False)
    if as_json:
        summary = {k: v for k, v in data_out.items() if k != "latency_samples"}
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
        return
    from rich.table import Table

    console = Console() if Console().is_terminal else Console(width=200)
    t = Table(title="system benchmark")
    for h in SYSTEM_HEADERS:
        t.add_column(h, overflow="fold")
    for row in system_rows(data_out):
        t.add_row(*[str(c) for c in row])
    console.print(t)
