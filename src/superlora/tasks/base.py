"""What a task is: its samples, template, loss mask, decoding protocol, metrics and primary metric.

``training/``, ``evaluation/``, ``study/`` and ``app/`` ask the task and know no dataset. A task gets its own
config section (``task:`` of a recipe), never the whole training config, and imports neither ``training/``
nor ``app/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from superlora.data.shapes import Completion, Conversation, Labeled, Sample
from superlora.data.tokenize import LossOn, tokenize_completion, tokenize_conversation, tokenize_labeled
from superlora.errors import SuperloraError

if TYPE_CHECKING:
    from superlora.data.templates import Template
    from superlora.evaluation.decode import DecodeConfig


@dataclass(frozen=True)
class Metric:
    """A column of the task's tables: its name, whether higher is better, and how it prints."""

    name: str
    higher_is_better: bool = True
    percent: bool = False
    digits: int = 4

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.{max(self.digits - 2, 1)}f}%" if self.percent else f"{value:.{self.digits}f}"


@dataclass(frozen=True)
class EvalItem:
    """One thing to generate for and score: ``prompt`` is what the template renders, ``key`` what outputs
    files show, ``sample`` the whole training-shaped sample when the task also scores its held-out loss."""

    key: str
    prompt: Any
    references: list[str]
    sample: Sample | None = None


@dataclass(frozen=True)
class ScoreOptions:
    """Scoring switches some tasks honour (E2E: the official scorer's -p mode, METEOR needs Java)."""

    python_nist: bool = False
    skip_meteor: bool = False


class Task(ABC):
    """One task, built from its config section."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]  # report columns, the primary one first
    teacher_forced_loss: ClassVar[bool] = False  # evaluation also reports held-out loss and perplexity
    head: ClassVar[str] = "lm"  # "lm": a causal LM that generates; "classifier": a sequence-classification head
    labels: ClassVar[tuple[str, ...]] = ()  # a classifier's class names, in index order

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def model_kwargs(self) -> dict[str, Any]:
        """How ``load_model`` must load a model for this task: its head (and a classifier's class count)."""
        return {"head": "classifier", "num_labels": len(self.labels)} if self.head == "classifier" else {}

    @property
    def primary(self) -> Metric:
        """The metric a study ranks arms by."""
        return self.metrics[0]

    @property
    def secondary(self) -> Metric:
        """The metric plotted beside the primary one (E2E: the slot error rate)."""
        return self.metrics[-1]

    def axis_label(self, metric: Metric) -> str:
        return metric.name

    def describe_training(self, limit: int | None) -> str:
        """The training data in a phrase, for reports."""
        return f"task {self.name} ({limit or 'all'} samples)"

    def describe_evaluation(self, count: int | str, split: str, decode: DecodeConfig) -> str:
        """What evaluation decodes, in a phrase, for reports."""
        how = "greedy" if decode.num_beams == 1 else f"beam {decode.num_beams}"
        return f"{count} {split} items, {how}, at most {decode.max_new_tokens} new tokens"

    # -- data --------------------------------------------------------------------------------------------
    def check(self) -> None:  # noqa: B027 (most tasks have something to check; the default is nothing)
        """Refuse a config whose data cannot be found, before anything is written (no loading yet)."""

    @abstractmethod
    def template(self) -> Template: ...

    @abstractmethod
    def train_samples(self, limit: int | None) -> list[Sample]: ...

    def heldout_samples(self) -> list[Sample]:
        """Samples kept out of training for the validation loss logged while training (none by default)."""
        return []

    def loss_on(self) -> LossOn:
        return "assistant"

    def tokenize(self, tokenizer: Any, template: Template, sample: Sample, max_length: int) -> dict | None:
        """The row the trainer sees: the loss mask follows from the sample's shape."""
        if isinstance(sample, Completion):
            return tokenize_completion(tokenizer, template, sample, max_length)
        if isinstance(sample, Conversation):
            return tokenize_conversation(tokenizer, template, sample, max_length, self.loss_on())
        if isinstance(sample, Labeled) and self.head == "classifier":
            return tokenize_labeled(tokenizer, template, sample, max_length)
        raise SuperloraError(f"task {self.name} cannot train a causal LM on {type(sample).__name__} samples")

    def tokenize_all(self, tokenizer: Any, template: Template, samples: list, max_length: int) -> tuple[list, int]:
        """The samples as rows, and how many were left out because no labelled token fitted max_length."""
        rows = [self.tokenize(tokenizer, template, sample, max_length) for sample in samples]
        kept = [row for row in rows if row is not None]
        return kept, len(rows) - len(kept)

    def describe_data(self, **filters: str) -> list[str]:
        """Lines for ``superlora data check``: what the data hold, every row validated (``filters``: the
        task's own, e.g. E2E's variant and split)."""
        return [f"{len(self.train_samples(None)):,} training samples"]

    # -- evaluation --------------------------------------------------------------------------------------
    @abstractmethod
    def decode_defaults(self) -> DecodeConfig: ...

    @abstractmethod
    def eval_items(self, split: str, limit: int | None) -> list[EvalItem]: ...

    @abstractmethod
    def score(self, items: list[EvalItem], outputs: list[str], options: ScoreOptions) -> dict:
        """{"metrics": {name: value}, ...}; keys starting with ``_`` are for ``write_outputs`` only."""

    @abstractmethod
    def write_outputs(self, out: Path, items: list[EvalItem], outputs: list[str], scores: dict) -> list[str]:
        """Write the outputs (and per-output checks) into ``out``; return the file names written."""

    def read_outputs(self, folder: Path, items: list[EvalItem]) -> list[str] | None:
        """The outputs ``write_outputs`` wrote into ``folder``, in the order of ``items`` (None: not readable)."""
        return None

    def item_values(self, items: list[EvalItem], outputs: list[str]) -> tuple[Any, Callable[[Any], float]] | None:
        """Per-item values and the function that turns a selection of them into the primary metric, for the
        study's paired bootstrap (E2E: BLEU's n-gram statistics; exact match: 0/1 and the mean); None: none."""
        return None

    def values(self, scores: dict) -> dict[str, float | None]:
        """Every metric of ``metrics`` from a score dict (what tables and the study read)."""
        return dict(scores["metrics"])

    def score_lines(self, scores: dict) -> list[str]:
        """The scores as terminal lines."""
        values = self.values(scores)
        return [f"{m.name:<14} {m.format(values.get(m.name))}" for m in self.metrics]
