"""SST-2 (Socher et al. 2013, GLUE): a movie-review phrase in, negative or positive out, with a classification head.

Rows come from a folder holding ``train.tsv``, ``validation.tsv`` and ``test.tsv`` (``task.source``, else
``$SUPERLORA_SST2_DIR``): a ``sentence<TAB>label`` header, label 0 = negative, 1 = positive. The text is
already lower-cased and tokenised; train and validation sentences end in a space, which is stripped.
The model gets a new sequence-classification head (an encoder's on [CLS], a decoder's on its last token),
trained in full and saved with the adapter; LoRA goes into the chosen blocks as for every task, and
``layers: none`` trains the head alone (the baseline that shows what LoRA adds).
A text longer than ``data.max_length`` is cut to it (keeping the tokenizer's closing token), and the count of
cut texts is said in one line. Scores: accuracy and macro-F1, with the confusion matrix.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from superlora.data.shapes import Labeled, Sample
from superlora.data.templates import LabelTemplate, Template
from superlora.errors import SuperloraError
from superlora.tasks.base import EvalItem, Metric, ScoreOptions, Task
from superlora.tasks.files import SplitFiles

if TYPE_CHECKING:
    from superlora.evaluation.decode import DecodeConfig

SST2_DIR_ENV = "SUPERLORA_SST2_DIR"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
LABELS: tuple[str, ...] = ("negative", "positive")
FILES = SplitFiles("SST-2", SST2_DIR_ENV, SPLITS, ".tsv")


@dataclass
class Sst2Config:
    """SST-2 sentiment classification (evaluate scores ``split=validation`` or ``split=test``)."""

    name: Literal["sst2"] = "sst2"
    source: str | None = None  # folder holding train/validation/test.tsv; None: $SUPERLORA_SST2_DIR


def load_split(split: str, source: str | None) -> list[Labeled]:
    """Every row of one split, validated: a missing file, an empty text or a label outside 0/1 is one line."""
    path = FILES.file(split, source)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["sentence", "label"]:
            raise SuperloraError(f"{path}: expected the header 'sentence<TAB>label', got {header!r}")
        rows = []
        for line, fields in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if len(fields) != 2:
                raise SuperloraError(f"{where}: expected 2 tab-separated fields, got {len(fields)}")
            text, label = fields[0].strip(), fields[1].strip()
            if not text:
                raise SuperloraError(f"{where}: empty sentence")
            if label not in ("0", "1"):
                raise SuperloraError(f"{where}: label {label!r} is not one of 0 (negative), 1 (positive)")
            rows.append(Labeled(text, int(label)))
    if not rows:
        raise SuperloraError(f"{path}: no rows")
    return rows


def confusion(gold: list[int], predicted: list[int], classes: int) -> list[list[int]]:
    """counts[gold][predicted]."""
    counts = [[0] * classes for _ in range(classes)]
    for g, p in zip(gold, predicted, strict=True):
        counts[g][p] += 1
    return counts


def macro_f1(counts: list[list[int]]) -> float:
    """The unweighted mean over classes of F1 (a class never predicted nor present counts 0)."""
    scores = []
    for c in range(len(counts)):
        tp = counts[c][c]
        predicted = sum(row[c] for row in counts)
        actual = sum(counts[c])
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / len(scores)


class Sst2Task(Task):
    name = "sst2"
    metrics = (Metric("accuracy"), Metric("macro_f1"))
    head = "classifier"
    labels = LABELS

    def describe_training(self, limit: int | None) -> str:
        return f"SST-2 train ({limit or 'all 67,349'} phrases)"

    def describe_evaluation(self, count: int | str, split: str, decode: DecodeConfig) -> str:
        return f"{count} SST-2 {split} sentences, argmax of the head"

    def check(self) -> None:
        """Every training row is read and checked (0.2 s) before a model loads or a run folder appears."""
        self._train = load_split("train", self.cfg.source)

    def template(self) -> Template:
        return LabelTemplate(LABELS)

    def train_samples(self, limit: int | None) -> list[Sample]:
        rows = getattr(self, "_train", None) or load_split("train", self.cfg.source)
        return list(rows[:limit] if limit else rows)

    def tokenize_all(self, tokenizer: Any, template: Template, samples: list, max_length: int) -> tuple[list, int]:
        rows, dropped = super().tokenize_all(tokenizer, template, samples, max_length)
        cut = sum(1 for row in rows if row.pop("truncated", False))
        if cut:
            print(f"sst2: {cut:,} of {len(rows):,} texts were longer than max_length={max_length} tokens and were cut")
        return rows, dropped

    def describe_data(self, **filters: str) -> list[str]:
        lines = []
        for split in SPLITS:
            rows = load_split(split, self.cfg.source)
            positive = sum(r.label for r in rows)
            lines.append(f"{split}: {len(rows):,} sentences, {positive / len(rows):.1%} positive")
        return lines

    def decode_defaults(self) -> DecodeConfig:
        from superlora.evaluation.decode import DecodeConfig

        return DecodeConfig(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=1, batch_size=32)

    def eval_items(self, split: str, limit: int | None) -> list[EvalItem]:
        rows = load_split(split, self.cfg.source)
        rows = rows[:limit] if limit else rows
        return [EvalItem(key=r.text, prompt=r.text, references=[LABELS[r.label]], sample=r) for r in rows]

    def score(self, items: list[EvalItem], outputs: list[str], options: ScoreOptions) -> dict:
        unknown = sorted({o for o in outputs if o not in LABELS})
        if unknown:
            raise SuperloraError(f"sst2: predictions outside the label set {LABELS}: {unknown[:3]}")
        gold = [LABELS.index(i.references[0]) for i in items]
        predicted = [LABELS.index(o) for o in outputs]
        counts = confusion(gold, predicted, len(LABELS))
        accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(items)
        return {
            "metrics": {"accuracy": accuracy, "macro_f1": macro_f1(counts)},
            "labels": list(LABELS),
            "confusion": counts,  # rows: gold label, columns: predicted
        }

    def write_outputs(self, out: Path, items: list[EvalItem], outputs: list[str], scores: dict) -> list[str]:
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for item, output in zip(items, outputs, strict=True):
                record = {"text": item.key, "label": item.references[0], "predicted": output}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        (out / "confusion.txt").write_text(confusion_table(scores["confusion"]), encoding="utf-8")
        return ["predictions.jsonl", "confusion.txt"]

    def read_outputs(self, folder: Path, items: list[EvalItem]) -> list[str] | None:
        path = folder / "predictions.jsonl"
        if not path.is_file():
            return None
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if [r["text"] for r in rows] != [i.key for i in items]:
            return None
        return [r["predicted"] for r in rows]

    def item_values(self, items: list[EvalItem], outputs: list[str]):
        """0/1 correctness per sentence and the mean (accuracy), for the study's paired bootstrap."""
        import numpy as np

        values = np.array([float(o == i.references[0]) for i, o in zip(items, outputs, strict=True)])
        return values, lambda chosen: float(np.mean(chosen))

    def score_lines(self, scores: dict) -> list[str]:
        counts = scores["confusion"]
        cells = ", ".join(f"{g}->{p} {counts[i][j]:,}" for i, g in enumerate(LABELS) for j, p in enumerate(LABELS))
        return [*super().score_lines(scores), f"{'confusion':<14} {cells} (gold->predicted)"]


def confusion_table(counts: list[list[int]]) -> str:
    """The confusion matrix as text: one row per gold label, one column per prediction."""
    width = max(len(label) for label in LABELS) + 2
    lines = ["gold \\ predicted".ljust(width + 6) + "".join(label.rjust(width) for label in LABELS)]
    for label, row in zip(LABELS, counts, strict=True):
        lines.append(label.ljust(width + 6) + "".join(f"{n:,}".rjust(width) for n in row))
    return "\n".join(lines) + "\n"
