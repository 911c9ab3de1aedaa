"""``superlora bench``: training throughput, side by side with a plain transformers Trainer recipe.

All arms run in one process, interleaved over repeats (the order rotates each repeat), on the same model,
examples, LoRA config and batch size, each on a freshly loaded model:

- ``ref``: the reference recipe, plain ``transformers.Trainer`` + peft LoRA with default settings (fp32,
  dynamic padding, logits at every position, the model's default attention, torch's default threads);
- ``off``: superlora's path with every speed switch off, then each switch alone (``bf16``, ``target``,
  ``group``, ``eager``), the recipe's settings (``recipe``), the recipe without each switch (``no-bf16``, ...),
  the recipe with the other thread count (``threads``) and with ``torch.compile`` (``compile``).

The machine is shared and noisy, so a repeat measures every arm once, ratios are taken within a repeat
and medians over repeats are reported. Model FLOPs count what a frozen-base LoRA step has to compute
(``FLOP_FORMULA``); the peak is a matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superlora.errors import SuperloraError
from superlora.memory import peak_rss_mb, release_memory, reset_peak_rss, rss_mb
from superlora.verb import add_recipe_argument, add_verb

if TYPE_CHECKING:
    import torch
    from torch import nn

    from superlora.models import LoadedModel
    from superlora.training.config import TrainConfig

FLOP_FORMULA = (
    "model FLOPs per step = forward 2*N_block*T + 4*d*sum(L^2) per block (attention scores) + 2*N_lora*T "
    "+ backward (activation gradients only: frozen weights get no weight gradient) 2*N_block*T + 8*d*sum(L^2) "
    "+ 4*N_lora*T for every block from the lowest adapted one up (autograd computes nothing below it) "
    "+ LM head 2*V*d*P forward and 2*V*d*P backward. T = non-padding tokens, L = example lengths, d = query "
    "heads x head dim, P = positions whose logits are computed (non-padding positions with full logits, target "
    "positions with target-only logits). About 4*N*T, not 6*N*T: padding and the weight gradients of frozen "
    "weights are not model work."
)
PEAK_SHAPE = (1024, 4096, 1024)
SWITCHES = {
    "bf16": "bf16",
    "target_only_logits": "target-only",
    "group_by_length": "grouping",
    "fast_dropout": "16-bit dropout",
    "attention": "attn",
}
ARM_KEYS = {
    "bf16": "bf16",
    "target_only_logits": "target",
    "group_by_length": "group",
    "fast_dropout": "drop16",
    "attention": "attn",
}
RSS_METHODS = {
    "subprocess": "peak resident memory while training the arm's steps in a fresh process (model loaded, nothing else)",
    "inprocess": "peak resident memory during the arm's timed run (high-water mark reset per arm; includes what "
    "earlier arms left in the process)",
}


@dataclass(frozen=True)
class Arm:
    """One configuration. ``speed`` None is the reference recipe, else the SpeedConfig fields to use."""

    key: str
    name: str
    speed: dict[str, Any] | None


def standard_arms(recipe: dict[str, Any], decided: dict[str, Any], forced_bf16: bool) -> list[Arm]:
    """The reference, superlora with all switches off, each switch alone, and the recipe (plus variants).

    ``recipe`` is the recipe's speed section as written (``auto`` included: the recipe arm decides as a run
    would), ``decided`` the same with every ``auto`` decided on this machine. ``forced_bf16``: include the arm that
    forces bf16 (by default only where bf16 pays: on a CPU that emulates it, one such step takes minutes).
    """
    off = {"bf16": False, "target_only_logits": False, "group_by_length": False, "fast_dropout": False}
    off |= {"attention": "model"}
    off |= {"threads": None, "compile": False}
    arms = [Arm("ref", "reference: plain Trainer, fp32", None), Arm("off", "superlora, all switches off", off)]
    if forced_bf16:
        arms.append(Arm("bf16", "+ bf16 only", off | {"bf16": True}))
    arms += [
        Arm("target", "+ target-only logits only", off | {"target_only_logits": True}),
        Arm("group", "+ group_by_length only", off | {"group_by_length": True}),
        Arm("drop16", "+ 16-bit dropout only", off | {"fast_dropout": True}),
        Arm("eager", "+ eager attention only", off | {"attention": "eager"}),
        Arm("recipe", "superlora recipe (defaults)", recipe),
    ]
    for key, name in SWITCHES.items():  # leave one out: what each switch buys on top of the others
        if decided[key] != off[key]:
            label = f"recipe without {name}" if key != "attention" else f"recipe without {decided[key]} attention"
            arms.append(Arm(f"no-{ARM_KEYS[key]}", label, decided | {key: off[key]}))
    other = 1 if decided["threads"] > 1 else 2
    if other <= (os.cpu_count() or 1):
        arms.append(Arm("threads", f"recipe, threads={other}", decided | {"threads": other}))
    if not decided["compile"]:
        arms.append(Arm("compile", "recipe + torch.compile", decided | {"compile": True}))
    return arms


# -----------------------------------------------------------------------------
# Measuring


@dataclass
class Batch:
    """What one collated batch held: example lengths, padded size, labelled (shifted) positions."""

    lengths: list[int]
    padded: int
    targets: int


class RecordingCollator:
    """Wraps a collator and records every batch it builds, in order (batch k feeds micro-step k)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[Batch] = []

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        batch = self.inner(rows)
        labels = batch["labels"]
        targets = int((labels[:, 1:] != -100).sum())
        self.batches.append(Batch([len(r["input_ids"]) for r in rows], labels.numel(), targets))
        return batch


