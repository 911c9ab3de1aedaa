"""Run the study arm by arm: train (resumable), evaluate, then tabulate and plot everything.

An arm is finished when ``<out>/arms/<arm>/scores.json`` exists; a killed study re-run with
the same command skips finished arms and resumes a half-trained one from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from superlora.config import to_dict
from superlora.errors import SuperloraError
from superlora.evaluation.decode import set_decode_threads
from superlora.study.arms import Arm, arm_train_config, equal_time_arms, study_arms
from superlora.study.config import StudyConfig
from superlora.study.report import write_report


def _say(text: str) -> None:
    print(f"superlora study: {text}", flush=True)


RECIPE_MARK = "# written by superlora study: the arm's train recipe (rewritten on every run)\n"


def _recipe_path(cfg: StudyConfig, arm: str) -> Path:
    return Path(cfg.runs_dir) / f"{arm}.yaml"


def _is_study_recipe(path: Path, run: Path) -> bool:
    """Whether ``path`` is the recipe a study wrote for ``run`` (signed, or an older unsigned one naming it)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return text.startswith(RECIPE_MARK) or (isinstance(data, dict) and data.get("output_dir") == str(run))


def check_arm_run(cfg: StudyConfig, arm: str) -> None:
    """Refuse an arm whose run folder or recipe is something superlora did not write: never delete the user's files.

    The trainer creates a run folder in one rename with its config.yaml, so a folder with
    files but no config.yaml was not made by a run; an empty one holds nothing to lose.
    """
    run = Path(cfg.runs_dir) / arm
    if run.exists() and not run.is_dir():
        raise SuperloraError(f"{run} exists and is not a folder; move it away or set runs_dir=... to another folder")
    if run.is_dir() and not (run / "config.yaml").is_file() and any(run.iterdir()):
        raise SuperloraError(
            f"{run} is not a superlora run folder (no config.yaml) but has files; "
            "move it away or set runs_dir=... to another folder (it is left untouched)"
        )
    recipe = _recipe_path(cfg, arm)
    if recipe.exists() and not _is_study_recipe(recipe, run):
        raise SuperloraError(
            f"{recipe} was not written by superlora study; move it away or set runs_dir=... to another folder"
        )


def train_arm(cfg: StudyConfig, arm: Arm) -> Path:
    """Train one arm (or finish it after an interruption) in a fresh process; return its run directory.

    A fresh process per arm, so that each arm's wall time and peak memory are its own: in one long-lived
    process the heap an earlier arm (or a decode) grew stays resident and inflates the next arm's peak.
    """
    run = Path(cfg.runs_dir) / arm.key
    if (run / "summary.json").is_file() and (run / "adapter").is_dir():
        _say(f"{arm.key}: already trained ({run})")
        return run
    check_arm_run(cfg, arm.key)  # again: the folder may have appeared since run_study checked
    resume = (run / "config.yaml").is_file()
    train_cfg = arm_train_config(cfg, arm, run)
    recipe = _recipe_path(cfg, arm.key)
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(RECIPE_MARK + yaml.safe_dump(to_dict(train_cfg), sort_keys=False))
    _say(f"{arm.key}: {'resuming' if resume else 'training'} in {run}")
    command = [sys.executable, "-m", "superlora", "train", str(recipe), *(["--resume"] if resume else [])]
    code = subprocess.run(command).returncode
    if code != 0:
        raise SuperloraError(f"training arm '{arm.key}' failed (exit code {code}); its output is above")
    return run


def evaluate_arm(cfg: StudyConfig, arm: str, run: Path | None) -> dict:
    """Decode the task's evaluation items with the arm's model and score them (``evaluation.evaluate``)."""
    from superlora.evaluation.decode import attach_adapter
    from superlora.evaluation.evaluate import evaluate
    from superlora.models import load_model
    from superlora.tasks import get_task
    from superlora.tasks.base import ScoreOptions
    from superlora.training.rundir import open_run

    e = cfg.eval
    task = get_task(cfg.train.task)
    items = task.eval_items(e.split, e.limit)
    loaded = load_model(cfg.train.model, trust_remote_code=cfg.train.trust_remote_code, **task.model_kwargs())
    model = attach_adapter(loaded.model, run / "adapter") if run is not None else loaded.model
    decode = e.decode.resolved(task.decode_defaults())
    template = open_run(run).template() if run is not None else task.template()  # as the arm was trained
    threads = set_decode_threads(e.threads)
    if task.head == "classifier":
        _say(f"{arm}: classifying {len(items)} {e.split} items (fp32, {threads})")
    else:
        _say(f"{arm}: decoding {len(items)} {e.split} items (beam {decode.num_beams}, fp32, {threads})")
    report, outputs = evaluate(
        task,
        model,
        loaded.tokenizer,
        items,
        decode,
        template,
        options=ScoreOptions(e.python_nist, e.skip_meteor),
        max_length=e.max_length,
    )
    arm_dir = Path(cfg.out) / "arms" / arm
    arm_dir.mkdir(parents=True, exist_ok=True)
    task.write_outputs(arm_dir, items, outputs, report)
    return {"arm": arm, "task": task.name, **{k: v for k, v in report.items() if not k.startswith("_")}}


