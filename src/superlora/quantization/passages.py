"""A fixed held-out text set for perplexity: test-split passages of the three tasks' data, never trained on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from superlora.errors import SuperloraError


def e2e(root: Path, count: int) -> list[str]:
    """Human references of the official E2E test set (one description per MR, the first ``count`` MRs)."""
    path = root / "e2e" / "original" / "testset_w_refs.csv"
    if not path.is_file():
        raise SuperloraError(f"E2E test set not found: {path}")
    seen: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            seen.setdefault(row["mr"], row["ref"])
            if len(seen) == count:
                break
    return list(seen.values())


def gsm8k(root: Path, count: int) -> list[str]:
    """GSM8K test problems with their worked answers (human turn, then the model turn)."""
    path = root / "gsm8k" / "test.sharegpt.jsonl"
    if not path.is_file():
        raise SuperloraError(f"GSM8K test set not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            turns = json.loads(line)["conversations"]
            out.append("\n".join(turn["value"] for turn in turns))
            if len(out) == count:
                break
    return out


def dialogsum(root: Path, count: int) -> list[str]:
    """DialogSum test dialogues (CC BY-NC-SA 4.0: read from ../shared, never copied)."""
    path = root / "dialogsum" / "test.jsonl"
    if not path.is_file():
        raise SuperloraError(f"DialogSum test set not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["dialogue"])
            if len(out) == count:
                break
    return out


def passages(root: str | Path, per_source: int) -> dict[str, list[str]]:
    """``per_source`` passages from each of E2E, GSM8K and DialogSum under ``root`` (``../shared/data``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SuperloraError(f"--data: folder not found: {root}")
    return {"e2e": e2e(root, per_source), "gsm8k": gsm8k(root, per_source), "dialogsum": dialogsum(root, per_source)}