def step_clock() -> Any:
    """A TrainerCallback recording when each optimiser step ends and each logged loss."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.start = 0.0
            self.ends: list[float] = []
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return StepClock()


def matmul_gflops(dtype: torch.dtype, threads: int, budget_s: float = 1.0) -> float:
    """GFLOP/s of PEAK_SHAPE matmuls in ``dtype`` on ``threads`` threads, timed for about ``budget_s`` (an
    emulated dtype is timed on fewer rows instead of stalling the bench: ~17 s a call at full size)."""
    from superlora.machine import matmul_rate

    return matmul_rate(dtype, [PEAK_SHAPE], threads, budget_s).gflops


@dataclass
class FlopModel:
    """The sizes the FLOP formula needs, read from the adapted model."""

    block_weights: list[int]  # frozen matmul weights per block
    lora_weights: list[int]  # trainable (adapter) weights per block
    attn_dim: int  # query heads x head dim
    head_weights: int  # LM head, V x d
    lowest: int  # lowest block with adapters

    def step(self, batches: list[Batch], target_only: bool) -> float:
        """Model FLOPs of one optimiser step over ``batches`` (FLOP_FORMULA)."""
        tokens = sum(sum(b.lengths) for b in batches)
        squares = sum(length * length for b in batches for length in b.lengths)
        positions = sum(b.targets for b in batches) if target_only else tokens
        total = 4 * self.head_weights * positions
        for i, (w, lw) in enumerate(zip(self.block_weights, self.lora_weights, strict=True)):
            total += 2 * w * tokens + 2 * lw * tokens + 4 * self.attn_dim * squares
            if i >= self.lowest:
                total += 2 * w * tokens + 4 * lw * tokens + 8 * self.attn_dim * squares
        return float(total)


def flop_model(peft_model: nn.Module, loaded: LoadedModel) -> FlopModel:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    from superlora.training.speed import causal_lm

    blocks = loaded.model.get_submodule(loaded.arch.blocks_path)
    frozen, lora = [], []
    for block in blocks:
        linears = [m for m in block.modules() if isinstance(m, (nn.Linear, Conv1D))]
        frozen.append(sum(m.weight.numel() for m in linears if not m.weight.requires_grad))
        lora.append(sum(p.numel() for p in block.parameters() if p.requires_grad))
    config = causal_lm(peft_model).config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    adapted = [i for i, n in enumerate(lora) if n]
    return FlopModel(
        block_weights=frozen,
        lora_weights=lora,
        attn_dim=heads * head_dim,
        head_weights=causal_lm(peft_model).get_output_embeddings().weight.numel(),
        lowest=min(adapted) if adapted else len(lora),
    )


# -----------------------------------------------------------------------------
# Running one arm


@dataclass
class Context:
    """What every arm shares: the recipe, the examples, the blocks and modules to adapt, the default threads."""

    cfg: TrainConfig
    dataset: Any
    blocks: list[int]
    targets: list[str]
    default_threads: int
    steps: int
    warmup: int
    rows: int  # tokens per batch, for the bf16 probe's shapes
    flops: FlopModel | None = None


def reference_arguments(cfg: TrainConfig, out: str, max_steps: int) -> Any:
    """TrainingArguments at their defaults except the recipe's optimisation settings (same work, same loss)."""
    import torch
    from transformers import TrainingArguments

    from superlora.training.hf import optim_arguments

    return TrainingArguments(
        output_dir=out,
        **optim_arguments(cfg.optim),
        max_steps=max_steps,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        logging_steps=1,  # to compare losses; logging does not change the computation
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
    )


