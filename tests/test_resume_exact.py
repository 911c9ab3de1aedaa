"""Fault injection: training killed (SIGKILL) at random points across epochs resumes to the uninterrupted result.

Batches are grouped by length (every recipe's default) and the data's lengths vary, so a resume that drew
another batch order for its epoch would train other examples; dropout is on, so the RNG must be restored too.
Comparisons are exact: per-step losses and the adapter file's bytes.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superlora.config import load_config
from superlora.training.config import TrainConfig
from superlora.training.rundir import read_log

ROWS, BATCH = 20, 4  # 5 steps an epoch
STEPS = 12  # three epochs (the last one partial)


def write_varied_e2e(folder: Path) -> Path:
    """A tiny E2E folder whose references range from 4 to ~30 words, so grouping by length reorders batches."""
    (folder / "cleaned").mkdir(parents=True)
    words = ["the", "pub", "is", "a", "cheap", "restaurant", "near", "paris", "in", "france"]
    with open(folder / "cleaned" / "train-fixed.no-ol.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["mr", "ref", "fixed", "orig_mr"])
        for i in range(ROWS):
            mr = f"name[the pub], eatType[pub], near[{['paris', 'france'][i % 2]}]"
            ref = " ".join(words[(i + k) % len(words)] for k in range(4 + (i * 7) % 27))
            writer.writerow([mr, ref, 0, mr])
    return folder


@pytest.fixture
def recipe(tmp_path, tiny_model_dir):
    """Factory: the overrides of a three-epoch, length-grouped tiny run into ``tmp_path/name``."""
    data = write_varied_e2e(tmp_path / "e2e")
    model = tiny_model_dir("llama")

    def make(name: str, **extra) -> list[str]:
        args = {
            "model": str(model),
            "task.source": str(data),
            "data.max_length": 48,
            "optim.batch_size": BATCH,
            "optim.max_steps": STEPS,
            "optim.lr": 0.005,
            "log_every": 1,
            "checkpoint.every": 2,
            "checkpoint.keep": 2,
            "speed.group_by_length": True,
            "speed.threads": 1,
            "output_dir": str(tmp_path / name),
        } | extra
        return [f"{k}={v}" for k, v in args.items()]

    return make


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def train_cli(items: list[str], *more: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "superlora", "train", *items, *more]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)


def kill_after_step(items: list[str], step: int, delay: float) -> int | None:
    """Start (or resume) the run and SIGKILL it ``delay`` s after its log shows ``step`` (or the first step past
    what an earlier process logged); return the last step logged at the kill, None if the run finished first."""
    run = Path(load_config(TrainConfig, None, items).output_dir)
    resume = ["--resume"] if (run / "config.yaml").is_file() else []
    before = read_log(run / "log.jsonl")
    step = max(step, before[-1]["step"] + 1 if before else 0)  # lines of the killed process are not progress
    proc = subprocess.Popen(
        [sys.executable, "-m", "superlora", "train", *items, *resume],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        logged = read_log(run / "log.jsonl")
        if logged and logged[-1]["step"] >= step:
            time.sleep(delay)
            break
        time.sleep(0.001)
    if proc.poll() is not None:
        return None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = read_log(run / "log.jsonl")
    return logged[-1]["step"] if logged else 0


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(run / "log.jsonl")]


def test_sigkill_at_random_points_across_epochs_then_resume_equals_the_uninterrupted_run(recipe, tmp_path):
    """Three kills at seeded-random steps, each up to 40 ms after a step's log line: mid-step or mid-checkpoint."""
    reference = train_cli(recipe("reference"))
    assert reference.returncode == 0, reference.stderr[-2000:]

    rng = random.Random(13)
    kill_steps = sorted(rng.sample(range(2, STEPS - 1), 3))  # e.g. one per epoch
    items = recipe("killed")
    landed = [kill_after_step(items, step, delay=rng.uniform(0.0, 0.04)) for step in kill_steps]
    assert sum(s is not None and s < STEPS for s in landed) >= 2, f"the run finished before the kills: {landed}"
    done = train_cli(items, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]

    run, ref = tmp_path / "killed", tmp_path / "reference"
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))
    assert losses(run) == losses(ref), f"kills after steps {kill_steps}"
    adapter = "adapter/adapter_model.safetensors"
    assert (run / adapter).read_bytes() == (ref / adapter).read_bytes()


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [9, 11])  # resume from checkpoint-8 (epoch 2) and checkpoint-10 (epoch 3)
def test_a_resume_after_the_first_epoch_with_grouping_on_is_exact(recipe, tmp_path, crash_at):
    from transformers import TrainerCallback

    from superlora.training.trainer import train

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == crash_at:
                raise Crash

    train(load_config(TrainConfig, None, recipe("reference")))
    items = recipe("crashed")
    with pytest.raises(Crash):
        train(load_config(TrainConfig, None, items), callbacks=[CrashAt()])
    summary = train(load_config(TrainConfig, None, [*items, "resume=true"]))
    assert summary["resumed_from_step"] == crash_at - 1 and summary["steps"] == STEPS

    run, ref = tmp_path / "crashed", tmp_path / "reference"
    assert losses(run) == losses(ref)
    adapter = "adapter/adapter_model.safetensors"
    assert (run / adapter).read_bytes() == (ref / adapter).read_bytes()


def test_the_length_grouped_order_is_a_function_of_seed_and_epoch():
    from superlora.training.hf import EpochSeededLengthGroupedSampler

    lengths = [(i * 7) % 23 + 1 for i in range(40)]

    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochSeededLengthGroupedSampler(4, lengths, seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(42, 1) == order(42, 1)
    assert order(42, 0) != order(42, 1) != order(42, 2)  # each epoch is shuffled anew
    assert order(42, 1) != order(43, 1)
    assert sorted(order(42, 3)) == list(range(40))
