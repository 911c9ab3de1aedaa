"""The study recipe: one training recipe shared by every arm, the arms, and how they are scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from superlora.evaluation.decode import DecodeConfig
from superlora.training.config import TrainConfig

ARMS = ("base", "all", "superweights", "random", "first", "last")


@dataclass
class EvalConfig:
    """How every arm is decoded and scored (the same for all arms)."""

    split: str = "test"
    variant: str = "original"  # the official test set: 630 MRs with their references
    limit: int | None = None  # first N MRs (None: all 630)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # LoRA paper protocol by default
    threads: int | Literal["auto"] | None = "auto"  # torch threads while decoding; auto: as training chooses them
    skip_meteor: bool = False  # METEOR needs Java; the other four metrics do not


@dataclass
class StudyConfig:
    """``superlora study``: base model vs all-layer LoRA vs super-weight-layer LoRA vs controls.

    Every trained arm uses ``train`` unchanged except ``layers`` (and ``output_dir``), so the
    arms differ only in where the adapters go: same data, steps, seed and budget.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    runs_dir: str = "runs/study"  # training runs (checkpoints, adapters): large, not committed
    out: str = "results/study"  # scores, tables, plots: small, committed
    readme: str | None = "README.md"  # section between the study markers is regenerated

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms: unknown {', '.join(unknown)} (choose from {', '.join(ARMS)})")
        if not self.arms:
            raise ValueError("arms: name at least one arm")
