"""Instruction / chat fine-tuning: conversations in, loss on the assistant's turns, the model's chat template.

Data come from one or more sources (ShareGPT, OpenAI messages or Alpaca rows; JSONL, JSON, CSV, parquet or
a Hub dataset), mixed by weight: a source of weight 2 is seen twice as often per row as one of weight 1,
0.5 half as often (a seeded sample), so adding a dataset to the mix is one line of the recipe.
Evaluation greedily answers the last user turn of each held-out conversation and reports the assistant-token
loss and perplexity of the reference answers; with ``answer: gsm8k`` also the exact-match accuracy of the
final ``#### N`` number (GSM8K's answer format).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from superlora.data.formats import RowFormat, load_conversations
from superlora.data.shapes import Conversation
from superlora.data.templates import ChatTemplate
from superlora.data.tokenize import LossOn
from superlora.errors import SuperloraError
from superlora.tasks.base import EvalItem, Metric, ScoreOptions, Task


@dataclass
class ChatSource:
    """One dataset of the mix: a file (or Hub id), its row format, its weight, and the Hub split to read."""

    path: str = ""
    format: RowFormat = "auto"
    weight: float = 1.0
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("a chat source needs a path (a .jsonl/.json/.csv/.parquet file or a Hub dataset id)")
        if not (self.weight > 0 and self.weight < float("inf")):
            raise ValueError(f"a chat source's weight must be a positive finite number, got {self.weight}")


@dataclass
class ChatConfig:
    """Chat SFT. ``sources`` are mixed by weight; ``test`` holds the conversations evaluation answers;
    ``heldout`` conversations of the mix are kept out of training for the validation loss."""

    name: Literal["chat"] = "chat"
    sources: list[ChatSource] = field(default_factory=list)
    test: ChatSource | None = None
    heldout: int = 0
    system: str | None = None  # prepended to conversations without a system turn
    chat_template: str | None = None  # None: the tokenizer's own; "chatml"; or a Jinja template
    loss_on: LossOn = "assistant"  # assistant: every assistant turn; last: the last one; all: every token
    answer: Literal["none", "gsm8k"] = "none"  # how generated answers are scored

    def __post_init__(self) -> None:
        if self.heldout < 0:
            raise ValueError(f"task.heldout must be >= 0, got {self.heldout}")


ANSWER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def _number(text: str) -> str:
    """A number as GSM8K compares them: no thousands separators, no trailing zeros after a point."""
    text = text.replace(",", "")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def final_answer(text: str) -> str | None:
    """The ``#### N`` answer of a GSM8K solution (the strict format the training data teach), or None."""
    found = ANSWER.findall(text)
    return _number(found[-1]) if found else None


def last_number(text: str) -> str | None:
    """The last number in a text (the lenient reading, for models that do not write ``####``)."""
    found = [m for m in NUMBER.findall(text) if any(ch.isdigit() for ch in m)]
    return _number(found[-1]) if found else None


