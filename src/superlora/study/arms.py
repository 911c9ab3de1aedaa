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
    "base": "the base model, no fine-tuning",
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


@dataclass(frozen=True)
class Arm:
    """One trained (or base) model of the study; ``key`` names its run and results folders."""

    kind: str
    seed: int | None  # None: the base model, which has no training seed
    key: str


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


def superweight_block_count(path: str | Path) -> tuple[int, int]:
    """(super-weight blocks, blocks of the model) from an ``identify`` report."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    blocks = {int(w["block"]) for w in data["super_weights"] if w.get("proven", True)}
    total = (data.get("architecture") or {}).get("num_blocks")
    if not blocks or not total:
        raise SuperloraError(f"{path}: needs proven super weights and architecture.num_blocks for a matched arm")
    return len(blocks), int(total)


def arm_train_config(cfg: StudyConfig, arm: Arm, run: Path) -> TrainConfig:
    """The training recipe of ``arm``: the study's ``train:`` with the arm's layers, seed, rank and folder."""
    train = cfg.train
    layers = "superweights" if arm.kind == "superweights-matched" else arm.kind
    lora = train.lora
    if arm.kind == "superweights-matched":
        if not train.superweights:
            raise SuperloraError("superweights-matched needs train.superweights (the study identifies them first)")
        selected, total = superweight_block_count(train.superweights)
        rank = matched_rank(lora.r, total, selected)  # alpha/r kept: the update's scale stays the arm's own
        lora = dataclasses.replace(lora, r=rank, alpha=lora.alpha * rank / lora.r)
    seed = arm.seed if arm.seed is not None else train.seed
    return dataclasses.replace(train, layers=layers, seed=seed, lora=lora, output_dir=str(run), resume=False)
