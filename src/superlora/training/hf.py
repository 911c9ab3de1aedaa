"""The Hugging Face Trainer pieces: atomic checkpoints, the run log, the held-out loss, the arguments.

The loop is the stock ``transformers.Trainer`` (checkpoint/resume of optimiser, scheduler, RNG and data
position, DDP through torchrun, label smoothing, progress bar); these are what superlora adds around it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from superlora.errors import SuperloraError
from superlora.training import rundir
from superlora.training.config import OptimConfig, TrainConfig
from superlora.training.plan import resolve_device
from superlora.training.speed import TargetOnlyLogitsMixin


class NonFiniteTraining(SuperloraError):
    """The loss or the adapter's weights stopped being finite numbers: nothing after this step is worth keeping."""


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped batches whose order is a function of (seed, epoch) only.

    transformers' sampler draws from the global torch RNG, whose state at the start of a resumed epoch
    differs from the uninterrupted run's: a resume after the first epoch then skips the wrong batches.
    Here each epoch has its own generator, so the Trainer's ``set_epoch`` + batch skipping is exact.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, dtype=np.uint32)
        self.generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return super().__iter__()


def check_finite(step: int, what: str, value: torch.Tensor, run: Path | None) -> None:
    """Stop the run at the first non-finite loss or weight, before it reaches a checkpoint or the adapter."""
    if bool(torch.isfinite(value).all()):
        return
    last = rundir.latest_checkpoint(run) if run is not None else None
    kept = f"its last good checkpoint {last.name} stays" if last else "no checkpoint was written yet"
    shown = f" ({value.reshape(-1)[0].item()})" if value.numel() == 1 else ""
    raise NonFiniteTraining(
        f"training stopped at step {step}: the {what} became non-finite{shown}; {kept} and no adapter was "
        "written (lower optim.lr, keep optim.max_grad_norm set, and start a new run)"
    )


def write_failed(what: str, exc: OSError, run: Path | None) -> SuperloraError:
    """One line for a write that failed (disk full): what was lost, what is still there, how to go on."""
    last = rundir.latest_checkpoint(run) if run is not None else None
    kept = f"{last.name} is intact: free space and resume with --resume" if last else "no checkpoint was written yet"
    return SuperloraError(f"could not write {what} ({exc.strerror or exc}); {kept}")


def check_weights(model: torch.nn.Module, step: int, run: Path | None) -> None:
    """The trainable weights are all finite (one reduction: amax propagates NaN and inf)."""
    trainable = [p.detach() for p in model.parameters() if p.requires_grad]
    if trainable:
        check_finite(step, "adapter's weights", torch.stack([p.abs().amax().float() for p in trainable]).amax(), run)


