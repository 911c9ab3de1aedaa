"""Correct the training time and tokens of resumed runs whose summary counted only the last piece.

Summaries written before 2026-12-02 (no ``time_and_tokens_of`` field) timed a resumed run from the resume:
a run resumed at step 200 of 300 reported the last 100 steps' time. This adds the time and tokens the run's
log had reached at the resume step, as ``superlora train`` now does itself. Idempotent; prints each change.

    python scripts/resumed_train_time.py results/long/all/summary.json results/study-sst2/arms/*/train_summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from superlora.training.hf import logged_at
from superlora.training.rundir import write_json


def corrected(summary: dict, log: Path) -> dict | None:
    """The summary with every step's time and tokens, or None when there is nothing to correct."""
    start = summary.get("resumed_from_step")
    if not start or summary.get("time_and_tokens_of") == "all steps":
        return None
    train_s = summary["train_time_s"] + logged_at(log, start, "elapsed_s")
    tokens = summary["tokens"] + round(logged_at(log, start, "tokens"))
    return summary | {
        "time_and_tokens_of": "all steps",
        "train_time_s": round(train_s, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / train_s, 1),
    }


def main(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        summary = json.loads(path.read_text())
        log = path.parent / "log.jsonl"
        fixed = corrected(summary, log) if log.is_file() else None
        if fixed is None:
            print(f"{path}: nothing to correct")
            continue
        write_json(path, fixed)
        print(
            f"{path}: resumed at step {summary['resumed_from_step']}: train time {summary['train_time_s']:.0f} s "
            f"-> {fixed['train_time_s']:.0f} s, tokens {summary['tokens']:,} -> {fixed['tokens']:,}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
