"""``superlora study`` on a tiny model: every arm trained and scored alike, resumable, reported from files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from superlora.config import load_config
from superlora.study.config import StudyConfig
from superlora.study.report import BEGIN, END, findings, text_table
from superlora.study.runner import run_study
from superlora.tasks import get_task
from test_training import superweights_json, write_e2e


def write_test_split(folder: Path) -> None:
    """original/testset_w_refs.csv with three MRs, two references each, words the tiny tokenizer knows."""
    (folder / "original").mkdir(parents=True, exist_ok=True)
    with open(folder / "original" / "testset_w_refs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["mr", "ref"])
        for name in ("the pub", "paris", "the restaurant"):
            mr = f"name[{name}], eatType[pub], near[france]"
            writer.writerow([mr, f"{name} is a cheap pub near france"])
            writer.writerow([mr, f"near france is {name} a pub"])


@pytest.fixture
def study_cfg(tmp_path, tiny_model_dir):
    data = write_e2e(tmp_path / "e2e")
    write_test_split(data)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    items = [
        f"train.model={tiny_model_dir('llama')}",
        f"train.task.source={data}",
        "train.data.max_length=48",
        "train.optim.max_steps=3",
        "train.optim.batch_size=4",
        "train.optim.lr=0.01",
        "train.log_every=1",
        f"train.superweights={superweights_json(tmp_path / 'sw.json')}",
        "eval.decode.num_beams=1",
        "eval.decode.max_new_tokens=8",
        "eval.decode.batch_size=2",
        "eval.skip_meteor=true",  # Java start-ups are slow; scoring itself is tested in test_scoring.py
        "arms=[base, all, superweights, last]",
        f"runs_dir={tmp_path / 'runs'}",
        f"out={tmp_path / 'results'}",
        f"readme={readme}",
    ]
    return load_config(StudyConfig, None, items)


def test_study_runs_every_arm_reports_and_resumes_arm_by_arm(study_cfg):
    report = run_study(study_cfg)
    out = Path(study_cfg.out)
    rows = {r["arm"]: r for r in report["arms"]}
    assert list(rows) == ["base", "all", "superweights", "last"]
    assert rows["base"]["steps"] == 0 and rows["base"]["trainable_params"] == 0
    assert rows["superweights"]["blocks"] == [1] and rows["last"]["blocks"] == [2]  # same count, fair control
    assert rows["all"]["blocks"] == [0, 1, 2]
    assert rows["all"]["trainable_params"] == 3 * rows["superweights"]["trainable_params"]
    for r in rows.values():
        assert r["outputs"] == 3 and 0 <= r["BLEU"] <= 1 and r["SER"] >= 0 and r["METEOR"] is None
    for name in ("study.json", "results.md", "loss_curves.png", "quality_vs_time.png", "study.yaml"):
        assert (out / name).is_file(), name
    assert (out / "arms" / "all" / "outputs.tsv").read_text().count("\n") == 4  # header + 3 MRs
    readme = Path(study_cfg.readme).read_text()
    assert "old" not in readme and "| superweights | 1 |" in readme and readme.endswith("after\n")
    task = get_task(study_cfg.train.task)
    said = findings(report["arms"], task)
    assert any(line.startswith("Best BLEU: ") for line in said)
    rank = next(line for line in said if "same number of adapted blocks" in line)
    assert "superweights (1)" in rank and "last (2)" in rank and "rank " in rank and " of 2." in rank
    assert all(f"- {line}" in readme for line in said)  # the README states what the rows say
    table = text_table(report["arms"], task).splitlines()
    assert table[0].split()[:2] == ["arm", "blocks"] and len(table) == 2 + 4

    # killed while evaluating `last`: a re-run redoes only that arm
    finished = {arm: (out / "arms" / arm / "scores.json").stat().st_mtime_ns for arm in study_cfg.arms}
    (out / "arms" / "last" / "scores.json").unlink()
    run_study(study_cfg)
    again = {arm: (out / "arms" / arm / "scores.json").stat().st_mtime_ns for arm in study_cfg.arms}
    assert all(again[a] == finished[a] for a in ("base", "all", "superweights"))
    assert again["last"] != finished["last"]
    assert json.loads((out / "study.json").read_text())["arms"][-1]["arm"] == "last"


def test_unknown_arm_is_refused():
    from superlora.errors import SuperloraError

    with pytest.raises(SuperloraError, match="arms: unknown middle"):
        load_config(StudyConfig, None, ["arms=[base, middle]"])


def test_a_study_with_seeds_reports_mean_std_and_paired_bootstrap_tests(study_cfg):
    """Two seeds of all and superweights: a summary per kind and the superweights-vs-all test, in files."""
    import dataclasses

    from superlora.study.report import markers

    cfg = dataclasses.replace(study_cfg, arms=["base", "all", "superweights"], seeds=[1, 2])
    readme = Path(cfg.readme)
    readme.write_text("\n".join(markers(None, "answer")) + "\n" + readme.read_text())
    report = run_study(cfg)
    out = Path(cfg.out)
    assert [r["arm"] for r in report["arms"]] == ["base", "all-s1", "all-s2", "superweights-s1", "superweights-s2"]
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert kinds["all"]["seeds"] == 2 and kinds["base"]["seeds"] == 1
    bleus = [r["BLEU"] for r in report["arms"] if r["kind"] == "all"]
    assert kinds["all"]["BLEU"] == pytest.approx(sum(bleus) / 2)
    (comparison,) = report["comparisons"]
    assert comparison["arm"] == "superweights" and comparison["against"] == "all" and comparison["seeds"] == [2, 2]
    sw = [r["BLEU"] for r in report["arms"] if r["kind"] == "superweights"]
    assert comparison["delta"] == pytest.approx(sum(sw) / 2 - sum(bleus) / 2, abs=1e-9)
    assert comparison["ci_low"] <= comparison["delta"] <= comparison["ci_high"] and 0 <= comparison["p_value"] <= 1
    results = (out / "results.md").read_text()
    assert "| superweights | 2 |" in results and "| superweights | all | 2 vs 2 |" in results
    text = readme.read_text()
    assert "Differences in BLEU (paired bootstrap over the 3 test items" in text
    from superlora.machine import cpu_info

    assert "seeds 1, 2 (each trained arm once per seed)" in text and f"Trained on {cpu_info().label()}." in text
    said = text.split(markers(None, "answer")[0])[1].split(markers(None, "answer")[1])[0]
    assert said.strip().startswith("**LoRA only in the super-weight blocks") and "2 seeds" in said


def test_one_process_per_seed_splits_a_study_and_the_last_reports_every_arm(study_cfg):
    """only_seeds: each process trains its seeds' arms (the base once); the report covers all that is there."""
    import dataclasses

    cfg = dataclasses.replace(study_cfg, arms=["base", "all"], seeds=[1, 2])
    out = Path(cfg.out) / "arms"
    run_study(dataclasses.replace(cfg, only_seeds=[2]))
    assert sorted(p.name for p in out.iterdir()) == ["all-s2", "base"]
    from superlora.cli import main

    same = {"arms": "[base, all]", "seeds": "[1, 2]", "out": cfg.out, "readme": cfg.readme}
    same |= {"train.model": cfg.train.model, "train.task.source": cfg.train.task.source}
    assert main(["study", *(f"{k}={v}" for k, v in same.items()), "--report-only"]) == 0  # trains nothing
    assert sorted(p.name for p in out.iterdir()) == ["all-s2", "base"]
    assert [r["arm"] for r in json.loads((Path(cfg.out) / "study.json").read_text())["arms"]] == ["base", "all-s2"]
    report = run_study(dataclasses.replace(cfg, only_seeds=[1]))
    assert [r["arm"] for r in report["arms"]] == ["base", "all-s1", "all-s2"]


