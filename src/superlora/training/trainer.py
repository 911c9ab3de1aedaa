"""``superlora train``: LoRA SFT on E2E with the Hugging Face Trainer, resumable and multi-process.

The loop is the stock ``transformers.Trainer`` (checkpoint/resume of optimiser, scheduler,
RNG and data position, DDP through torchrun, label smoothing, progress bar). What this
module adds is what the study needs around it: layer-selective adapters, every bad input
rejected before anything is written, checkpoints renamed into place atomically, and a run
directory with logs and a summary (see ``rundir``).

Data parallel runs use the standard launchers; the recipe is unchanged and ``optim.batch_size``
is per process (effective batch = batch_size x processes x grad_accum):

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m superlora train RECIPE      # CPU cores, gloo
    torchrun --nproc_per_node 8 -m superlora train RECIPE                        # 8 GPUs, nccl
    torchrun --nnodes 2 --node_rank I --rdzv-endpoint HOST:PORT --nproc_per_node 8 -m superlora train RECIPE
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.pytorch_utils import Conv1D
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from superlora import memory
from superlora.config import to_dict
from superlora.data.e2e import IGNORE_INDEX, load_split, tokenize_example
from superlora.errors import SuperloraError
from superlora.training import rundir
from superlora.training.config import OptimConfig, TrainConfig
from superlora.training.layers import adapted_blocks, default_targets, select_blocks, target_module_names
from superlora.training.speed import TargetOnlyLogitsMixin, speed_setup

if TYPE_CHECKING:
    from peft import PeftModel

    from superlora.models import LoadedModel

# Keys that may change when resuming: they do not affect what is computed (beyond float rounding).
RESUMABLE_CHANGES = {
    "resume",
    "output_dir",
    "log_every",
    "checkpoint.every",
    "checkpoint.keep",
    "speed.target_only_logits",
    "speed.attention",
    "speed.threads",
    "speed.compile",
}


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def say(*args: Any) -> None:
    """Print once per job, not once per process."""
    if is_main_process():
        print(*args, flush=True)


# -----------------------------------------------------------------------------
# Data


class TokenizedRows(torch.utils.data.Dataset):
    """Pre-tokenized examples (tokenizing ~1 ms each is cheaper than a datasets pipeline here)."""

    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]


@dataclass
class PadCollator:
    """Right-pad a batch: pad id for inputs, 0 for the mask, IGNORE_INDEX for labels."""

    pad_id: int

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([row[key] + [value] * (width - len(row[key])) for row in rows])

        return {
            "input_ids": pad("input_ids", self.pad_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
        }


def build_dataset(cfg: TrainConfig, tokenizer: Any) -> TokenizedRows:
    examples = load_split(cfg.data.split, cfg.data.variant, cfg.data.source)
    if cfg.data.limit is not None:
        examples = examples[: cfg.data.limit]
    rows = [tokenize_example(tokenizer, ex.mr, ex.ref, cfg.data.max_length) for ex in examples]
    return TokenizedRows(rows)


# -----------------------------------------------------------------------------
# Trainer pieces


class AtomicCheckpointTrainer(TargetOnlyLogitsMixin, Trainer):
    """A Trainer whose checkpoints appear all at once (and whose loss may skip non-target logits, see speed).

    Each checkpoint is written into ``checkpoints/.staging/`` (every process adds its RNG
    state there), then renamed to ``checkpoints/checkpoint-N``. A kill during the write
    leaves only the staging folder, which ``resume`` ignores and deletes.
    """

    _staging: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        final_root = Path(super()._get_output_dir(trial))
        self._staging = str(final_root / rundir.STAGING)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank has written its part
        if self.args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            rundir.replace_dir(final_root / rundir.STAGING / name, final_root / name)
            (final_root / rundir.STAGING).rmdir()
            rotate_checkpoints(str(final_root), save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


class RunLog(TrainerCallback):
    """Loss, learning rate and tokens/s to ``log.jsonl`` and TensorBoard (main process only)."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.writer: Any = None
        self.start_time = self.last_time = 0.0
        self.start_tokens = self.last_tokens = 0
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = self.last_time = time.perf_counter()
        self.start_tokens = self.last_tokens = state.num_input_tokens_seen
        self.start_step = state.global_step
        if state.is_world_process_zero:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run / "tensorboard"))

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
            "elapsed_s": round(now - self.start_time, 3),
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