class AtomicCheckpointTrainer(TargetOnlyLogitsMixin, Trainer):
    """A Trainer whose checkpoints appear all at once, whose batches resume exactly in any epoch and which
    stops at the first non-finite loss or weight (and whose loss may skip non-target logits, see speed).

    Each checkpoint is written into ``checkpoints/.staging/`` (every process adds its RNG
    state there), then renamed to ``checkpoints/checkpoint-N``. A kill during the write
    leaves only the staging folder, which ``resume`` ignores and deletes.
    """

    _staging: str | None = None
    run_dir: Path | None = None

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        lengths = [len(row["input_ids"]) for row in dataset]
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(batch, lengths, seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_finite(self.state.global_step + 1, "loss", loss.detach(), self.run_dir)
        return loss

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        check_weights(model, self.state.global_step, self.run_dir)  # a NaN adapter is never checkpointed
        final_root = Path(super()._get_output_dir(trial))
        self._staging = str(final_root / rundir.STAGING)
        try:
            super()._save_checkpoint(model, trial)
        except OSError as exc:  # a full disk, a quota: the earlier checkpoints are whole, say so and stop
            shutil.rmtree(final_root / rundir.STAGING, ignore_errors=True)
            raise write_failed(f"checkpoint-{self.state.global_step}", exc, self.run_dir) from None
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank has written its part
        if self.args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            rundir.replace_dir(final_root / rundir.STAGING / name, final_root / name)
            (final_root / rundir.STAGING).rmdir()
            rotate_checkpoints(str(final_root), save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


def logged_at(log: Path, step: int, key: str) -> float:
    """A cumulative log value (``elapsed_s``, ``tokens``) at ``step``: what a resumed run had reached there.

    A checkpoint between two log rows adds the last row's mean per step for the steps after it.
    """
    if step <= 0 or not log.is_file():
        return 0.0
    rows = [r for r in rundir.read_log(log) if r.get("step", 0) <= step and key in r]
    if not rows:
        return 0.0
    last = rows[-1]
    return last[key] + last[key] / max(last["step"], 1) * (step - last["step"])


class RunLog(TrainerCallback):
    """Loss, learning rate and tokens/s to ``log.jsonl`` and TensorBoard (main process only).

    ``elapsed_s`` counts training time across resumes: a resumed run starts from the time its log had reached
    at the checkpoint (``prior_s``), so a run killed and resumed reports the time its steps took, not the last
    piece's.
    """

    def __init__(self, run: Path) -> None:
        self.run = run
        self.writer: Any = None
        self.start_time = self.last_time = 0.0
        self.last_tokens = 0
        self.start_step = 0
        self.prior_s = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start(state.global_step, state.num_input_tokens_seen)
        if state.is_world_process_zero:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run / "tensorboard"))

    def start(self, step: int, tokens: int) -> None:
        """Start the clock at ``step``; a resumed run's earlier time comes from its (truncated) log."""
        self.start_time = self.last_time = time.perf_counter()
        self.last_tokens = tokens
        self.start_step = step
        self.prior_s = logged_at(self.run / "log.jsonl", step, "elapsed_s")

    def train_seconds(self) -> float:
        """Training time of every step so far, this piece and the pieces before a resume."""
        return self.prior_s + time.perf_counter() - self.start_time

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": logs["loss"],
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens": tokens,
            "tokens_per_s": round((tokens - self.last_tokens) / max(now - self.last_time, 1e-9), 1),
            "elapsed_s": round(self.prior_s + now - self.start_time, 3),
        }
        self.last_time, self.last_tokens = now, tokens
        with open(self.run / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
            if record[key] is not None:
                self.writer.add_scalar(f"train/{key}", record[key], state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()


class HeldoutLoss(TrainerCallback):
    """The held-out loss and perplexity every ``every`` steps and at the end, to ``eval.jsonl`` and TensorBoard.

    The model is evaluated in eval mode (no dropout), which draws no random numbers, so a run with held-out
    evaluation trains exactly like one without, and resumes exactly.
    """

    def __init__(self, run: Path, measure, every: int, run_log: RunLog) -> None:
        self.run, self.measure, self.every, self.run_log = run, measure, every, run_log

    def _record(self, state, model) -> None:
        if not state.is_world_process_zero:
            return
        result = self.measure(model)
        record = {
            "step": state.global_step,
            "eval_loss": round(result["loss"], 6),
            "eval_perplexity": round(result["perplexity"], 4),
            "eval_tokens": result["tokens"],
        }
        with open(self.run / rundir.EVAL_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.run_log.writer is not None:
            self.run_log.writer.add_scalar("eval/loss", record["eval_loss"], state.global_step)
            self.run_log.writer.add_scalar("eval/perplexity", record["eval_perplexity"], state.global_step)
            self.run_log.writer.flush()
        tqdm.write(
            f"held-out loss at step {state.global_step}: {record['eval_loss']:.4f} "
            f"(perplexity {record['eval_perplexity']:.2f}, {record['eval_tokens']:,} tokens)"
        )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._record(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(state, model)


def optim_arguments(o: OptimConfig) -> dict[str, Any]:
    """The recipe's optimisation as TrainingArguments keywords (the bench's reference recipe uses them too)."""
    return {
        "per_device_train_batch_size": o.batch_size,
        "gradient_accumulation_steps": o.grad_accum,
        "learning_rate": o.lr,
        "weight_decay": o.weight_decay,
        "warmup_steps": o.warmup_steps,
        "lr_scheduler_type": o.scheduler,
        "label_smoothing_factor": o.label_smoothing,
        "max_grad_norm": o.max_grad_norm if o.max_grad_norm is not None else 0.0,  # 0: no clipping
    }


def training_arguments(cfg: TrainConfig, run: Path) -> TrainingArguments:
    """The Trainer's arguments for ``cfg``, whose ``speed`` must be decided already (``speed_setup``)."""
    if not isinstance(cfg.speed.bf16, bool):
        raise ValueError("training_arguments needs speed.bf16 decided (speed_setup), not 'auto'")
    o, world_size = cfg.optim, int(os.environ.get("WORLD_SIZE", "1"))
    cpu = resolve_device(cfg.device) == "cpu"
    extra: dict[str, Any] = {}
    if world_size > 1:  # without a launcher, asking for a backend fails: no process group
        extra = {"ddp_backend": "gloo" if cpu else "nccl", "ddp_find_unused_parameters": False}
    return TrainingArguments(
        output_dir=str(run / rundir.CHECKPOINTS),
        **optim_arguments(o),
        max_steps=o.max_steps,
        num_train_epochs=o.epochs,
        bf16=cfg.speed.bf16,
        train_sampling_strategy="group_by_length" if cfg.speed.group_by_length else "random",
        use_cpu=cpu,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.log_every,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.checkpoint.every,
        save_total_limit=cfg.checkpoint.keep,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        report_to="none",  # RunLog writes TensorBoard itself, into the run directory
        disable_tqdm=False,
        **extra,
    )
