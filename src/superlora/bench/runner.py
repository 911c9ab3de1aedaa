"""The whole bench: examples, the recipe's auto choices, every arm interleaved over repeats."""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from typing import TYPE_CHECKING, Any

from superlora.bench.arms import QLORA_METHODS, qlora_arms, standard_arms
from superlora.bench.flops import FLOP_FORMULA, matmul_gflops
from superlora.bench.measure import Context, probe_peak_rss, run_arm
from superlora.bench.report import machine, median, summarise
from superlora.errors import SuperloraError

if TYPE_CHECKING:
    from superlora.models import LoadedModel
    from superlora.training.config import TrainConfig


def bench_examples(cfg: TrainConfig, tokenizer: Any, count: int, pool: int) -> tuple[list[dict], list[int]]:
    """``count`` examples drawn at random (seeded) from the task's training samples, tokenized, and the lengths
    of ``pool`` examples drawn the same way (at most all of them; for the full-epoch padding figures)."""
    from superlora.tasks import get_task

    task = get_task(cfg.task)
    template = task.template()
    examples = task.train_samples(cfg.data.limit)
    count = min(count, len(examples))
    chosen = random.Random(cfg.seed).sample(examples, max(count, min(pool, len(examples))))
    rows, _ = task.tokenize_all(tokenizer, template, chosen, cfg.data.max_length)
    return rows[:count], [len(r["input_ids"]) for r in rows]


