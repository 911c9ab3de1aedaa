"""``superlora evaluate``'s recipe: what to decode with which model, and how; the task says the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from superlora.evaluation.decode import DecodeConfig
from superlora.tasks import DefaultTask, TaskSection


@dataclass
class EvaluateConfig:
    """One evaluation. With ``adapter`` a training run, ``model`` and ``task`` start from the run's own
    (run.json), and the prompt is the run's recorded template: no flag is needed to prompt it as trained."""

    model: str | None = None  # None: the run's base model, else the default offline model
    adapter: str | None = None  # a training run folder (with adapter/) or an adapter folder
    task: TaskSection = field(default_factory=DefaultTask)
    split: str = "test"
    limit: int | None = None  # first N items (None: all)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # unset fields: the task's protocol
    threads: int | Literal["auto"] | None = "auto"  # torch threads; auto: the cores no other job keeps busy
    out: str | None = None  # None: RUN/eval-SPLIT with an adapter run, else evals/MODEL-TASK-SPLIT
    skip_meteor: bool = False  # E2E: METEOR needs Java
    python_nist: bool = False  # E2E: BLEU/NIST as the official scorer's -p mode
    max_length: int = 1024  # tokens of a held-out sample for its teacher-forced loss (chat)
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
