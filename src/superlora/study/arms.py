"""The study's arms: what each kind of arm trains, and one arm per kind and seed.

An arm differs from the shared ``train:`` recipe only in where the adapters go (``layers``), in its seed,
and for ``superweights-matched`` in its rank (the super-weight blocks at the all-block arm's trainable-
parameter count), so placement can be told apart from budget.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from superlora.errors import SuperloraError
from superlora.training.layers import matched_rank

if TYPE_CHECKING:
    from superlora.study.config import StudyConfig
    from superlora.training.config import TrainConfig

# kind -> what it is, for --help, the report and the README
KINDS: dict[str, str] = {
    "base": "the base model, no fine-tuning (a classification task: its new, untrained head)",
    "head": "a classification task's head alone, no LoRA (layers: none): what LoRA adds to it",
    "all": "LoRA in every block (the baseline)",
    "superweights": "LoRA only in the blocks that hold super weights",
    "superweights-matched": "the super-weight blocks at the rank (alpha/r kept) that gives the all-block arm's "
    "trainable-parameter count",
    "above": "every block above the highest super-weight block",
    "avoid": "every block except the super-weight blocks",
    "probe": "as many blocks, those with the largest LoRA gradients in a short all-block probe (training.probe)",
    "random": "as many random blocks as hold super weights (a new draw per seed)",
    "first": "as many of the first blocks",
    "last": "as many of the last blocks",
}


EQUAL_TIME = "@time"  # suffix of the equal-time arms: the same training wall-clock as the all-block arm


@dataclass(frozen=True)
class Arm:
    """One trained (or base) model of the study; ``key`` names its run and results folders."""

    kind: str
    seed: int | None  # None: the base model, which has no training seed
    key: str
    steps: int | None = None  # equal-time arms: their own step count; None: the study's train.optim.max_steps

    @property
    def layers(self) -> str:
        return {"superweights-matched": "superweights", "head": "none"}.get(self.base_kind, self.base_kind)

    @property
    def base_kind(self) -> str:
        return self.kind.removesuffix(EQUAL_TIME)


def study_arms(cfg: StudyConfig) -> list[Arm]:
    """Every arm in order: each kind once per seed (``base`` once). A one-seed study keeps the kind as key."""
    seeds = cfg.seeds or [cfg.train.seed]
    arms = []
    for kind in cfg.arms:
        if kind == "base":
            arms.append(Arm("base", None, "base"))
            continue
        for seed in seeds:
            arms.append(Arm(kind, seed, kind if len(seeds) == 1 else f"{kind}-s{seed}"))
    return arms


def read_arm_summary(cfg: StudyConfig, key: str) -> dict | None:
    path = Path(cfg.out) / "arms" / key / "train_summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def equal_time_arms(cfg: StudyConfig) -> list[Arm]:
    """Every trained arm again with as many steps as fit in the all-block arm's training time (same seed).

    The step count comes from the side-by-side step times (``study.timing``, ``<out>/step_times.json``,
    committed): an arm whose steps take 70% of the all-block arm's gets 1/0.7 as many steps. Not from the
    equal-step runs' wall-clock, which other jobs on the machine inflate by as much as the arms differ. The
    list is empty until those step times are measured (once the seed's equal-step arms are finished). An arm
    whose step count would change by less than ``equal_time_min_gain`` is left out (``equal_time_standins``).
    """
    return [arm for arm, standin in equal_time_plan(cfg) if not standin]


def equal_time_standins(cfg: StudyConfig) -> list[Arm]:
    """The equal-step arms that stand for their equal-time runs: their steps already take the all-block arm's
    time, to within ``equal_time_min_gain`` (a rerun would add a handful of steps, less than the timing's noise)."""
    return [standin for _, standin in equal_time_plan(cfg) if standin]


def equal_time_plan(cfg: StudyConfig) -> list[tuple[Arm, Arm | None]]:
    """Each equal-time arm with its step count, paired with the equal-step arm standing for it (None: train it)."""
    if not cfg.equal_time:
        return []
    from superlora.study.timing import ratios

    ratio = ratios(cfg)
    if not ratio:
        return []
    by_seed = {a.seed: read_arm_summary(cfg, a.key) for a in study_arms(cfg) if a.kind == "all"}
    seeds = set(by_seed) if cfg.equal_time is True else set(cfg.equal_time)
    plan = []
    for arm in study_arms(cfg):
        reference = by_seed.get(arm.seed)
        if arm.kind in ("base", "all", "head") or arm.seed not in seeds or arm.kind not in ratio or not reference:
            continue
        steps = max(1, round(reference["steps"] / ratio[arm.kind]))  # the all-block arm's steps, as it trained them
        timed = Arm(arm.kind + EQUAL_TIME, arm.seed, arm.key + EQUAL_TIME, steps)
        close = abs(steps - reference["steps"]) < reference["steps"] * cfg.equal_time_min_gain
        plan.append((timed, arm if close else None))
    return plan


def superweight_block_count(path: str | Path) -> tuple[int, int]:
    """(super-weight blocks, blocks of the model) from an ``identify`` report."""
    from superlora.identify.records import proven_blocks  # (the identify package imports torch)

    blocks, data = proven_blocks(path)
    total = (data.get("architecture") or {}).get("num_blocks")
    if not blocks or not total:
        raise SuperloraError(f"{path}: needs proven super weights and architecture.num_blocks for a matched arm")
    return len(blocks), int(total)


def arm_train_config(cfg: StudyConfig, arm: Arm, run: Path) -> TrainConfig:
    """The training recipe of ``arm``: the study's ``train:`` with the arm's layers, seed, rank and folder."""
    train = cfg.train
    lora = train.lora
    if arm.base_kind == "superweights-matched":
        if not train.superweights:
            raise SuperloraError("superweights-matched needs train.superweights (the study identifies them first)")
        selected, total = superweight_block_count(train.superweights)
        rank = matched_rank(lora.r, total, selected)  # alpha/r kept: the update's scale stays the arm's own
        lora = dataclasses.replace(lora, r=rank, alpha=lora.alpha * rank / lora.r)
    seed = arm.seed if arm.seed is not None else train.seed
    optim = train.optim if arm.steps is None else dataclasses.replace(train.optim, max_steps=arm.steps)
    return dataclasses.replace(
        train, layers=arm.layers, seed=seed, lora=lora, optim=optim, output_dir=str(run), resume=False
    )
