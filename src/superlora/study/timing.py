"""Side-by-side step times of the study's arms: what the equal-time view's step counts and time ratios rest on.

A 20-minute arm's wall-clock measures its neighbours as much as itself: a job on the other core shares the L3
cache and the memory bandwidth, so an arm with a shorter backward pass can take longer per step than the
all-block arm trained an hour before it. So the ratios come from the bench's measurement instead: every arm's
layout (its blocks, rank and targets) trains a few steps on the same batches, the arms interleaved over repeats
in one process, and each arm's median seconds per step is divided by the all-block arm's.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from superlora.errors import SuperloraError
from superlora.study.arms import Arm, arm_train_config, read_arm_summary, study_arms
from superlora.study.config import StudyConfig

FILE = "step_times.json"


def path(cfg: StudyConfig) -> Path:
    return Path(cfg.out) / FILE


def read_step_times(cfg: StudyConfig) -> dict[str, Any] | None:
    """The committed measurement (``<out>/step_times.json``), or None before it is made."""
    p = path(cfg)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def ratios(cfg: StudyConfig) -> dict[str, float]:
    """Kind of arm -> its seconds per step over the all-block arm's (empty before the measurement)."""
    measured = read_step_times(cfg)
    return {kind: m["ratio_to_all"] for kind, m in (measured or {}).get("kinds", {}).items()}


def timed_arms(cfg: StudyConfig, seed: int) -> list[Arm]:
    """The arms of ``seed`` whose layout is timed: every trained kind with LoRA (``head`` has no blocks to time)."""
    return [a for a in study_arms(cfg) if a.seed == seed and a.kind not in ("base", "head")]


def ready(cfg: StudyConfig, seed: int) -> bool:
    """Whether every timed arm of ``seed`` has finished its equal-step run (its blocks are known then)."""
    arms = timed_arms(cfg, seed)
    return any(a.kind == "all" for a in arms) and all(read_arm_summary(cfg, a.key) for a in arms)


def measure_step_times(cfg: StudyConfig, seed: int) -> dict:
    """Time ``step_timing.steps`` optimiser steps of each arm's layout of ``seed`` (after its warmup steps),
    interleaved ``step_timing.repeats`` times on the same batches; the medians and their ratios to all blocks."""
    import torch

    from superlora.bench.arms import Arm as BenchArm
    from superlora.bench.measure import Context, run_arm
    from superlora.bench.report import machine
    from superlora.bench.runner import bench_examples, decide_auto, decided_speed
    from superlora.data.collate import TokenizedRows
    from superlora.models import load_model
    from superlora.tasks import get_task
    from superlora.training.layers import default_targets, target_module_names

    if not ready(cfg, seed):
        raise SuperloraError(f"step times of seed {seed}: its equal-step arms are not all finished yet")
    train, steps, warmup, repeats = cfg.train, cfg.step_timing.steps, cfg.step_timing.warmup, cfg.step_timing.repeats
    loaded = load_model(train.model, trust_remote_code=train.trust_remote_code, **get_task(train.task).model_kwargs())
    per_step = train.optim.batch_size * train.optim.grad_accum
    need = (warmup + steps) * per_step
    rows, lengths = bench_examples(train, loaded.tokenizer, need, pool=need)
    batch_rows = train.optim.batch_size * int(statistics.median(lengths))
    decided = decided_speed(train, decide_auto(train, loaded, batch_rows))
    default_threads = torch.get_num_threads()
    contexts: dict[str, tuple[Arm, Context]] = {}
    for arm in timed_arms(cfg, seed):
        arm_cfg = arm_train_config(cfg, arm, Path(cfg.runs_dir) / arm.key)  # (the bench trains in a temporary one)
        blocks = read_arm_summary(cfg, arm.key)["blocks"]  # the blocks the arm trained (probe, random: drawn)
        targets = target_module_names(
            loaded.model, loaded.arch, blocks, arm_cfg.lora.targets or default_targets(loaded.arch)
        )
        ctx = Context(arm_cfg, TokenizedRows(rows), blocks, targets, default_threads, steps, warmup, batch_rows)
        contexts[arm.key] = (arm, ctx)
    del loaded
    runs: dict[str, list[float]] = {key: [] for key in contexts}
    keys = list(contexts)
    for repeat in range(repeats):
        for key in keys[repeat % len(keys) :] + keys[: repeat % len(keys)]:  # a new order each repeat
            arm, ctx = contexts[key]
            t0 = time.perf_counter()
            measured = run_arm(BenchArm("recipe", key, decided), ctx)
            runs[key].append(measured["seconds"] / len(measured["step_s"]))
            print(
                f"superlora study: step times [{repeat + 1}/{repeats}] {key:28s} {runs[key][-1]:6.3f} s/step "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    median = {key: statistics.median(values) for key, values in runs.items()}
    reference = next(key for key in keys if contexts[key][0].kind == "all")
    kinds = {
        contexts[key][0].kind: {
            "arm": key,
            "blocks": contexts[key][1].blocks,
            "lora_r": contexts[key][1].cfg.lora.r,
            "seconds_per_step": round(median[key], 4),
            "runs": [round(v, 4) for v in runs[key]],
            "ratio_to_all": round(median[key] / median[reference], 4),
        }
        for key in keys
    }
    return {
        "what": "median seconds per optimiser step of each arm's layout, same batches, arms interleaved",
        "seed": seed,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "batch_size": train.optim.batch_size,
        "speed": {k: decided[k] for k in ("bf16", "threads", "attention")},
        "machine": machine(),
        "kinds": kinds,
    }


def write_step_times(cfg: StudyConfig, seed: int) -> Path:
    """Measure and write ``<out>/step_times.json`` atomically (its presence lists the equal-time arms)."""
    result = measure_step_times(cfg, seed)
    target = path(cfg)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target
