"""The training recipe: every knob of ``superlora train`` as typed, validated dataclasses; ``task:`` is the task's own.

Defaults follow the LoRA paper's E2E recipe (Hu et al. 2021, table 11): rank 4, alpha 32,
query/value projections, dropout 0.1, AdamW lr 2e-4, weight decay 0.01, linear schedule
with warmup, label smoothing 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from superlora.errors import SuperloraError
from superlora.tasks import DefaultTask, TaskSection

LayerStrategy = Literal["all", "superweights", "above", "avoid", "probe", "random", "first", "last", "none"]


@dataclass
class DataConfig:
    """How many of the task's training samples to use and how long a tokenized one may be."""

    limit: int | None = None  # first N samples (None: all)
    max_length: int = 128  # prompt + target tokens; E2E examples are ~60 tokens with most tokenizers

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.limit must be >= 1, got {self.limit}")
        if self.max_length < 8:
            raise ValueError(f"data.max_length must be >= 8, got {self.max_length}")


@dataclass
class LoraConfig:
    """The adapter. ``targets`` are module names (suffixes) inside each selected block."""

    r: int = 4
    alpha: float = 32.0
    dropout: float = 0.1
    targets: list[str] | None = None  # None: the attention query/value projections of the architecture
    rslora: bool = False  # scale by alpha/sqrt(r) instead of alpha/r
    dora: bool = False  # weight-decomposed LoRA

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.targets is not None and not self.targets:
            raise ValueError("lora.targets must name at least one module (or be null for the default)")


@dataclass
class OptimConfig:
    """Optimiser, schedule and batch shape. ``max_steps`` > 0 overrides ``epochs``."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    scheduler: Literal["linear", "constant_with_warmup", "cosine"] = "linear"
    label_smoothing: float = 0.1
    batch_size: int = 8  # per process
    grad_accum: int = 1
    max_steps: int = -1  # -1: train for ``epochs``
    epochs: float = 1.0
    max_grad_norm: float | None = 1.0  # clip the gradient norm to this; null: no clipping

    def __post_init__(self) -> None:
        if not 0 < self.lr <= 1:
            raise ValueError(f"optim.lr must be in (0, 1], got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("optim.batch_size and optim.grad_accum must be >= 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"optim.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"optim.max_steps must be > 0, or -1 to train for optim.epochs; got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise ValueError(f"optim.epochs must be > 0 when optim.max_steps is -1, got {self.epochs}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"optim.max_grad_norm must be > 0 (or null for no clipping), got {self.max_grad_norm}")


@dataclass
class CheckpointConfig:
    """Resumable checkpoints: every ``every`` optimiser steps and at the end, the last ``keep`` kept."""

    every: int = 200
    keep: int = 2

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ValueError("checkpoint.every and checkpoint.keep must be >= 1")


@dataclass
class SpeedConfig:
    """How fast the same training runs; none of these changes what is learnt beyond noise.

    ``auto`` is decided on the machine that runs (``superlora.machine``): measured, logged and kept in run.json.
    ``superlora bench`` measures each switch against a plain transformers Trainer (README, "Speed").
    """

    # bf16 autocast with frozen block weights kept in bf16 (LoRA weights, optimiser, loss fp32); auto: when its
    # matmuls measure faster than fp32's on this machine (AMX: ~6x; an AVX2-only CPU emulates bf16 ~170x slower)
    bf16: bool | Literal["auto"] = "auto"
    target_only_logits: bool = True  # LM head and loss only where a label is set, not at every position
    group_by_length: bool = True  # batches of similar length (less padding); the same examples each epoch
    fast_dropout: bool = True  # LoRA dropout masks from 16 random bits a value, not 32: a quarter of the RNG work
    # attention kernel; auto: eager under bf16 (SDPA's CPU bf16 backward is several times slower), else sdpa
    attention: Literal["auto", "eager", "sdpa", "model"] = "auto"
    # torch threads per process; auto: the cores this process may use that no other job keeps busy, shared by
    # the processes of a torchrun job (OMP_NUM_THREADS wins when set); None: torch's default
    threads: int | Literal["auto"] | None = "auto"
    compile: bool = False  # torch.compile each block (regional); pays only on long runs, see README

    def __post_init__(self) -> None:
        if isinstance(self.threads, int) and self.threads < 1:
            raise ValueError(f"speed.threads must be >= 1 (or auto, or null), got {self.threads}")


@dataclass
class TrainConfig:
    """One fine-tuning run. ``layers`` picks the blocks that get adapters:

    ``all`` (baseline), ``superweights`` (blocks holding super weights, from ``superweights``
    or identified on the fly), ``above`` (every block after the highest of them), ``avoid`` (every block
    but them), ``probe`` (the ``count`` blocks with the largest LoRA gradients over a short all-block run of
    ``probe_steps`` steps, see training.probe), ``random``/``first``/``last`` (controls with ``count`` blocks;
    ``count`` defaults to the number of super-weight blocks), ``none`` (no LoRA: a classification task's head alone,
    the baseline that shows what LoRA adds) or an explicit list of indices.
    """

    model: str = "smollm2-135m"
    trust_remote_code: bool = False
    # QLoRA: the frozen block weights in 4 bits (nf4, fp4) or 8 (int8) with bitsandbytes; null: full precision
    quantize: Literal["nf4", "fp4", "int8"] | None = None
    # QLoRA: hold the super weights (``superweights``, or identified now) in full precision in the quantised base
    keep_superweights: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when a GPU is visible, else the CPU
    task: TaskSection = field(default_factory=DefaultTask)  # what is learnt; superlora.tasks lists them
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    layers: LayerStrategy | list[int] = "all"
    count: int | None = None
    superweights: str | None = None  # path to a superweights.json from `superlora identify`
    probe_steps: int = 32  # layers: probe: optimiser steps of the all-block gradient probe
    seed: int = 42
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    log_every: int = 10
    eval_every: int = 0  # steps between held-out losses (tasks with held-out samples; 0: only at the end)
    output_dir: str = "runs/e2e-lora"
    resume: bool = False

    @staticmethod
    def migrate(data: dict) -> dict:
        """Recipes and runs from before tasks existed kept E2E's data keys in ``data:``; they live in ``task:``."""
        old = data.get("data")
        if isinstance(old, dict) and any(k in old for k in ("source", "variant", "split")):
            task = dict(data.get("task") or {"name": "e2e"})
            old = dict(old)
            for key in ("source", "variant", "split"):
                if key in old:
                    value = old.pop(key)
                    if key in task and task[key] != value:
                        raise SuperloraError(f"data.{key} is task.{key} now; give only task.{key}")
                    task[key] = value
            data = {**data, "data": old, "task": task}
        return data

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.probe_steps < 1:
            raise ValueError(f"probe_steps must be >= 1, got {self.probe_steps}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if isinstance(self.layers, list) and not self.layers:
            raise ValueError("layers: an explicit list must name at least one block")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.keep_superweights and self.quantize is None:
            raise ValueError("keep_superweights: true needs a quantised base (quantize: nf4, fp4 or int8)")
