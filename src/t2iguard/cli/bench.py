"""``t2iguard bench``: reproducible benchmarks of the stack's stages.

``t2iguard bench prompts`` runs the policy's prompt stages, the blocklist alone and the offline
PyPI prompt classifiers (when installed) over named datasets and writes JSON, markdown and an HTML
report with plots (see :mod:`t2iguard.prompt.benchmark`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from t2iguard.core.errors import ConfigurationError, PolicyError

bench_app = typer.Typer(help="Benchmarks (results as JSON, markdown and HTML).", no_args_is_help=True)


def _default_data() -> Path:
    return Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks"))


@bench_app.command("prompts")
def bench_prompts(
    data: Annotated[
        Path | None, typer.Option(help="data root (default: $T2IGUARD_DATA or ../shared/benchmarks)")
    ] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("bench/results/prompts"),
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="policy YAML (default: built-in)")] = None,
    datasets_file: Annotated[Path | None, typer.Option("--datasets", help="dataset manifest YAML")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="run only these datasets (repeat)")] = None,
    baselines: Annotated[
        str, typer.Option(help="comma-separated baselines: nsfw-bilstm,nsfw-char-embed,profanity-check ('' for none)")
    ] = "nsfw-bilstm,nsfw-char-embed,profanity-check",
    limit: Annotated[int | None, typer.Option(help="at most this many prompts per dataset (seeded sample)")] = None,
    latency_sample: Annotated[int, typer.Option(help="prompts timed one by one per system")] = 200,
    throughput_sample: Annotated[int, typer.Option(help="prompts timed batched per system")] = 2000,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the matplotlib figures")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report to stdout")] = False,
) -> None:
    """Benchmark the prompt stages and baselines on named prompt datasets."""
    from t2iguard.cli.main import load_policy_or_exit
    from t2iguard.prompt.benchmark import BenchConfig, Manifest, run_benchmark

    err = Console(stderr=True, soft_wrap=True)
    pol = load_policy_or_exit(policy)
    try:
        manifest = Manifest.load(datasets_file)
        cfg = BenchConfig(
            data=data or _default_data(),
            out=out,
            policy=pol,
            manifest=manifest,
            datasets=list(only) if only else None,
            baselines=[b.strip() for b in baselines.split(",") if b.strip()],
            limit=limit,
            latency_sample=latency_sample,
            throughput_sample=throughput_sample,
            seed=seed,
            plots=not no_plots,
        )
        report = run_benchmark(cfg, log=lambda m: err.print(m, highlight=False, markup=False))
    except (ConfigurationError, PolicyError, OSError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write((out / "prompts.md").read_text(encoding="utf-8"))
