"""The study recipe: one training recipe shared by every arm, the arms, and how they are scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from superlora.evaluation.decode import DecodeConfig
from superlora.study.arms import KINDS
from superlora.training.config import TrainConfig

ARMS = ("base", "all", "superweights", "random", "first", "last")  # the default arms (study.arms.KINDS: all)


@dataclass
class EvalConfig:
    """How every arm is decoded and scored (the same for all arms); what is decoded is the task's."""

    split: str = "test"
    limit: int | None = None  # first N items (None: all; E2E: 630 test MRs)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # unset fields: the task's protocol
    threads: int | Literal["auto"] | None = "auto"  # torch threads while decoding; auto: as training chooses them
    skip_meteor: bool = False  # E2E: METEOR needs Java; the other four metrics do not
    python_nist: bool = False  # E2E: BLEU/NIST as the official scorer's -p mode
    max_length: int = 1024  # tokens of a held-out sample for its teacher-forced loss (chat)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"eval.limit must be >= 1, got {self.limit}")


@dataclass
class StepTimingConfig:
    """The side-by-side step times behind the equal-time arms (``study.timing``): a few steps per arm layout."""

    steps: int = 8  # timed optimiser steps per arm and repeat
    warmup: int = 2  # untimed steps before them (allocator, first-call costs)
    repeats: int = 3  # interleaved rounds over the arms, a new order each; the median is kept

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"step_timing: steps >= 1, warmup >= 0, repeats >= 1 (got {self})")


@dataclass
class StudyConfig:
    """``superlora study``: base model vs all-layer LoRA vs super-weight-layer LoRA vs controls.

    Every trained arm uses ``train`` unchanged except ``layers`` (and ``output_dir``), so the
    arms differ only in where the adapters go: same data, steps, seed and budget.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    seeds: list[int] | None = None  # each trained arm once per seed (random: a new draw of blocks); None: train.seed
    # this process trains only these seeds' arms (and base): a study split over cores or machines, one process per
    # seed, each committing its arms; any later run writes the report over every arm that is there
    only_seeds: list[int] | None = None
    # every trained arm again with the all-block arm's training time (more steps); a list: for those seeds only
    equal_time: bool | list[int] = False
    # an arm is trained again at equal time only if that changes its steps by at least this share (0.05: 5%); one
    # whose steps take as long as the all-block arm's, to within what the step times can tell (their repeats
    # vary by several percent), already had the all-block arm's time: its equal-step run stands for it
    equal_time_min_gain: float = 0.05
    step_timing: StepTimingConfig = field(default_factory=StepTimingConfig)  # the equal-time arms' step counts
    drift: bool = False  # merge each arm's adapter and look for the super weights again (study.drift)
    commit: bool = False  # git-commit each arm's results folder as soon as it is scored (resumable from git)
    runs_dir: str = "runs/study"  # training runs (checkpoints, adapters): large, not committed
    out: str = "results/study"  # scores, tables, plots: small, committed
    readme: str | None = "README.md"  # section between the study markers is regenerated
    name: str | None = None  # the README markers' name (study:NAME:begin); None: the E2E study's markers

    @staticmethod
    def migrate(data: dict) -> dict:
        """Before tasks, ``eval.variant`` chose the E2E test release; it is the task's ``eval_variant`` now."""
        e = data.get("eval")
        if isinstance(e, dict) and "variant" in e:
            e = dict(e)
            train = dict(data.get("train") or {})
            task = dict(train.get("task") or {"name": "e2e"})
            task.setdefault("eval_variant", e.pop("variant"))
            data = {**data, "eval": e, "train": {**train, "task": task}}
        return data

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in KINDS]
        if unknown:
            raise ValueError(f"arms: unknown {', '.join(unknown)} (choose from {', '.join(KINDS)})")
        if not self.arms:
            raise ValueError("arms: name at least one arm")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds: give distinct seeds (or null for train.seed), got {self.seeds}")
        if self.only_seeds is not None and not set(self.only_seeds) <= set(self.seeds or [self.train.seed]):
            raise ValueError(f"only_seeds: {self.only_seeds} are not all among the study's seeds {self.seeds}")
        if any(s < 0 for s in self.seeds or []):
            raise ValueError(f"seeds must be >= 0, got {self.seeds}")
        if not 0 <= self.equal_time_min_gain < 1:
            raise ValueError(f"equal_time_min_gain: a share of the steps in [0, 1), got {self.equal_time_min_gain}")
