"""Where a task's local data live: one folder (``task.source``, else an environment variable) holding a file
per split, found with the same one-line messages for every task."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from superlora.errors import SuperloraError


@dataclass(frozen=True)
class SplitFiles:
    """A dataset laid out as ``<folder>/<split><suffix>`` for each of ``splits``; ``what`` names it in messages."""

    what: str  # e.g. "SST-2"
    env: str  # the environment variable naming the folder when task.source does not
    splits: tuple[str, ...]
    suffix: str  # e.g. ".tsv"

    def folder(self, source: str | None) -> tuple[Path, str]:
        """The data folder and where it was named (``task.source``, else the environment), checked to exist."""
        if source is not None:
            root, named = Path(source).expanduser(), "task.source"
        elif os.environ.get(self.env):
            root, named = Path(os.environ[self.env]).expanduser(), f"${self.env}"
        else:
            files = [f"{split}{self.suffix}" for split in self.splits]
            holding = ", ".join(files[:-1]) + f" and {files[-1]}"
            raise SuperloraError(
                f"task.source: name the {self.what} data folder (task.source=DIR, holding {holding}) or set {self.env}"
            )
        if not root.is_dir():
            raise SuperloraError(f"{named}: {self.what} data folder not found: {root}")
        return root, named

    def file(self, split: str, source: str | None) -> Path:
        """The file of one split: an unknown split, a missing folder or file is one line."""
        if split not in self.splits:
            raise SuperloraError(f"unknown {self.what} split {split!r}; choose {', '.join(self.splits)}")
        path = self.folder(source)[0] / f"{split}{self.suffix}"
        if not path.is_file():
            raise SuperloraError(f"{self.what} {split} file not found: {path}")
        return path