def run_arm(arm: Arm, ctx: Context) -> dict[str, Any]:
    """Train ``warmup + steps`` optimiser steps of ``arm`` on a fresh model; return its raw measurements."""
    import torch
    from transformers import PrinterCallback, ProgressCallback, Trainer

    from superlora.data.collate import PadCollator
    from superlora.models import load_model
    from superlora.tasks import get_task
    from superlora.training.config import SpeedConfig
    from superlora.training.hf import AtomicCheckpointTrainer, training_arguments
    from superlora.training.plan import Plan, resolve_device
    from superlora.training.speed import speed_setup
    from superlora.training.trainer import attach_lora

    cfg, max_steps = ctx.cfg, ctx.warmup + ctx.steps
    release_memory()
    torch.set_num_threads(ctx.default_threads)
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    with tempfile.TemporaryDirectory(prefix="superlora-bench-") as tmp:
        task = get_task(cfg.task)
        template = task.template()
        plan = Plan(cfg, Path(tmp), loaded, "", ctx.blocks, ctx.targets, ctx.dataset, None, task, template)
        model = attach_lora(plan)
        if ctx.flops is None:
            ctx.flops = flop_model(model, loaded)
        collator = RecordingCollator(PadCollator(template.pad_id(loaded.tokenizer)))
        clock = step_clock()
        if arm.speed is None:
            args = reference_arguments(cfg, tmp, max_steps)
            trainer = Trainer(model=model, args=args, train_dataset=ctx.dataset, data_collator=collator)
            target_only, threads, bf16, notes = False, torch.get_num_threads(), False, []
        else:
            fast = speed_setup(model, loaded, SpeedConfig(**arm.speed), ctx.rows, resolve_device(cfg.device))
            arm_cfg = dataclasses.replace(
                cfg,
                speed=fast.speed,
                optim=dataclasses.replace(cfg.optim, max_steps=max_steps),
                checkpoint=dataclasses.replace(cfg.checkpoint, every=10**9),
                log_every=1,
            )
            args = training_arguments(arm_cfg, Path(tmp))
            args.disable_tqdm = True
            trainer = AtomicCheckpointTrainer(model=model, args=args, train_dataset=ctx.dataset, data_collator=collator)
            trainer.target_only_logits = fast.target_only
            target_only, threads, bf16, notes = fast.target_only, fast.threads, fast.speed.bf16, fast.notes
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        trainer.add_callback(clock)
        release_memory()
        rss_start = rss_mb()
        clean_peak = reset_peak_rss()
        trainer.train()
        peak = peak_rss_mb()
    del trainer, model, plan, loaded
    release_memory()

    ga = cfg.optim.grad_accum
    ends = [clock.start, *clock.ends]
    timed = range(ctx.warmup, min(max_steps, len(clock.ends)))
    durations = [ends[k + 1] - ends[k] for k in timed]
    step_batches = [collator.batches[k * ga : (k + 1) * ga] for k in timed]
    seconds = sum(durations)
    tokens = sum(sum(b.lengths) for batches in step_batches for b in batches)
    padded = sum(b.padded for batches in step_batches for b in batches)
    flops = sum(ctx.flops.step(batches, target_only) for batches in step_batches)
    return {
        "threads": threads,
        "bf16": bf16,
        "target_only": target_only,
        "notes": notes,
        "warmup_s": round(ends[ctx.warmup] - ends[0], 3),
        "step_s": [round(d, 4) for d in durations],
        "tokens": tokens,
        "padded_tokens": padded,
        "seconds": round(seconds, 4),
        "tokens_per_s": tokens / seconds,
        "model_flops_per_s": flops / seconds,
        "rss_start_mb": round(rss_start, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_clean": clean_peak,
        "losses": clock.losses,
    }


def _probe(arm: Arm, ctx: Context, queue: Any) -> None:
    """Child process: train ``arm`` as the timed runs do and report this process's peak RSS in MB.

    VmHWM, not ru_maxrss: ru_maxrss survives execve, so a spawned child would report its parent's peak.
    """
    quiet()
    run_arm(arm, ctx)
    queue.put(peak_rss_mb())


def probe_peak_rss(arm: Arm, ctx: Context) -> float:
    """Peak RSS of a fresh process that loads the model and trains ``arm`` on the same batches (spawned, so
    nothing another arm allocated or cached is counted)."""
    import multiprocessing
    import queue as queues

    mp = multiprocessing.get_context("spawn")
    results = mp.Queue()
    child = mp.Process(target=_probe, args=(arm, dataclasses.replace(ctx, flops=None), results), daemon=True)
    child.start()
    while True:
        try:
            peak = results.get(timeout=1)
            break
        except queues.Empty:
            if not child.is_alive():
                message = f"the peak-RSS probe of arm '{arm.key}' died (exit code {child.exitcode})"
                raise SuperloraError(message) from None
    child.join()
    return float(peak)


def quiet() -> None:
    """No progress bars or advisory warnings: one line per arm."""
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)  # peft asks a deprecated attribute, once per arm
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -----------------------------------------------------------------------------
# The whole bench