def identify_once(cfg: StudyConfig) -> StudyConfig:
    """Pin the super weights every arm uses: the given file, else identify now into ``<out>``."""
    if cfg.train.superweights:
        if not Path(cfg.train.superweights).is_file():
            raise SuperloraError(f"train.superweights: file not found: {cfg.train.superweights}")
        return cfg
    path = Path(cfg.out) / "superweights.json"
    if not path.is_file():
        from superlora.identify import IdentifyConfig, identify, write_outputs
        from superlora.identify.report import format_table
        from superlora.models import load_model

        _say(f"identifying the super weights of {cfg.train.model}")
        loaded = load_model(cfg.train.model, trust_remote_code=cfg.train.trust_remote_code)
        id_cfg = IdentifyConfig(model=cfg.train.model, plots=False)
        report = write_outputs(loaded, id_cfg, identify(loaded, id_cfg), Path(cfg.out))
        print(format_table(report), flush=True)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, superweights=str(path)))


def _arms_to_train(cfg: StudyConfig) -> list[str]:
    """The keys of the arms this run may still train: not ``base``, not already scored."""
    arms = Path(cfg.out) / "arms"
    every = [*study_arms(cfg), *equal_time_arms(cfg)]
    return [a.key for a in every if a.kind != "base" and not (arms / a.key / "scores.json").is_file()]


def run_arm(cfg: StudyConfig, arm: Arm, task) -> None:
    """Train (or resume), score and file one arm; nothing if its scores are there (then it is done)."""
    arm_dir = Path(cfg.out) / "arms" / arm.key
    if (arm_dir / "scores.json").is_file():
        _say(f"{arm.key}: done already ({arm_dir / 'scores.json'})")
        return
    run = None if arm.kind == "base" else train_arm(cfg, arm)
    scores = evaluate_arm(cfg, arm.key, run) | {"kind": arm.kind, "seed": arm.seed}
    if run is not None:  # keep what the report needs next to the scores: runs/ is not committed
        shutil.copy(run / "summary.json", arm_dir / "train_summary.json")
        shutil.copy(run / "log.jsonl", arm_dir / "log.jsonl")
        if (run / "eval.jsonl").is_file():  # the held-out loss while training (tasks with held-out data)
            shutil.copy(run / "eval.jsonl", arm_dir / "eval.jsonl")
    if cfg.drift and arm.kind in ("base", "all", "superweights", "superweights-matched") and arm.steps is None:
        from superlora.study.drift import arm_drift

        _say(f"{arm.key}: identifying the super weights of the merged model")
        (arm_dir / "drift.json").write_text(json.dumps(arm_drift(cfg, run), indent=2) + "\n")
    tmp = arm_dir / "scores.json.tmp"
    tmp.write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(arm_dir / "scores.json")  # last: marks the arm finished
    _say(f"{arm.key}: " + ", ".join(line.strip() for line in task.score_lines(scores)))
    if cfg.commit:
        commit_arm(arm_dir, arm.key)


def commit_arm(arm_dir: Path, key: str) -> None:
    """``git add`` + ``git commit`` of one finished arm's results, so an interrupted study resumes from git."""
    commit_path(arm_dir, f"study: arm {key} scored ({arm_dir})")


def commit_path(path: Path, message: str) -> None:
    """``git add`` + ``git commit`` of ``path`` alone (anything else staged stays out of the commit)."""
    where = path if path.is_dir() else path.parent
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=where)
    if top.returncode != 0:
        raise SuperloraError(f"commit: true, but {path} is not inside a git repository")
    subprocess.run(["git", "add", "--", str(path.resolve())], check=True, cwd=top.stdout.strip())
    done = subprocess.run(["git", "commit", "-q", "-m", message, "--", str(path.resolve())], cwd=top.stdout.strip())
    if done.returncode != 0:
        _say(f"git commit failed (exit {done.returncode}); {path} stays uncommitted")


def measure_once(cfg: StudyConfig) -> None:
    """The side-by-side step times the equal-time arms' step counts come from: measured once, committed."""
    from superlora.study import timing

    if timing.read_step_times(cfg) is not None:
        return
    seeds = [a.seed for a in study_arms(cfg) if a.kind == "all"]
    if cfg.equal_time is not True:
        seeds = [s for s in seeds if s in cfg.equal_time]
    seed = next((s for s in seeds if timing.ready(cfg, s)), None)
    if seed is None:
        _say("equal time: no seed has all its equal-step arms finished; no step times measured")
        return
    _say(f"equal time: measuring the step time of each arm's layout side by side (seed {seed})")
    written = timing.write_step_times(cfg, seed)
    for kind, m in timing.read_step_times(cfg)["kinds"].items():
        _say(f"equal time: {kind}: {m['seconds_per_step']:.3f} s/step, {m['ratio_to_all']:.2f}x the all-block arm's")
    if cfg.commit:
        commit_path(written, "study: side-by-side step times (the equal-time arms' step counts)")


def run_study(cfg: StudyConfig) -> dict:
    """Every arm in order, skipping finished ones; then the tables, plots and README section."""
    out = Path(cfg.out)
    for arm in _arms_to_train(cfg):  # first, before an identification or a model load
        check_arm_run(cfg, arm)
    (out / "arms").mkdir(parents=True, exist_ok=True)
    if any(arm != "base" and arm != "all" for arm in cfg.arms):  # they need the super-weight blocks
        cfg = identify_once(cfg)
    (out / "study.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    started = time.perf_counter()
    from superlora.tasks import get_task

    task = get_task(cfg.train.task)
    task.check()
    for arm in study_arms(cfg):
        run_arm(cfg, arm, task)
    if cfg.equal_time:
        measure_once(cfg)
    for arm in equal_time_arms(cfg):  # known once the side-by-side step times are measured
        run_arm(cfg, arm, task)
    report = write_report(cfg)
    _say(f"finished in {time.perf_counter() - started:.0f} s; results in {out}")
    return report
