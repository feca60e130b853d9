"""Named-people benchmark: PERSON detection recall, public/private accuracy and latency.

    python bench/bench_people.py [--out bench/results]

Each name of ``bench/data/people_prompts.py`` (50 public figures — with misspellings, case changes
and 4 people outside the gazetteer — and 50 invented private names) is put into two of four
templates (200 prompts). A prompt counts as *detected* when the analysis has a person span that
overlaps the name, and as *correctly classified* when that span is public (matched to the expected
figure) for a public name and private for a private one. Latency is the wall time of one
uncached analysis per prompt (spaCy NER + Presidio recognizers + gazetteer), after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from data.people_prompts import PRIVATE, PUBLIC, TEMPLATES
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.people import get_people_analyzer


def prompts() -> list[tuple[str, str, bool, str | None]]:
    out = []
    for i, (name, canonical) in enumerate(PUBLIC):
        for t in (TEMPLATES[i % 4], TEMPLATES[(i + 1) % 4]):
            out.append((t.format(name), name, True, canonical))
    for i, name in enumerate(PRIVATE):
        for t in (TEMPLATES[(i + 2) % 4], TEMPLATES[(i + 3) % 4]):
            out.append((t.format(name), name, False, None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    analyzer = get_people_analyzer(ModelCache())
    items = prompts()
    for p, *_ in items[:20]:
        analyzer.analyze(p)
    detected = correct = 0
    rows = []
    lat: list[float] = []
    for prompt, name, public, canonical in items:
        times = []
        for _ in range(args.repeats):
            analyzer._cache.clear()
            t0 = time.perf_counter()
            a = analyzer.analyze(prompt)
            times.append((time.perf_counter() - t0) * 1000)
        lat.append(float(np.median(times)))
        start = prompt.index(name)
        end = start + len(name)
        spans = [m for m in a.people if m.start < end and start < m.end]
        hit = bool(spans)
        detected += hit
        if public:
            ok = any(m.public and m.match is not None and m.match.figure.name == canonical for m in spans)
        else:
            ok = hit and all(m.private for m in spans)
        correct += ok
        rows.append(
            {
                "prompt": prompt,
                "public": public,
                "detected": hit,
                "correct": ok,
                "found": [m.to_dict() for m in a.people],
            }
        )
    n = len(items)
    res = {
        "prompts": n,
        "public": sum(1 for r in rows if r["public"]),
        "private": sum(1 for r in rows if not r["public"]),
        "person_recall": detected / n,
        "public_private_accuracy": correct / n,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_max": float(np.max(lat)),
        "machine": f"{platform.processor() or platform.machine()}, shared CPU (2 cores, other jobs running)",
        "errors": [r for r in rows if not r["correct"]],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "people.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    md = [
        "| prompts | PERSON recall | public/private accuracy | latency p50 | latency p95 |",
        "|---|---|---|---|---|",
        f"| {n} ({res['public']} public, {res['private']} private) | {res['person_recall']:.1%} | "
        f"{res['public_private_accuracy']:.1%} | {res['latency_ms_p50']:.1f} ms | {res['latency_ms_p95']:.1f} ms |",
        "",
        "Misclassified: " + "; ".join(r["prompt"] for r in res["errors"]) if res["errors"] else "Misclassified: none",
    ]
    (out / "people.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
