"""A fixed held-out text set for perplexity: test-split passages of the three tasks' data, never trained on."""

from __future__ import annotations

import json
from pathlib import Path

from superlora.errors import SuperloraError


def e2e(root: Path, count: int) -> list[str]:
    """The first human reference of each of the first ``count`` MRs of the official E2E test set."""
    from superlora.tasks.e2e.data import group_references, load_split

    if not (root / "e2e" / "original").is_dir():
        raise SuperloraError(f"E2E data not found: {root / 'e2e' / 'original'}")
    return [refs[0] for _, refs in group_references(load_split("test", "original", root / "e2e"))[:count]]


def _jsonl(path: Path, what: str, count: int, text) -> list[str]:
    """``text(record)`` of the first ``count`` records of a JSON-lines test file."""
    if not path.is_file():
        raise SuperloraError(f"{what} test set not found: {path}")
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(text(json.loads(line)))
            if len(out) == count:
                break
    return out


def gsm8k(root: Path, count: int) -> list[str]:
    """GSM8K test problems with their worked answers (human turn, then the model turn)."""
    path = root / "gsm8k" / "test.sharegpt.jsonl"
    return _jsonl(path, "GSM8K", count, lambda r: "\n".join(turn["value"] for turn in r["conversations"]))


def dialogsum(root: Path, count: int) -> list[str]:
    """DialogSum test dialogues (CC BY-NC-SA 4.0: read from ../shared, never copied)."""
    return _jsonl(root / "dialogsum" / "test.jsonl", "DialogSum", count, lambda r: r["dialogue"])


def passages(root: str | Path, per_source: int) -> dict[str, list[str]]:
    """``per_source`` passages from each of E2E, GSM8K and DialogSum under ``root`` (``../shared/data``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SuperloraError(f"--data: folder not found: {root}")
    return {"e2e": e2e(root, per_source), "gsm8k": gsm8k(root, per_source), "dialogsum": dialogsum(root, per_source)}
