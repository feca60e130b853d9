"""Markdown and HTML renderings of red-team and system-benchmark results (from their JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t2iguard.redteam.report import (
    HtmlReport,
    bar_chart,
    box_chart,
    fmt,
    funnel_chart,
    md_table,
    pct,
    write_outputs,
)
from t2iguard.redteam.system import LAYERS

# ---- red team ------------------------------------------------------------------------------


def _attack_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for a in data["attacks"]:
        q = a.get("queries")
        rows.append(
            [
                a["family"],
                a["attack"],
                a["attempted"],
                a["applicable"],
                a["successes"],
                pct(a["asr"]),
                pct(a["asr_applicable"]),
                f"{q['mean']:.1f}" if q else "",
            ]
        )
    return rows


_ATTACK_HEADERS = ["family", "attack", "seeds", "applicable", "successes", "ASR", "ASR (applicable)", "mean queries"]


def _budget_table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
    """The search attacks' ASR had they stopped after k queries (one prompt at a time)."""
    rows = [a for a in data["attacks"] if a.get("asr_within_queries")]
    if not rows:
        return None
    ks = sorted({int(k) for a in rows for k in a["asr_within_queries"]})
    return (
        ["attack", *[f"≤ {k} queries" for k in ks]],
        [[a["attack"], *[pct(a["asr_within_queries"].get(str(k))) for k in ks]] for a in rows],
    )


_BUDGET_NOTE = (
    "An attacker asking one prompt at a time; every blocked query is a strike on the key at the gateway "
    "(`t2iguard serve`), and the default policy suspends a key at 5 decayed strikes."
)


def _family_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for fam, s in data["families"].items():
        rows.append([fam, len(s["attacks"]), pct(s["pooled_asr"]), pct(s["union_asr"])])
    for key, name in (("overall_without_search", "all but search"), ("overall", "all attacks")):
        s = data[key]
        rows.append([name, len(s["attacks"]), pct(s["pooled_asr"]), pct(s["union_asr"])])
    return rows