def bench_examples(cfg: TrainConfig, tokenizer: Any, count: int, pool: int) -> tuple[list[dict], list[int]]:
    """``count`` examples drawn at random (seeded) from the task's training samples, tokenized, and the lengths
    of ``pool`` examples drawn the same way (at most all of them; for the full-epoch padding figures)."""
    from superlora.tasks import get_task

    task = get_task(cfg.task)
    template = task.template()
    examples = task.train_samples(cfg.data.limit)
    count = min(count, len(examples))
    chosen = random.Random(cfg.seed).sample(examples, max(count, min(pool, len(examples))))
    rows = [r for r in (task.tokenize(tokenizer, template, ex, cfg.data.max_length) for ex in chosen) if r]
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


def machine() -> dict[str, Any]:
    import torch

    from superlora.machine import cpu_info

    cpu = cpu_info()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": torch.get_num_threads(),
        "cpu": cpu.model,
        "cpu_flags": list(cpu.flags),
        "torch_cpu_capability": cpu.capability,
        "isa_limits": list(cpu.isa_limits),
        "label": cpu.label(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(arms: list[Arm], runs: dict[str, list[dict]], peaks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm: medians over repeats; ratios to the reference taken within each repeat."""
    ref_runs = runs["ref"]
    rows = []
    for arm in arms:
        arm_runs = runs[arm.key]
        ratios = [r["tokens_per_s"] / ref["tokens_per_s"] for r, ref in zip(arm_runs, ref_runs, strict=True)]
        mfu_best, mfu_own = [], []
        for run, peak in zip(arm_runs, peaks, strict=True):
            p = peak[str(run["threads"])]
            mfu_best.append(run["model_flops_per_s"] / (max(p["bf16"], p["fp32"]) * 1e9))
            mfu_own.append(run["model_flops_per_s"] / (p["bf16" if run["bf16"] else "fp32"] * 1e9))
        same_batches = arm.speed is None or not arm.speed["group_by_length"]
        deltas = [
            max((abs(a - b) for a, b in zip(r["losses"], ref["losses"], strict=False)), default=float("nan"))
            for r, ref in zip(arm_runs, ref_runs, strict=True)
        ]
        rows.append(
            {
                "key": arm.key,
                "name": arm.name,
                "speed": arm.speed,
                "threads": arm_runs[0]["threads"],
                "bf16": arm_runs[0]["bf16"],
                "tokens_per_s": median([r["tokens_per_s"] for r in arm_runs]),
                "ratio_to_ref": median(ratios),
                "median_step_s": median([d for r in arm_runs for d in r["step_s"]]),
                "padding": 1 - sum(r["tokens"] for r in arm_runs) / sum(r["padded_tokens"] for r in arm_runs),
                "peak_rss_mb": median([r["peak_rss_mb"] for r in arm_runs]),
                "model_gflops_per_s": median([r["model_flops_per_s"] for r in arm_runs]) / 1e9,
                "mfu_best_peak": median(mfu_best),
                "mfu_own_dtype_peak": median(mfu_own),
                "warmup_s": median([r["warmup_s"] for r in arm_runs]),
                "max_loss_diff_vs_ref": median(deltas) if same_batches else None,
                "notes": arm_runs[0]["notes"],
            }
        )
    return rows


def format_table(result: dict[str, Any]) -> str:
    """The bench result as a fixed-width text table with its header lines."""
    s = result["setup"]
    lines = [
        f"superlora bench: {s['model']}, LoRA r={s['lora_r']} on {', '.join(s['lora_targets'])} in "
        f"{s['adapted_blocks']} of {s['num_blocks']} blocks, batch {s['batch_size']}, max_length {s['max_length']}; "
        f"{s['repeats']} repeats x {s['steps']} timed steps (+{s['warmup']} warm-up) per arm, arms interleaved in one "
        f"process; E2E training examples drawn at random: a pool of {s['examples']}",
        f"machine: {result['machine']['label']}, torch {result['machine']['torch']}",
    ]
    for threads, peak in sorted(result["peak_gflops"].items()):
        lines.append(
            f"matmul peak {'x'.join(map(str, PEAK_SHAPE))}, {threads} thread(s), median: "
            f"fp32 {peak['fp32']:,.1f} GFLOP/s, bf16 {peak['bf16']:,.1f} GFLOP/s"
        )
    auto = result["auto"]
    lines.append(
        f"the recipe's auto choices here: {auto['bf16']['reason']}; threads {auto['threads']['threads']} "
        f"({auto['threads']['reason']}); attention {auto['attention']['attention']}"
    )
    if not auto["bf16_pays"] and "bf16" not in {row["key"] for row in result["arms"]}:
        lines.append("the arm that forces bf16 is left out: bf16 does not pay here (--arms bf16 runs it)")
    head = (
        f"{'arm':34s} {'tokens/s':>9s} {'x ref':>6s} {'step s':>7s} {'pad':>5s} {'RSS MB':>7s} "
        f"{'GFLOP/s':>8s} {'dtype':>5s} {'MFU':>6s} {'MFU max':>7s} {'|dloss|':>8s}"
    )
    lines += ["", head, "-" * len(head)]
    for row in result["arms"]:
        dloss = row["max_loss_diff_vs_ref"]
        lines.append(
            f"{row['name'][:34]:34s} {row['tokens_per_s']:9,.0f} {row['ratio_to_ref']:6.2f} "
            f"{row['median_step_s']:7.3f} {100 * row['padding']:4.0f}% {row['peak_rss_mb']:7,.0f} "
            f"{row['model_gflops_per_s']:8,.1f} {'bf16' if row['bf16'] else 'fp32':>5s} "
            f"{100 * row['mfu_own_dtype_peak']:5.1f}% {100 * row['mfu_best_peak']:6.1f}% "
            f"{'-' if dloss is None else f'{dloss:.4f}':>8s}"
        )
    pad = result["padding_full_epoch"]
    lines += [
        "",
        "tokens/s: non-padding tokens over the timed steps (wall clock, step end to step end); x ref: within each "
        "repeat, then median; step s: median; pad: padding share of the timed batches; RSS: "
        + RSS_METHODS[s["rss_method"]]
        + "; MFU: model FLOP/s / the matmul peak of the arm's dtype; MFU max: / the faster dtype's peak; "
        "|dloss|: largest per-step loss difference from the reference "
        "on the same batches ('-': other batches, grouped by length).",
        f"padding over one epoch of {pad['examples']} training examples, batch {s['batch_size']}: random batches "
        f"{100 * pad['random']:.0f}%, length-grouped {100 * pad['grouped']:.0f}%. In the bench, grouped arms take "
        "their steps from one mega-batch of the pool sorted by length (the longest batch first, in the warm-up).",
        FLOP_FORMULA,
    ]
    return "\n".join(lines)


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


def bench(
    cfg: TrainConfig,
    steps: int = 10,
    repeats: int = 3,
    warmup: int = 2,
    keys: list[str] | None = None,
    rss: str = "subprocess",
) -> dict[str, Any]:
    """Run the arms (all, or ``keys``) interleaved over ``repeats``; return the result (setup, peaks, arms).

    ``rss``: "subprocess" measures each arm's peak RSS once more in a fresh process; "inprocess" reads the
    kernel's high-water mark, reset before each timed run (cheaper, but counts what earlier arms left behind).
    """
    import torch

    from superlora.data.collate import TokenizedRows
    from superlora.models import load_model
    from superlora.training.layers import default_targets, select_blocks, target_module_names

    default_threads = torch.get_num_threads()
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
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
    decided = recipe | {
        "bf16": auto["bf16"]["enabled"],
        "threads": auto["threads"]["threads"],
        "attention": auto["attention"]["attention"],
    }
    arms = standard_arms(recipe, decided, forced_bf16=auto["bf16_pays"] or "bf16" in (keys or []))
    torch.set_num_threads(default_threads)
    if keys:
        unknown = sorted(set(keys) - {a.key for a in arms})
        if unknown:
            raise SuperloraError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(a.key for a in arms)}")
        arms = [a for a in arms if a.key == "ref" or a.key in keys]
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
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


# -----------------------------------------------------------------------------
# Command line

EPILOG = """examples:
  superlora bench configs/e2e-lora.yaml task.source=E2E_DIR                    # all arms, 3 repeats
  superlora bench configs/e2e-lora.yaml --steps 6 --repeats 3 --out results/bench/smollm2-135m-CPU.json
  superlora bench configs/e2e-lora.yaml --arms recipe,bf16 --steps 5 --repeats 1  # the reference always runs

Arms: ref (plain transformers Trainer + peft, fp32, dynamic padding, full logits), off (superlora, all speed
switches off), bf16, target, group, drop16, eager (each switch alone), recipe (the CONFIG's speed: section, its auto
switches decided here as a run decides them), no-bf16, no-target, no-group, no-drop16, no-attn (the recipe without one
switch that is on), threads (the recipe with the other thread count), compile (the recipe + torch.compile).
bf16 runs only where a short probe measures bf16 matmuls faster than fp32 ones, or when --arms names it
(on an AVX2-only CPU bf16 is emulated: minutes a step).
Other jobs on the machine slow every arm (repeats and within-repeat ratios limit the damage); when the cores
are shared, OMP_NUM_THREADS=1 keeps the arms on one thread each (the threads arm then tries 2)."""


def run(args: argparse.Namespace) -> int:
    from superlora.training.cli import load_train_config

    quiet()
    if args.steps < 1 or args.repeats < 1 or args.warmup < 1:
        raise SuperloraError("--steps, --repeats and --warmup must be >= 1")
    cfg = load_train_config(args.items)
    keys = [k.strip() for k in args.arms.split(",")] if args.arms else None
    result = bench(cfg, steps=args.steps, repeats=args.repeats, warmup=args.warmup, keys=keys, rss=args.rss)
    table = format_table(result)
    print("\n" + table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        out.with_suffix(".txt").write_text(table + "\n", encoding="utf-8")
        print(f"\nwrote {out} and {out.with_suffix('.txt')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "bench",
        help="training speed: superlora's path and each speed switch against a plain transformers Trainer",
        description="Measure training throughput (tokens/s, step time, peak RSS, MFU against a matmul peak "
        "measured in the same run) of the recipe's model, data, LoRA and batch size, side by side with a plain "
        "transformers Trainer + peft recipe, in one process, interleaved over repeats.",
        epilog=EPILOG,
    )
    add_recipe_argument(parser, "a train recipe YAML and/or overrides")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per arm and repeat (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="times every arm runs, interleaved (default 3)")
    parser.add_argument("--arms", help="comma-separated subset of arms (default: all; ref always runs)")
    parser.add_argument(
        "--rss",
        choices=sorted(RSS_METHODS),
        default="subprocess",
        help="peak RSS per arm: a fresh process each (default, clean) or in the bench process (faster)",
    )
    parser.add_argument("--out", help="write the result JSON here (and the table next to it, .txt)")
    parser.set_defaults(func=run)
