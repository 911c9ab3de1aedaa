"""Reading an ``identify`` report back: the proven super weights, for the recipes that use them.

Training (``layers: superweights``, ``keep_superweights``), the quantisation sweep and the study all read the same
``superweights.json``; one reader gives them one meaning of "proven" (an entry without the flag counts: older
reports listed only proven ones) and one error line for a file that is not such a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from superlora.errors import SuperloraError

_SHAPE = "{'super_weights': [{'block': int, 'out_channel': int, 'in_channel': int, ...}]}"


def _proven(path: Path, pick) -> tuple[list[Any], dict]:
    if not path.is_file():
        raise SuperloraError(f"superweights file not found: {path} (write one with `superlora identify`)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return [pick(e) for e in report["super_weights"] if e.get("proven", True)], report
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SuperloraError(f"{path}: not an identify report (expected {_SHAPE}; {exc!r})") from None


def proven_blocks(path: str | Path) -> tuple[list[int], dict]:
    """Sorted distinct blocks of the proven super weights in the report at ``path``, and the report."""
    blocks, report = _proven(Path(path), lambda e: int(e["block"]))
    return sorted(set(blocks)), report


def proven_coordinates(path: str | Path) -> tuple[str, ...]:
    """The proven super weights of the report at ``path`` as ``block:out:in``."""
    coords, _ = _proven(
        Path(path), lambda e: e.get("coordinate") or f"{int(e['block'])}:{int(e['out_channel'])}:{int(e['in_channel'])}"
    )
    return tuple(coords)
