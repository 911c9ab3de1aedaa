"""Where ``identify --ablate`` saves its modified copy: never over a folder it did not write.

The copy is written into a hidden sibling and renamed into place, so a crash leaves the old
copy or the new one. Its ``superlora-cache.json`` says which command wrote it: only a folder
carrying that mark (or an empty one) is ever replaced; anything else is the user's and refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from superlora.errors import SuperloraError
from superlora.models.aliases import CACHE_MARKER
from superlora.training.rundir import write_atomic

WRITTEN_BY = "superlora identify --ablate"
_OLD_MARK_KEYS = {"coordinate", "scale", "ppl_before", "ppl_after"}  # what --ablate wrote before it signed


def _marker(folder: Path) -> dict | None:
    try:
        value = json.loads((folder / CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_ablate_output(folder: Path) -> bool:
    """Whether ``folder`` is a copy that ``identify --ablate`` saved (and so may replace)."""
    meta = _marker(folder)
    return meta is not None and (meta.get("written_by") == WRITTEN_BY or meta.keys() >= _OLD_MARK_KEYS)


def check_ablate_target(out_dir: Path) -> None:
    """Refuse an existing ``out_dir`` unless it is empty or an earlier ``--ablate`` copy: cheap, so run it first."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise SuperloraError(f"--out {out_dir} exists and is not a folder; choose another --out")
    if any(out_dir.iterdir()) and not is_ablate_output(out_dir):
        raise SuperloraError(
            f"--out {out_dir} already exists and was not written by `{WRITTEN_BY}`; "
            "move it away or choose another --out (it is left untouched)"
        )


def save_ablated(model: Any, tokenizer: Any, out_dir: Path, meta: dict) -> None:
    """Save model + tokenizer + signed marker into ``out_dir`` in one rename, replacing only our own copy."""
    check_ablate_target(out_dir)  # again: the folder may have appeared while the model loaded

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, **meta}, indent=2), encoding="utf-8")

    write_atomic(out_dir, fill)
