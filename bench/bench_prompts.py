"""Prompt benchmark: the prompt cascade, the blocklist, the classifier and the PyPI baselines.

    python bench/bench_prompts.py --data ../shared/benchmarks

Same as ``t2iguard bench prompts`` (all its options pass through); writes
``bench/results/prompts/prompts.{json,md,html}`` and the figures next to them.
"""

from __future__ import annotations

import sys

from t2iguard.cli.main import main

if __name__ == "__main__":
    main(["bench", "prompts", *sys.argv[1:]])
