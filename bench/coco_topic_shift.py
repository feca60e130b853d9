"""Is COCO-30k's split by row index (training rows < 20,000, evaluation rows >= 20,000) a fair split?

Per 5,000-row chunk of ``erasing/data/coco_30k.csv``: how many captions the default policy's learned
classifier blocks, and how many captions name a few COCO topics. Aggregate counts only (no caption is
written out); nothing here is used to train or tune anything. The file turns out to be ordered by
topic, so the evaluation rows are a topic shift from the training rows.

Writes ``bench/results/coco_topic_shift.{json,md}``::

    python bench/coco_topic_shift.py --data ../shared/benchmarks
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from rich.progress import track

from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import default_policy
from t2iguard.core.types import Action

COCO = "erasing/data/coco_30k.csv"
CHUNK = 5_000
TOPICS = ("tennis", "surfboard", "pizza", "skateboard", "baseball", "skis", "horse", "bed",
          "toilet", "train", "bus", "giraffe", "cat", "man", "woman")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the benchmarks data root (../shared/benchmarks)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    with (args.data / COCO).open(newline="", encoding="utf-8") as fh:
        rows = [r["prompt"] for r in csv.DictReader(fh)]
    stack = SafetyStack(default_policy())
    chunks = []
    for start in track(range(0, len(rows), CHUNK), description="chunks"):
        part = rows[start : start + CHUNK]
        decisions = stack.check_prompts(part)
        blocked = sum(
            1
            for d in decisions
            if not isinstance(d, Exception)
            and any(t.stage == "classifier" and t.action >= Action.BLOCK for t in d.decided_by)
        )
        words = [set(re.findall(r"[a-z]+", p.lower())) for p in part]
        chunks.append(
            {
                "rows": f"{start}-{start + len(part) - 1}",
                "n": len(part),
                "classifier_blocked": blocked,
                "topics": {t: sum(t in w for w in words) for t in TOPICS},
            }
        )
    result = {"file": COCO, "chunk": CHUNK, "chunks": chunks}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coco_topic_shift.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# COCO-30k by row chunk: classifier blocks and topics",
        "",
        "Rows < 20,000 are the issue's training rows, rows >= 20,000 its evaluation rows. Captions naming each word:",
        "",
        "| rows | classifier blocked | " + " | ".join(TOPICS) + " |",
        "|---|---:|" + "---:|" * len(TOPICS),
    ]
    for c in chunks:
        rate = f"{c['classifier_blocked']} ({100 * c['classifier_blocked'] / c['n']:.2f} %)"
        lines.append(f"| {c['rows']} | {rate} | " + " | ".join(str(c["topics"][t]) for t in TOPICS) + " |")
    (args.out / "coco_topic_shift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
