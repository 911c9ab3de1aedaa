"""Paired bootstrap of two evaluation folders of the same task and items: is A's primary metric above B's?

    python scripts/paired_bootstrap.py runs/e2e-qlora-keep/eval-test-limit100 results/qlora/e2e-smollm2-135m-nf4 \
        --source ../shared/data/e2e --limit 100

Each folder holds what ``superlora evaluate`` wrote (E2E: outputs.tsv). The same resampling as the study's
comparisons (``evaluation/bootstrap.py``: 2,000 resamples of the test items, E2E BLEU from summed n-gram counts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from superlora.config import load_config
from superlora.evaluation.bootstrap import paired_bootstrap
from superlora.tasks import get_task
from superlora.training.config import TrainConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="evaluation folder A")
    parser.add_argument("b", type=Path, help="evaluation folder B")
    parser.add_argument("--task", default="e2e")
    parser.add_argument("--source", default="../shared/data/e2e", help="the task's data folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="the first N items, as both were evaluated")
    args = parser.parse_args()
    cfg = load_config(TrainConfig, None, [f"task.name={args.task}", f"task.source={args.source}"])
    task = get_task(cfg.task)
    items = task.eval_items(args.split, args.limit)
    values = []
    for folder in (args.a, args.b):
        outputs = task.read_outputs(folder, items)
        if outputs is None:
            raise SystemExit(f"{folder}: no outputs of these {len(items)} {args.split} items")
        values.append(task.item_values(items, outputs))
    (a, statistic), (b, _) = values
    c = paired_bootstrap(a, b, statistic)
    result = {
        "a": str(args.a),
        "b": str(args.b),
        "metric": task.primary.name,
        "items": len(items),
        "a_value": statistic(a),
        "b_value": statistic(b),
        "delta": c.delta,
        "ci95": [c.ci_low, c.ci_high],
        "p_value": c.p_value,
        "resamples": c.resamples,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