def _category_matrix(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    cats = sorted({c for a in data["attacks"] for c in a["by_category"]})
    rows = []
    for a in data["attacks"]:
        rows.append([a["attack"], *[pct(a["by_category"].get(c, {}).get("asr"), 0) for c in cats]])
    return cats, rows


def redteam_markdown(data: dict[str, Any], title: str = "t2iguard red team") -> str:
    cfg = data["config"]
    lines = [
        f"# {title}",
        "",
        f"Policy `{cfg['policy']}` {cfg['policy_version']} (sha256 `{cfg['policy_sha256'][:12]}`), prompt stages: "
        f"{', '.join(cfg['stages'])}. Seeds: {data['seeds']['total']}, blocked by the unmodified stack: "
        f"{data['seeds']['blocked']}. Variants per seed: {cfg['variants']}; seed {cfg['seed']}; "
        f"search budget {cfg.get('search_budget')} queries per seed.",
        "",
        f"ASR: {data['asr_definition']}.",
        "",
        "## By family",
        "",
        md_table(["family", "attacks", "pooled ASR", "union ASR"], _family_rows(data)),
        "",
        "## By attack",
        "",
        md_table(_ATTACK_HEADERS, _attack_rows(data)),
        "",
    ]
    budget = _budget_table(data)
    if budget:
        lines += ["## Search ASR by query budget", "", _BUDGET_NOTE, "", md_table(*budget), ""]
    lines += [
        "## By category (ASR)",
        "",
    ]
    cats, rows = _category_matrix(data)
    lines += [md_table(["attack", *cats], rows), "", "## Examples of successful attacks", ""]
    ex_rows = []
    for a in data["attacks"]:
        for e in a["examples"]:
            if e["success"]:
                ex_rows.append([a["attack"], e["category"], e["seed"], e["attacked"]])
                break
    lines.append(md_table(["attack", "category", "seed", "attacked (passes)"], ex_rows) if ex_rows else "(none)")
    return "\n".join(lines) + "\n"


def redteam_html(data: dict[str, Any], title: str = "t2iguard red team") -> HtmlReport:
    cfg = data["config"]
    page = HtmlReport(title)
    page.p(
        f"Policy {cfg['policy']} {cfg['policy_version']} (sha256 {cfg['policy_sha256'][:12]}); prompt stages: "
        f"{', '.join(cfg['stages'])}. Seeds {data['seeds']['total']}, blocked unmodified {data['seeds']['blocked']}; "
        f"{cfg['variants']} variant(s) per seed, seed {cfg['seed']}, search budget {cfg.get('search_budget')}."
    )
    page.p("ASR: " + data["asr_definition"] + ".", "note")
    page.h("By family")
    page.table(["family", "attacks", "pooled ASR", "union ASR"], _family_rows(data))
    labels = [a["attack"] for a in data["attacks"]]
    page.image(
        bar_chart(labels, {"ASR": [a["asr"] for a in data["attacks"]]}, title="ASR per attack", ylabel="ASR (%)",
                  horizontal=True),
        "ASR per attack",
    )  # fmt: skip
    page.h("By attack")
    page.table(_ATTACK_HEADERS, _attack_rows(data))
    budget = _budget_table(data)
    if budget:
        page.h("Search ASR by query budget")
        page.p(_BUDGET_NOTE, "note")
        page.table(*budget)
    page.h("By category")
    cats, rows = _category_matrix(data)
    page.table(["attack", *cats], rows)
    fams: dict[str, dict[str, list[int]]] = {}
    for a in data["attacks"]:
        for c, v in a["by_category"].items():
            acc = fams.setdefault(a["family"], {}).setdefault(c, [0, 0])
            acc[0] += v["successes"]
            acc[1] += v["attempted"]
    page.image(
        bar_chart(
            cats,
            {f: [(v[c][0] / v[c][1]) if c in v and v[c][1] else None for c in cats] for f, v in fams.items()},
            title="Pooled ASR per family and category",
            ylabel="ASR (%)",
        ),
        "ASR per category",
    )
    page.h("Examples")
    for a in data["attacks"]:
        if not a["examples"]:
            continue
        page.h(a["attack"], 3)
        page.table(
            ["result", "category", "seed", "attacked", "stack said"],
            [["passes" if e["success"] else "blocked", e["category"], e["seed"], e["attacked"], e["reason"]]
             for e in a["examples"]],
        )  # fmt: skip
    return page


def write_redteam_report(data: dict[str, Any], out_dir: str | Path, stem: str = "redteam") -> dict[str, Path]:
    return write_outputs(out_dir, stem, data, redteam_markdown(data), redteam_html(data))


# ---- system benchmark ----------------------------------------------------------------------


def _layer_name(key: str) -> str:
    return LAYERS.get(key, key)


def system_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, s in data["summary"]["datasets"].items():
        for label in ("unsafe", "benign"):
            if label not in s:
                continue
            p, e = s[label]["prompt_layer"], s[label]["end_to_end"]
            by_layer = ", ".join(f"{_layer_name(k)} {pct(v)}" for k, v in e["refused_by_layer"].items()) or "–"
            regen = e["regeneration"]
            rows.append(
                [
                    name,
                    label,
                    p["n"],
                    pct(p["refused"]),
                    pct(p["transformed"]),
                    e["n"],
                    e["generated"],
                    pct(e["refused"]),
                    by_layer,
                    pct(e["output_refused"]),
                    f"{regen['succeeded']}/{regen['requested']}",
                    pct(e["nudity_rate_generated"]),
                    pct(e["nudity_rate_delivered"]),
                ]
            )
    return rows


SYSTEM_HEADERS = [
    "dataset",
    "label",
    "prompts",
    "refused at prompt layer",
    "transformed",
    "full-stack prompts",
    "generated",
    "refused end to end",
    "refused by layer",
    "output checks refused",
    "regeneration ok/asked",
    "nudity (generated)",
    "nudity (delivered)",
]


_RATES_NOTE = (
    'For unsafe datasets "refused" is the unsafe-caught rate, for benign ones the over-refusal rate. '
    "Prompt-layer columns cover every sampled prompt; end-to-end columns the full-stack prefix."
)


def output_check_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, s in data["summary"]["datasets"].items():
        for label in ("unsafe", "benign"):
            for stage, p in (s.get(label, {}).get("end_to_end", {}).get("output_check_scores") or {}).items():
                if p:
                    rows.append([name, label, stage, p["n"], fmt(p["mean"], 3), fmt(p["p95"], 3), fmt(p["max"], 3)])
    return rows


def latency_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, p in data["summary"]["overall"]["latency_ms"].items():
        if p:
            rows.append([key, p["n"], fmt(p["mean"], 2), fmt(p["p50"], 2), fmt(p["p95"], 2), fmt(p["max"], 2)])
    e = data["summary"]["overall"].get("end_to_end_ms")
    if e:
        rows.append(["end to end (generated)", e["n"], fmt(e["mean"], 1), fmt(e["p50"], 1), fmt(e["p95"], 1),
                     fmt(e["max"], 1)])  # fmt: skip
    return rows


def _convention_line(data: dict[str, Any]) -> str:
    c = data["config"]["nudity_convention"]
    det = c["detector"]
    version = det.get("version") or "not installed"
    sha = (det.get("sha256") or "")[:12]
    return (
        f"Nudity metric: NudeNet {version} {det.get('model', '')} (sha256 {sha}), convention '{c['name']}': "
        f"an image is nude when one of {len(c['classes'])} classes ({', '.join(c['classes'])}) scores "
        f"{c['comparison']} {c['threshold']} — {c['source']}."
    )


def system_markdown(data: dict[str, Any], title: str = "t2iguard system benchmark") -> str:
    cfg = data["config"]
    lines = [
        f"# {title}",
        "",
        f"Policy `{cfg['policy']['name']}` {cfg['policy']['version']} (sha256 `{cfg['policy']['sha256'][:12]}`); "
        f"generator `{cfg['generator']}`; limit {cfg['limit']} prompts per dataset, full stack on a prefix "
        f"until {cfg['max_images']} generations per dataset; seed {cfg['seed']}. "
        f"Elapsed {data['elapsed_s']:.0f} s (cache hits {data['cache']['hits']}, misses {data['cache']['misses']}).",
        "",
        _convention_line(data),
        "",
        "Stages: " + "; ".join(f"{ph}: {', '.join(st)}" for ph, st in cfg["stages"].items()),
        "",
        "## Per dataset and label",
        "",
        _RATES_NOTE,
        "",
        md_table(SYSTEM_HEADERS, system_rows(data)),
        "",
        "## Output-image checks (highest score per generated image)",
        "",
        md_table(["dataset", "label", "stage", "n", "mean", "p95", "max"], output_check_rows(data)),
        "",
        "## Latency per layer (ms)",
        "",
        md_table(["stage", "n", "mean", "p50", "p95", "max"], latency_rows(data)),
        "",
        "Datasets: " + "; ".join(f"{n} ({d['path']}, {d['licence']})" for n, d in cfg["datasets"].items()),
    ]
    return "\n".join(lines) + "\n"


def system_html(data: dict[str, Any], title: str = "t2iguard system benchmark") -> HtmlReport:
    cfg = data["config"]
    page = HtmlReport(title)
    page.p(
        f"Policy {cfg['policy']['name']} {cfg['policy']['version']} (sha256 {cfg['policy']['sha256'][:12]}); "
        f"generator {cfg['generator']}; limit {cfg['limit']} per dataset; full stack until {cfg['max_images']} "
        f"generations per dataset; elapsed {data['elapsed_s']:.0f} s; cache hits {data['cache']['hits']}."
    )
    page.p(_convention_line(data), "note")
    page.h("Results per dataset")
    page.p(_RATES_NOTE, "note")
    page.table(SYSTEM_HEADERS, system_rows(data))
    page.h("Output-image checks", 3)
    page.table(["dataset", "label", "stage", "n", "mean", "p95", "max"], output_check_rows(data))
    funnels = []
    for name, s in data["summary"]["datasets"].items():
        for label in ("unsafe", "benign"):
            if label not in s:
                continue
            e = s[label]["end_to_end"]
            n = e["n"]
            refused_prompt = sum(
                v for k, v in e["refused_by_layer"].items() if k in ("prompt_check", "prompt_transform", "pipeline")
            )
            after_prompt = round(n * (1 - (refused_prompt or 0.0)))
            delivered = round(n * (e["passed"] or 0.0))
            funnels.append(
                (
                    f"{name} ({label})",
                    {
                        "full-stack prompts": n,
                        "past prompt layer": after_prompt,
                        "generated": e["generated"],
                        "delivered": delivered,
                    },
                )
            )
    page.image(funnel_chart(funnels, title="Per-layer funnel (full-stack subset)"), "funnel")
    cats = sorted(
        {c for s in data["summary"]["datasets"].values() for c in s.get("unsafe", {}).get("refused_by_category", {})}
    )
    series: dict[str, Sequence[float | None]] = {
        name: [s.get("unsafe", {}).get("refused_by_category", {}).get(c, {}).get("refused") for c in cats]
        for name, s in data["summary"]["datasets"].items()
        if "unsafe" in s
    }
    page.image(
        bar_chart(cats, series, title="Unsafe prompts refused, per category", ylabel="refused (%)"), "per category"
    )
    page.h("Latency per layer")
    page.table(["stage", "n", "mean", "p50", "p95", "max"], latency_rows(data))
    page.p("Latencies measured on a shared machine: compare only runs made under the same conditions.", "note")
    samples: dict[str, Sequence[float]] = dict(data.get("latency_samples") or {})
    page.image(box_chart(samples, title="Latency per stage", ylabel="ms"), "latency")
    page.h("Datasets")
    page.table(
        ["name", "path", "label", "licence"],
        [[n, d["path"], str(d["label"]), d["licence"]] for n, d in cfg["datasets"].items()],
    )
    return page


def write_system_report(data: dict[str, Any], out_dir: str | Path, stem: str = "system") -> dict[str, Path]:
    return write_outputs(out_dir, stem, data, system_markdown(data), system_html(data))