class ChatTask(Task):
    name = "chat"
    teacher_forced_loss = True
    cfg: ChatConfig

    @property
    def metrics(self) -> tuple[Metric, ...]:  # type: ignore[override]
        loss = (Metric("loss", higher_is_better=False), Metric("perplexity", higher_is_better=False, digits=2))
        if self.cfg.answer == "gsm8k":
            return (
                Metric("exact_match", percent=True),
                Metric("exact_match_last_number", percent=True),
                *loss,
                Metric("answered", percent=True),
            )
        return loss

    @property
    def secondary(self) -> Metric:
        return next(m for m in self.metrics if m.name == "loss")

    def describe_training(self, limit: int | None) -> str:
        names = " + ".join(
            f"{Path(s.path).name}" + (f" x{s.weight:g}" if s.weight != 1 else "") for s in self.cfg.sources
        )
        return f"chat SFT on {names} ({limit or 'all'} conversations, loss on {self.cfg.loss_on} turns)"

    def describe_evaluation(self, count, split: str, decode) -> str:
        test = Path(self.cfg.test.path).name if self.cfg.test and split == "test" else split
        how = "greedy" if decode.num_beams == 1 else f"beam {decode.num_beams}"
        return f"{count} conversations of {test}, {how}, at most {decode.max_new_tokens} new tokens"

    def check(self) -> None:
        if not self.cfg.sources:
            raise SuperloraError("task.sources: name at least one chat dataset (task.sources='[{path: FILE}]')")
        for i, source in enumerate([*self.cfg.sources, *([self.cfg.test] if self.cfg.test else [])]):
            path = Path(source.path).expanduser()
            if (
                path.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet")
                or source.path.startswith((".", "/", "~"))
            ) and not path.is_file():
                which = "task.test" if i == len(self.cfg.sources) else f"task.sources[{i}]"
                raise SuperloraError(f"{which}.path: chat data file not found: {source.path}")

    def template(self) -> ChatTemplate:
        return ChatTemplate(self.cfg.chat_template, self.cfg.system)

    def loss_on(self) -> LossOn:
        return self.cfg.loss_on

    def _mix(self) -> list[Conversation]:
        """Every source's conversations, each repeated or sampled by its weight, shuffled (seeded)."""
        rng = random.Random(0)
        mixed: list[Conversation] = []
        for source in self.cfg.sources:
            rows = load_conversations(source.path, source.format, source.split)
            whole, part = divmod(source.weight * len(rows), len(rows))
            mixed += rows * int(whole) + rng.sample(rows, round(part))
        rng.shuffle(mixed)
        return mixed

    def _split(self) -> tuple[list[Conversation], list[Conversation]]:
        cached = getattr(self, "_cached_split", None)
        if cached is None:
            mixed = self._mix()
            if self.cfg.heldout >= len(mixed):
                raise SuperloraError(
                    f"task.heldout={self.cfg.heldout} leaves nothing of the {len(mixed)} conversations"
                )
            cut = len(mixed) - self.cfg.heldout
            cached = self._cached_split = (mixed[:cut], mixed[cut:])
        return cached

    def train_samples(self, limit: int | None) -> list[Conversation]:
        train = self._split()[0]
        return train[:limit] if limit else train

    def heldout_samples(self) -> list[Conversation]:
        return self._split()[1]

    def describe_data(self, **filters: str) -> list[str]:
        lines = []
        for source in self.cfg.sources + ([self.cfg.test] if self.cfg.test else []):
            rows = load_conversations(source.path, source.format, source.split)
            turns = sum(len(c.messages) for c in rows)
            lines.append(f"{source.path}: {len(rows):,} conversations, {turns / len(rows):.1f} turns each, valid")
        return lines

    def decode_defaults(self):
        from superlora.evaluation.decode import DecodeConfig

        # greedy, as GSM8K accuracy is usually reported; long enough for a worked solution
        return DecodeConfig(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=320, batch_size=16)

    def eval_items(self, split: str, limit: int | None) -> list[EvalItem]:
        """``test``: the ``task.test`` conversations; ``validation``: the held-out part of the mix."""
        if split == "test":
            if self.cfg.test is None:
                raise SuperloraError("task.test: name the held-out conversations to evaluate on (a file or Hub id)")
            rows = load_conversations(self.cfg.test.path, self.cfg.test.format, self.cfg.test.split)
        elif split == "validation":
            rows = self.heldout_samples()
            if not rows:
                raise SuperloraError("eval split 'validation' needs task.heldout > 0")
        elif split == "train":
            rows = self.train_samples(None)
        else:
            raise SuperloraError(f"unknown eval split {split!r} for the chat task; choose test, validation or train")
        rows = rows[:limit] if limit else rows
        return [
            EvalItem(
                key=c.messages[-2].content,
                prompt=Conversation(c.messages[:-1]),
                references=[c.messages[-1].content],
                sample=c,
            )
            for c in rows
        ]

    def score(self, items: list[EvalItem], outputs: list[str], options: ScoreOptions) -> dict:
        metrics: dict[str, float | None] = {}
        checks = []
        if self.cfg.answer == "gsm8k":
            strict = lenient = answered = 0
            for item, output in zip(items, outputs, strict=True):
                gold = final_answer(item.references[0])
                got, loose = final_answer(output), last_number(output)
                strict += got is not None and got == gold
                lenient += loose is not None and loose == gold
                answered += got is not None
                checks.append(
                    {"gold": gold, "answer": got, "last_number": loose, "correct": got is not None and got == gold}
                )
            n = max(len(items), 1)
            metrics |= {"exact_match": strict / n, "exact_match_last_number": lenient / n, "answered": answered / n}
        return {"metrics": metrics, "_checks": checks}

    def read_outputs(self, folder: Path, items: list[EvalItem]) -> list[str] | None:
        path = Path(folder) / "outputs.jsonl"
        if not path.is_file():
            return None
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r["output"] for r in records] if [r["prompt"] for r in records] == [i.key for i in items] else None

    def item_values(self, items: list[EvalItem], outputs: list[str]):
        if self.cfg.answer != "gsm8k":
            return None
        import numpy as np

        checks = self.score(items, outputs, ScoreOptions())["_checks"]
        return np.array([float(c["correct"]) for c in checks]), lambda values: float(np.mean(values))

    def write_outputs(self, out: Path, items: list[EvalItem], outputs: list[str], scores: dict) -> list[str]:
        checks = scores.get("_checks") or [{}] * len(items)
        with (out / "outputs.jsonl").open("w", encoding="utf-8") as fh:
            for item, output, check in zip(items, outputs, checks, strict=True):
                record = {"prompt": item.key, "reference": item.references[0], "output": output, **check}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return ["outputs.jsonl"]
