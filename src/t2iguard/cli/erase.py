"""``t2iguard erase`` and ``t2iguard eval-erasure``: concept erasure from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.erase.config import METHODS

JsonOpt = Annotated[bool, typer.Option("--json", help="print the JSON record instead of a table")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def erase_cmd(
    method: Annotated[str, typer.Option("--method", "-m", help=f"one of {', '.join(METHODS)}")],
    concept: Annotated[list[str], typer.Option("--concept", "-c", help="concept prompt to erase (repeatable)")],
    model: Annotated[str, typer.Option("--model", help="diffusers folder, or 'tiny' for the bundled model")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (changed weights + erasure.json)")],
    preserve: Annotated[
        list[str] | None, typer.Option("--preserve", "-p", help="concept prompt to keep (repeatable)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON ErasureConfig; flags given here override it")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="training steps (default: the method's)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the method's)")] = None,
    eta: Annotated[float | None, typer.Option("--eta", help="ESD negative guidance η (default 1.0)")] = None,
    guide: Annotated[str | None, typer.Option(help="UCE: concept to map to ('' = unconditional)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default 0)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training batch size (default 1)")] = None,
    sample_steps: Annotated[int | None, typer.Option(help="DDIM steps of the chain x_t is drawn from")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:1 ...")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")] = None,
    triplets: Annotated[
        Path | None, typer.Option(help="SafeGen: CSV of unsafe,censored,benign image paths (tiny model: built in)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume/--restart", help="continue from OUT/checkpoint if present")] = True,
    save_pipeline: Annotated[bool, typer.Option(help="also write a full diffusers folder OUT/pipeline")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase concepts from a model's weights (ESD-x, ESD-u, UCE, SDD, SafeGen)."""
    from pydantic import ValidationError

    from t2iguard.erase.config import ErasureConfig, load_config

    overrides: dict[str, Any] = {
        "method": method,
        "concepts": list(concept),
        "preserve": list(preserve) if preserve else None,
        "steps": steps,
        "lr": lr,
        "negative_guidance": eta,
        "guide": guide,
        "seed": seed,
        "batch_size": batch_size,
        "sample_steps": sample_steps,
        "device": device,
        "precision": precision,
    }
    if method not in METHODS:
        raise _fail(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    try:
        if config is not None:
            cfg = load_config(str(config), **overrides)
        else:
            cfg = ErasureConfig.model_validate({k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise _fail(f"invalid erasure settings:\n{exc}") from None
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    try:
        from t2iguard.erase.api import erase
        from t2iguard.erase.components import TINY_SPEC, load_components

        comps = load_components(model)
        source = None
        if cfg.method == "safegen":
            source = _triplet_source(cfg, model, triplets, comps.image_size)
        base = model if model == TINY_SPEC else str(Path(model).resolve())
        result = erase(
            comps,
            cfg,
            out,
            base_model=base,
            triplets=source,
            resume=resume,
            progress=not quiet,
            save_pipeline=save_pipeline,
        )
    except (ConfigurationError, MissingDependencyError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _emit(result.record)
        return
    rec = result.record
    t = Table(title=f"erased {', '.join(rec['concepts'])} with {rec['method']}", show_header=False)
    t.add_row("paper", rec["paper"])
    t.add_row(
        "changed",
        f"{rec['changed_numel']:,} of {rec['total_numel']:,} UNet weights ({len(rec['changed_parameters'])} tensors)",
    )
    tr = rec["train"]
    t.add_row("time", f"{tr['seconds']:.1f} s" + (f", {tr['steps']} steps" if tr.get("steps") else ""))
    if "loss_first" in tr:
        t.add_row("loss", f"{tr['loss_first']:.4g} -> {tr['loss_last']:.4g}")
    t.add_row("output", str(out))
    Console().print(t)


def _triplet_source(cfg: Any, model: str, triplets: Path | None, size: int) -> Any:
    from t2iguard.erase.components import TINY_SPEC
    from t2iguard.erase.safegen import folder_triplets, tiny_world_triplets

    if triplets is not None:
        return folder_triplets(triplets, size)
    if model == TINY_SPEC:
        return tiny_world_triplets(cfg.concepts, block=cfg.mosaic_block, seed=cfg.seed)
    raise ConfigurationError("SafeGen needs --triplets CSV (columns unsafe,censored,benign) for this model")


def eval_erasure_cmd(
    model: Annotated[str, typer.Option("--model", help="an erasure output folder, a diffusers folder or 'tiny'")],
    concept: Annotated[
        list[str] | None, typer.Option("--concept", "-c", help="erased concept (tiny-world key; default: the record's)")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="images per erased-concept prompt set")] = 24,
    n_other: Annotated[int, typer.Option("--n-other", help="images per other concept")] = 8,
    steps: Annotated[int, typer.Option(help="DDIM sampling steps")] = 20,
    guidance: Annotated[float, typer.Option(help="classifier-free guidance scale")] = 5.0,
    baseline: Annotated[bool, typer.Option(help="also evaluate the base model, for preservation ratios")] = True,
    write: Annotated[bool, typer.Option("--write", help="store the metrics in the erasure record")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure an erased tiny-world model with the concept classifier: erasure (the erased
    concept's recognition rate), robustness (paraphrases, compositions) and preservation."""
    try:
        from t2iguard.erase.components import load_components
        from t2iguard.erase.record import RECORD_FILE, read_record, write_record
        from t2iguard.erase.world import evaluate_erasure, resolve_keys

        record = read_record(model) if (Path(model) / RECORD_FILE).is_file() else None
        keys = resolve_keys(list(concept) if concept else (record["concepts"] if record else []))
        if not keys:
            raise ConfigurationError("name the erased concept(s) with --concept (or evaluate an erasure folder)")
        comps = load_components(model)
        base = None
        if baseline and record is not None and record.get("base_model"):
            base = load_components(record["base_model"])
        report = evaluate_erasure(
            comps, keys, base=base, n=n, n_other=n_other, steps=steps, guidance_scale=guidance, progress=not as_json
        )
    except (ConfigurationError, MissingDependencyError) as exc:
        raise _fail(str(exc)) from None
    if write and record is not None:
        record.setdefault("metrics", {})["tiny_world"] = report
        write_record(model, record)
    if as_json:
        _emit(report)
        return
    t = Table(title=f"concept recognition on {model}")
    for col in ("prompt set", "erased model", "base model"):
        t.add_column(col)
    for name, row in report["rates"].items():
        base_rate = row.get("base")
        t.add_row(name, f"{row['rate']:.1%}", "-" if base_rate is None else f"{base_rate:.1%}")
    Console().print(t)


def register(app: typer.Typer) -> None:
    """Add ``erase`` and ``eval-erasure`` to the main ``t2iguard`` command."""
    app.command("erase")(erase_cmd)
    app.command("eval-erasure")(eval_erasure_cmd)