def print_trainable(model: PeftModel) -> tuple[int, int]:
    """The PEFT one-liner, returned as numbers for the summary."""
    trainable, total = model.get_nb_trainable_parameters()
    say(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")
    return trainable, total


# -----------------------------------------------------------------------------
# Validation: everything that can be wrong is found before the run directory exists


@dataclass
class Plan:
    """A validated run: the resolved config and everything built from it."""

    cfg: TrainConfig
    run: Path
    loaded: LoadedModel
    fingerprint: str
    blocks: list[int]
    targets: list[str]
    dataset: TokenizedRows
    resume_from: Path | None


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def plan_run(cfg: TrainConfig) -> Plan:
    """Validate ``cfg`` against the model, data and run directory; raise SuperloraError on any problem."""
    from superlora.models import load_model

    run = Path(cfg.output_dir)
    stored: tuple[dict, dict] | None = None
    if cfg.resume:
        if not run.exists():
            raise SuperloraError(f"nothing to resume: run directory {run} does not exist (drop --resume to start it)")
        stored = rundir.read_run(run)
    elif run.exists() and any(run.iterdir()):
        raise SuperloraError(
            f"run directory {run} already exists; pass --resume (resume=true) to continue it, "
            "or choose another output_dir=..."
        )
    if cfg.data.source is not None and not Path(cfg.data.source).expanduser().is_dir():
        raise SuperloraError(f"data.source: E2E data folder not found: {cfg.data.source}")
    if cfg.superweights is not None and not Path(cfg.superweights).is_file():
        raise SuperloraError(f"superweights: file not found: {cfg.superweights}")
    resolve_device(cfg.device)

    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    positions = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(
        loaded.model.config, "n_positions", None
    )
    if positions and cfg.data.max_length > positions:
        raise SuperloraError(
            f"data.max_length={cfg.data.max_length} exceeds the {positions} positions of {cfg.model}; "
            f"set data.max_length={positions} or less"
        )
    fingerprint = rundir.base_fingerprint(loaded.model)
    if stored is not None:
        old_cfg, meta = stored
        if old_cfg.get("model") != cfg.model:
            raise SuperloraError(
                f"the adapter in {run} was trained on base model '{old_cfg.get('model')}', "
                f"but the config now says model={cfg.model}"
            )
        rundir.check_same_base(meta, fingerprint, cfg.model, run)
        blocks, count = meta["blocks"], old_cfg.get("count")  # not re-identified: the run's own choice
    else:
        blocks, count = select_blocks(cfg, loaded)
    targets = cfg.lora.targets or default_targets(loaded.arch)
    cfg = dataclasses.replace(cfg, count=count, lora=dataclasses.replace(cfg.lora, targets=targets))
    if stored is not None:
        changed = [k for k in config_changes(stored[0], to_dict(cfg)) if k not in RESUMABLE_CHANGES]
        if changed:
            raise SuperloraError(
                f"cannot resume {run}: the config differs from the run's config.yaml in {', '.join(changed)}"
            )
    module_names = target_module_names(loaded.model, loaded.arch, blocks, targets)
    dataset = build_dataset(cfg, loaded.tokenizer)
    if len(dataset) == 0:
        raise SuperloraError("the training data is empty")
    resume_from = rundir.latest_checkpoint(run) if cfg.resume else None
    return Plan(cfg, run, loaded, fingerprint, blocks, module_names, dataset, resume_from)


# -----------------------------------------------------------------------------
# Training


def attach_lora(plan: Plan) -> PeftModel:
    """Wrap the base model with adapters on exactly ``plan.targets``."""
    from peft import LoraConfig, get_peft_model

    lora = plan.cfg.lora
    model = plan.loaded.model
    if next(model.parameters()).dtype != torch.float32:
        model.float()  # CPU training: fp32 master weights; bf16 speed comes from autocast (speed.bf16)
    conv1d = any(isinstance(model.get_submodule(name), Conv1D) for name in plan.targets)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=plan.targets,
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores W as [in, out]
        use_rslora=lora.rslora,
        use_dora=lora.dora,
    )
    set_seed(plan.cfg.seed)  # the adapter's initial A matrices
    peft_model = get_peft_model(model, config)
    got = adapted_blocks(peft_model, plan.loaded.arch)
    if got != plan.blocks:
        raise RuntimeError(f"adapters landed in blocks {got}, expected {plan.blocks}")
    return peft_model


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
        "max_grad_norm": o.max_grad_norm,
    }


