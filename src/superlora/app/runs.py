"""Training run folders for the Runs tab, read tolerantly: a run still training has a half-written
log line and no summary yet, and the page must show what there is rather than fail."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from superlora.training.rundir import open_run

MAX_DEPTH = 3  # runs/<group>/<run>/ is the deepest layout the training recipes use


@dataclass
class RunInfo:
    """What one run folder holds (None where a file is missing or unreadable)."""

    name: str  # path relative to the runs folder: what the browser selects by
    path: Path
    config_text: str
    config: dict | None
    summary: dict | None
    log: list[dict]
    has_adapter: bool


def find_runs(root: Path | None) -> dict[str, Path]:
    """Run folders under ``root`` (folders holding a config.yaml), by their relative name."""
    if root is None or not root.is_dir():
        return {}
    found: dict[str, Path] = {}

    def walk(folder: Path, depth: int) -> None:
        if (folder / "config.yaml").is_file():
            found[folder.relative_to(root).as_posix() if folder != root else folder.name] = folder
            return
        if depth >= MAX_DEPTH:
            return
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            walk(child, depth + 1)

    walk(root, 0)
    return found


def read_run(name: str, path: Path) -> RunInfo:
    """The runs table's view of a run folder, read tolerantly by the one reader (``rundir.open_run``)."""
    folder = open_run(path, strict=False)
    return RunInfo(
        name=name,
        path=path,
        config_text=folder.config_text,
        config=folder.config,
        summary=folder.summary,
        log=folder.log,
        has_adapter=folder.adapter is not None,
    )


TABLE_COLUMNS = ["run", "model", "layers", "blocks", "steps", "first loss", "last loss", "tokens/s", "adapter"]


def table_row(run: RunInfo, served: set[Path]) -> list:
    """One row of the runs table; 'adapter' says whether it exists and whether the app serves it."""
    config, summary = run.config or {}, run.summary or {}
    last = run.log[-1] if run.log else {}
    blocks = summary.get("blocks")
    adapter = "served" if run.path.resolve() in served else ("yes" if run.has_adapter else "no")
    return [
        run.name,
        str(config.get("model", "")),
        str(summary.get("layers", config.get("layers", ""))),
        len(blocks) if isinstance(blocks, list) else "",
        summary.get("steps", last.get("step", "")),
        _round(summary.get("first_loss", run.log[0].get("loss") if run.log else None)),
        _round(summary.get("final_loss", last.get("loss"))),
        summary.get("tokens_per_s", ""),
        adapter,
    ]


def _round(value) -> float | str:
    return round(float(value), 4) if isinstance(value, (int, float)) else ""
