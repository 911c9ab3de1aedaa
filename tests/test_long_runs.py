"""scripts/long_runs.py: the README's long-runs table comes from the run folders, in-progress runs included."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LONG = ROOT / "results" / "long" / "all"


def _script():
    spec = importlib.util.spec_from_file_location("long_runs", ROOT / "scripts" / "long_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scored_run(folder: Path, outputs: Path, bleu: float) -> None:
    """A finished run: the committed long run's recipe and summary, with ``outputs`` as its test decode."""
    (folder / "eval-test").mkdir(parents=True)
    for name in ("config.yaml", "summary.json", "run.json"):
        shutil.copy(LONG / name, folder / name)
    shutil.copy(outputs, folder / "eval-test" / "outputs.tsv")
    scores = json.loads((LONG / "eval-test" / "scores.json").read_text())
    scores["metrics"]["BLEU"] = bleu
    (folder / "eval-test" / "scores.json").write_text(json.dumps(scores))


@pytest.mark.real
def test_the_table_shows_every_run_and_the_bootstrap_against_all_blocks(tmp_path, e2e_dir):
    long_runs = _script()
    study = ROOT / "results" / "study" / "arms" / "superweights-s42"
    _scored_run(tmp_path / "all", LONG / "eval-test" / "outputs.tsv", 0.6002)
    _scored_run(tmp_path / "weaker", study / "outputs.tsv", 0.4511)
    training = tmp_path / "still-training"
    (training / "checkpoints" / "checkpoint-400").mkdir(parents=True)
    (training / "checkpoints" / "checkpoint-1200").mkdir()
    shutil.copy(LONG / "config.yaml", training / "config.yaml")

    rows = [long_runs.run_row(p) for p in sorted(tmp_path.iterdir())]
    text = long_runs.table(sorted(rows, key=lambda r: r["name"] != "all"), str(e2e_dir))

    lines = text.splitlines()
    assert lines[2].startswith("| all | cleaned E2E | all 30 | r=4 | 230,400 | 4,191 |")
    assert "| 0.6002 |" in lines[2]
    assert "| still-training |" in text and "training (checkpoint 1,200)" in text and "not decoded yet" in text
    comparison = next(line for line in lines if line.startswith("- weaker against all"))
    delta = float(comparison.split("BLEU ")[1].split(",")[0])
    # the bootstrap's delta is the corpus BLEU difference of the two decodes (the committed scores: 0.4511 - 0.6002)
    assert delta == pytest.approx(0.4511 - 0.6002, abs=5e-4)
    assert "p = 0.000" in comparison


def test_the_readme_changes_only_between_its_markers(tmp_path):
    long_runs = _script()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{long_runs.BEGIN}\nold table\n{long_runs.END}\nafter\n")
    long_runs.write_readme(readme, "| new |")
    assert readme.read_text() == f"before\n{long_runs.BEGIN}\n| new |\n{long_runs.END}\nafter\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no long-runs markers"):
        long_runs.write_readme(readme, "| new |")
    assert readme.read_text() == "no markers here\n"