def padding_share(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> float:
    """Share of padding over one epoch of ``lengths`` with random or length-grouped batches (HF's sampler)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = get_length_grouped_indices(lengths, batch_size, generator=generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    real = padded = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i : i + batch_size]]
        real, padded = real + sum(batch), padded + max(batch) * len(batch)
    return 1 - real / padded


def decide_auto(cfg: TrainConfig, loaded: LoadedModel, rows: int) -> dict[str, Any]:
    """The recipe's ``auto`` switches decided as a run would decide them here, and whether bf16 pays at all."""
    from superlora.machine import choose_bf16, choose_threads, model_shapes
    from superlora.training.plan import resolve_device
    from superlora.training.speed import resolve_attention

    device = resolve_device(cfg.device)
    threads = choose_threads(cfg.speed.threads)
    shapes = model_shapes(loaded.model, loaded.arch.blocks_path, rows)
    probe = choose_bf16("auto", shapes, threads.threads, device)
    recipe = probe if cfg.speed.bf16 == "auto" else choose_bf16(cfg.speed.bf16, shapes, threads.threads, device)
    attention, why = resolve_attention(cfg.speed.attention, recipe.enabled, device)
    return {
        "bf16": recipe.to_dict(),
        "bf16_probe": probe.to_dict(),
        "bf16_pays": probe.enabled,  # what auto would choose: the probe's verdict (or the GPU's support)
        "threads": {"threads": threads.threads, "reason": threads.reason},
        "attention": {"attention": attention, "reason": why},
    }


def decided_speed(cfg: TrainConfig, auto: dict[str, Any]) -> dict[str, Any]:
    """The recipe's speed section with each ``auto`` switch replaced by what ``decide_auto`` chose."""
    return dataclasses.asdict(cfg.speed) | {
        "bf16": auto["bf16"]["enabled"],
        "threads": auto["threads"]["threads"],
        "attention": auto["attention"]["attention"],
    }


def bench(
    cfg: TrainConfig,
    steps: int = 10,
    repeats: int = 3,
    warmup: int = 2,
    keys: list[str] | None = None,
    rss: str = "subprocess",
    qlora: bool = False,
) -> dict[str, Any]:
    """Run the arms (all, or ``keys``) interleaved over ``repeats``; return the result (setup, peaks, arms).

    ``rss``: "subprocess" measures each arm's peak RSS once more in a fresh process; "inprocess" reads the
    kernel's high-water mark, reset before each timed run (cheaper, but counts what earlier arms left behind).
    ``qlora`` adds the recipe on an nf4 and an int8 base (``bench.arms.qlora_arms``).
    """
    import torch

    from superlora.data.collate import TokenizedRows
    from superlora.models import load_model
    from superlora.tasks import get_task
    from superlora.training.layers import default_targets, select_blocks, target_module_names

    default_threads = torch.get_num_threads()
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, **get_task(cfg.task).model_kwargs())
    per_step = cfg.optim.batch_size * cfg.optim.grad_accum
    # 4x the examples the steps use: HF's sampler then sorts exactly the first (warmup + steps) batches' worth
    # (one mega-batch) by length, so grouped arms train on a random sample of lengths, as in a full run.
    rows, epoch_lengths = bench_examples(cfg, loaded.tokenizer, 4 * (warmup + steps) * per_step, pool=3200)
    if len(rows) < (warmup + steps) * per_step:
        raise SuperloraError(f"the bench needs {(warmup + steps) * per_step} examples; the data has {len(rows)}")
    batch_rows = cfg.optim.batch_size * int(statistics.median(epoch_lengths))
    auto = decide_auto(cfg, loaded, batch_rows)
    print(f"bench: {auto['bf16']['reason']}; threads {auto['threads']['threads']} ({auto['threads']['reason']})")
    recipe = dataclasses.asdict(cfg.speed)
    decided = decided_speed(cfg, auto)
    arms = standard_arms(recipe, decided, forced_bf16=auto["bf16_pays"] or "bf16" in (keys or []))
    if loaded.head == "classifier":  # a classification head has no token logits: no target-only arm
        arms = [a for a in arms if a.key not in ("target", "no-target")]
    if qlora or any(k in QLORA_METHODS for k in keys or []):
        arms += qlora_arms(decided)
    torch.set_num_threads(default_threads)
    if keys:
        unknown = sorted(set(keys) - {a.key for a in arms})
        if unknown:
            raise SuperloraError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(a.key for a in arms)}")
        arms = [a for a in arms if a.key == "ref" or a.key in keys]
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, **get_task(cfg.task).model_kwargs())
    blocks, _ = select_blocks(cfg, loaded)
    targets = target_module_names(loaded.model, loaded.arch, blocks, cfg.lora.targets or default_targets(loaded.arch))
    padding = {
        "examples": len(epoch_lengths),
        "random": padding_share(epoch_lengths, per_step, grouped=False, seed=cfg.seed),
        "grouped": padding_share(epoch_lengths, per_step, grouped=True, seed=cfg.seed),
    }
    ctx = Context(cfg, TokenizedRows(rows), blocks, targets, default_threads, steps, warmup, batch_rows)
    setup = {
        "model": cfg.model,
        "num_blocks": loaded.arch.num_blocks,
        "adapted_blocks": len(blocks),
        "lora_r": cfg.lora.r,
        "lora_targets": cfg.lora.targets or default_targets(loaded.arch),
        "batch_size": cfg.optim.batch_size,
        "grad_accum": cfg.optim.grad_accum,
        "examples": len(rows),
        "max_length": cfg.data.max_length,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "default_threads": default_threads,
        "rss_method": rss,
    }
    del loaded
    arm_threads = {decided["threads"] if a.speed["threads"] == "auto" else a.speed["threads"] for a in arms if a.speed}
    thread_counts = sorted({default_threads} | {t for t in arm_threads if t})
    runs: dict[str, list[dict]] = {a.key: [] for a in arms}
    peaks: list[dict[str, Any]] = []
    for repeat in range(repeats):
        order = arms[repeat % len(arms) :] + arms[: repeat % len(arms)]
        for arm in order:
            t0 = time.perf_counter()
            runs[arm.key].append(run_arm(arm, ctx))
            r = runs[arm.key][-1]
            print(
                f"[repeat {repeat + 1}/{repeats}] {arm.name:34s} {r['tokens_per_s']:8,.0f} tokens/s  "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        peaks.append(
            {
                str(t): {"fp32": matmul_gflops(torch.float32, t), "bf16": matmul_gflops(torch.bfloat16, t)}
                for t in thread_counts
            }
        )
    if rss == "subprocess":
        for arm in arms:
            peak = probe_peak_rss(arm, ctx)
            for run in runs[arm.key]:
                run["peak_rss_mb"] = round(peak, 1)
            print(f"[peak RSS, fresh process] {arm.name:34s} {peak:8,.0f} MB", flush=True)
    torch.set_num_threads(default_threads)
    peak_gflops = {t: {dtype: median([p[t][dtype] for p in peaks]) for dtype in ("fp32", "bf16")} for t in peaks[0]}
    return {
        "setup": setup,
        "machine": machine(),
        "flop_formula": FLOP_FORMULA,
        "flop_model": dataclasses.asdict(ctx.flops) if ctx.flops else None,
        "auto": auto,
        "peak_gflops": peak_gflops,
        "peak_gflops_per_repeat": peaks,
        "padding_full_epoch": padding,
        "arms": summarise(arms, runs, peaks),
        "runs": runs,
    }
