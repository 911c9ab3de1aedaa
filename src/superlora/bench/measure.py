"""Running one arm on a fresh model: step times, non-padding tokens, losses, peak RSS (in or out of process)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superlora.bench.arms import Arm
from superlora.bench.flops import Batch, FlopModel, flop_model
from superlora.errors import SuperloraError
from superlora.memory import peak_rss_mb, release_memory, reset_peak_rss, rss_mb

if TYPE_CHECKING:
    import torch

    from superlora.training.config import TrainConfig


RSS_METHODS = {
    "subprocess": "peak resident memory while training the arm's steps in a fresh process (model loaded, nothing else)",
    "inprocess": "peak resident memory during the arm's timed run (high-water mark reset per arm; includes what "
    "earlier arms left in the process)",
}


class RecordingCollator:
    """Wraps a collator and records every batch it builds, in order (batch k feeds micro-step k)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[Batch] = []

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        batch = self.inner(rows)
        labels = batch["labels"]
        targets = int((labels[:, 1:] != -100).sum()) if labels.dim() == 2 else labels.numel()  # 1-D: one label a row
        self.batches.append(Batch([len(r["input_ids"]) for r in rows], batch["input_ids"].numel(), targets))
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
    from superlora.models.quantize import set_compute_dtype
    from superlora.tasks import get_task
    from superlora.training.config import SpeedConfig
    from superlora.training.hf import AtomicCheckpointTrainer, training_arguments
    from superlora.training.plan import Plan, resolve_device
    from superlora.training.speed import speed_setup
    from superlora.training.trainer import attach_lora, quantize_base

    cfg, max_steps = ctx.cfg, ctx.warmup + ctx.steps
    release_memory()
    torch.set_num_threads(ctx.default_threads)
    task = get_task(cfg.task)
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, **task.model_kwargs())
    with tempfile.TemporaryDirectory(prefix="superlora-bench-") as tmp:
        template = task.template()
        arm_base = dataclasses.replace(cfg, quantize=arm.quantize)
        plan = Plan(arm_base, Path(tmp), loaded, "", ctx.blocks, ctx.targets, ctx.dataset, None, task, template)
        quantize_base(plan)  # QLoRA arms only
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
            if arm.quantize:  # as a QLoRA run computes: bf16 where the machine multiplies it fast
                set_compute_dtype(model, torch.bfloat16 if fast.speed.bf16 else torch.float32)
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