def resolve_device(setting: str) -> str:
    """``device``: auto is CUDA when a GPU is visible, else the CPU; asking for CUDA without one is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise SuperloraError("device=cuda, but torch sees no CUDA GPU (use device=auto or device=cpu)")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


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


def batch_rows(plan: Plan) -> int:
    """Tokens in a typical batch (batch size x median example length): the rows of the step's matmuls."""
    lengths = sorted(len(row["input_ids"]) for row in plan.dataset.rows[:2000])
    return plan.cfg.optim.batch_size * lengths[len(lengths) // 2]


def peak_rss_mb() -> float:
    """Peak resident memory since the run started (max over processes when distributed)."""
    rss = memory.peak_rss_mb()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = torch.tensor([rss], dtype=torch.float64)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        rss = float(value.item())
    return round(rss, 1)


def train(cfg: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Run (or resume) one fine-tuning job; return the summary that is also written to summary.json."""
    t0 = time.perf_counter()
    memory.release_memory()  # whatever ran before in this process (a study's decoding) is not this run's peak
    memory.reset_peak_rss()
    plan = plan_run(cfg)
    cfg, run = plan.cfg, plan.run
    model = attach_lora(plan)
    fast = speed_setup(model, plan.loaded, cfg.speed, batch_rows(plan), resolve_device(cfg.device))
    args = training_arguments(dataclasses.replace(cfg, speed=fast.speed), run)
    _ = args.device  # sets up the process group under torchrun (a rendezvous: all ranks validated)
    world_size = args.world_size

    if is_main_process():
        if plan.resume_from is None and not cfg.resume:
            meta = {
                "model": cfg.model,
                "base_source": plan.loaded.source,
                "base_fingerprint": plan.fingerprint,
                "blocks": plan.blocks,
                "target_modules": plan.targets,
                "num_blocks": plan.loaded.arch.num_blocks,
                "speed": fast.choices,
            }
            rundir.create_run_dir(run, to_dict(dataclasses.replace(cfg, resume=False)), meta)
        else:
            rundir.clean_staging(run)
            step = int(plan.resume_from.name.split("-")[-1]) if plan.resume_from else 0
            rundir.truncate_log(run / "log.jsonl", step)
    if world_size > 1:
        torch.distributed.barrier()

    say(f"run: {run}  model: {cfg.model}  blocks: {plan.blocks} of {plan.loaded.arch.num_blocks}")
    say(f"{fast.notes[0]}; threads/process: {fast.notes[1]}")
    say(f"data: {len(plan.dataset)} examples  processes: {world_size}  device: {fast.choices['device']}")
    say(f"speed: {'; '.join(fast.notes[2:]) or 'all switches off'}")
    if plan.resume_from is not None:
        say(f"resuming from {plan.resume_from}")
        started = rundir.read_run(run)[1].get("speed", {}).get("bf16", {}).get("enabled")
        if started is not None and started != fast.speed.bf16:
            say(
                f"note: this run started with bf16 {'on' if started else 'off'}; here it trains on in "
                f"{'bf16' if fast.speed.bf16 else 'fp32'} (losses move by bf16 rounding, ~1e-2)"
            )
    trainable, total = print_trainable(model)
    run_log = RunLog(run)
    trainer = AtomicCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=plan.dataset,
        data_collator=PadCollator(plan.loaded.tokenizer.pad_token_id),
        callbacks=[run_log, *(callbacks or [])],
    )
    trainer.target_only_logits = fast.target_only
    trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
    train_time = time.perf_counter() - run_log.start_time
    state = trainer.state

    rss = peak_rss_mb()
    summary: dict[str, Any] = {}
    if is_main_process():
        rundir.write_atomic(run / "adapter", lambda tmp: model.save_pretrained(tmp))
        losses = [r["loss"] for r in rundir.read_log(run / "log.jsonl")] if (run / "log.jsonl").is_file() else []
        tokens = state.num_input_tokens_seen - run_log.start_tokens
        summary = {
            "model": cfg.model,
            "layers": cfg.layers,
            "blocks": plan.blocks,
            "steps": state.global_step,
            "resumed_from_step": run_log.start_step or None,
            "processes": world_size,
            "threads_per_process": torch.get_num_threads(),
            "bf16": fast.speed.bf16,
            "wall_time_s": round(time.perf_counter() - t0, 2),
            "train_time_s": round(train_time, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / max(train_time, 1e-9), 1),
            "peak_rss_mb": rss,
            "trainable_params": trainable,
            "all_params": total,
            "trainable_pct": round(100 * trainable / total, 4),
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
        }
        rundir.write_json(run / "summary.json", summary)
        say(
            f"summary: {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
            f"(training {summary['train_time_s']:.1f} s) | {summary['tokens_per_s']:,.0f} tokens/s | "
            f"peak RSS {rss:,.0f} MB | trainable params {trainable:,d} ({summary['trainable_pct']}%) | "
            f"loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}"
        )
        say(f"adapter: {run / 'adapter'}")
    sys.stdout.flush()
    return summary