def test_equal_time_arms_drift_and_per_arm_commits(study_cfg, tmp_path):
    """equal_time: superweights again with the all-block arm's training time; drift: the merged models
    identified again; commit: each scored arm is a git commit, so a fresh clone resumes from it."""
    import dataclasses
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for key, value in (("user.email", "t@t"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(tmp_path), "config", key, value], check=True)
    from superlora.study.config import StepTimingConfig

    cfg = dataclasses.replace(
        study_cfg,
        arms=["base", "all", "superweights"],
        equal_time=True,
        equal_time_min_gain=0.0,  # a tiny model's 2-block arm may step as fast as all blocks: train it anyway
        drift=True,
        commit=True,
        step_timing=StepTimingConfig(steps=2, warmup=1, repeats=2),
    )
    report = run_study(cfg)
    out = Path(cfg.out)
    rows = {r["arm"]: r for r in report["arms"]}
    assert list(rows) == ["base", "all", "superweights", "superweights@time"]
    timed, full = rows["superweights@time"], rows["all"]
    step_times = json.loads((out / "step_times.json").read_text())
    ratio = step_times["kinds"]["superweights"]["ratio_to_all"]
    assert step_times["kinds"]["all"]["ratio_to_all"] == 1.0 and len(step_times["kinds"]["superweights"]["runs"]) == 2
    assert timed["steps"] == max(1, round(full["steps"] / ratio))
    assert timed["relative_time"] == pytest.approx(timed["steps"] * ratio / full["steps"])
    assert {(c["arm"], c["against"]) for c in report["comparisons"]} >= {("superweights@time", "all")}
    drift = report["drift"]
    assert set(drift) == {"base", "all", "superweights"}  # equal-time arms are not re-identified
    assert all({"proven", "same_as_base", "ppl", "residual_peak"} <= set(d) for d in drift.values())
    results = (out / "results.md").read_text()
    assert "| superweights |" in results and "same as base" in results
    equal_time = results[results.index(f"Equal time, seed {full['seed']}:") :].splitlines()  # vs all
    assert equal_time[4].startswith(f"| all | {full['steps']:,} | 1.00 |")
    assert equal_time[5].startswith(f"| superweights@time | {timed['steps']:,} |")
    log = subprocess.run(["git", "-C", str(tmp_path), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert [line for line in log.splitlines() if line.startswith("study: arm")][::-1] == [
        f"study: arm {key} scored ({out / 'arms' / key})" for key in rows
    ]
    assert "study: side-by-side step times (the equal-time arms' step counts)" in log


def test_the_quality_plot_colours_kinds_and_marks_equal_time_arms_when_there_are_many(tmp_path, monkeypatch):
    """34 arms' names overlap: many points get a colour per kind and a legend (equal time as its own entry)."""
    import matplotlib.pyplot as plt

    from superlora.study.report import plot_quality_vs_time

    task = get_task(load_config(StudyConfig, None, []).train.task)
    rows = [
        {"arm": f"{kind}-s{seed}", "kind": kind, "steps": 500, "relative_time": 1.0 - i / 20, "BLEU": 0.5, "SER": 0.2}
        for i, kind in enumerate(["all", "superweights", "random", "last"])
        for seed in (42, 43, 44)
    ] + [{"arm": "last-s42@time", "kind": "last@time", "steps": 1004, "relative_time": 1.0, "BLEU": 0.4, "SER": 0.4}]
    saved = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    plot_quality_vs_time(rows, tmp_path / "q.png", task)
    (legend,) = saved[0].legends
    assert [t.get_text() for t in legend.get_texts()] == ["all", "superweights", "random", "last", "equal time"]
    assert len(saved[0].axes) == 2 and not any(ax.texts for ax in saved[0].axes)  # no names: they would overlap
    assert len(saved[0].axes[0].collections) == len(rows)  # every arm is still a point
