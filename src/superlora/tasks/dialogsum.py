"""DialogSum (Chen et al. 2021): a two-person dialogue in, a one-paragraph summary out, scored with ROUGE.

Rows come from a local folder holding ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (``task.source``,
else ``$SUPERLORA_DIALOGSUM_DIR``; licence CC BY-NC-SA 4.0): ``{"fname", "dialogue", "summary", "topic"}``, the
test rows with three references ``summary1..3``. Samples are completions (instruction + dialogue -> summary),
so the loss is on the summary only; with ``chat_template`` the same text is one user turn and the summary the
assistant's reply, rendered by the model's chat template (loss on the reply only). Summaries are one paragraph:
their whitespace is collapsed, so a line break (or eos) ends generation.

A training row longer than ``data.max_length`` keeps its summary whole and loses the end of its dialogue; how
many were cut is said in one line (a row whose summary alone does not fit is left out, and counted as such).
Evaluation decodes the whole dialogue: the longest test dialogue is 1,372 SmolLM2 tokens, far inside its
8,192 positions, and cutting only the training rows keeps every test item comparable across recipes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from superlora.data.formats import read_rows
from superlora.data.shapes import Completion, Conversation, Message, Sample
from superlora.data.templates import ChatTemplate, CompletionTemplate, Template
from superlora.errors import SuperloraError
from superlora.tasks.base import EvalItem, Metric, ScoreOptions, Task
from superlora.tasks.files import SplitFiles

DIALOGSUM_DIR_ENV = "SUPERLORA_DIALOGSUM_DIR"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
FILES = SplitFiles("DialogSum", DIALOGSUM_DIR_ENV, SPLITS, ".jsonl")
ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")
INSTRUCTION = "Summarize the following dialogue."
# Plain prompt: the template owns the instruction, so run.json records it and evaluate prompts the same way.
TEMPLATE = CompletionTemplate(prompt_format=INSTRUCTION + "\n\n{prompt}\n\nSummary:", target_prefix=" ", one_line=True)
CHAT_PREFIX = INSTRUCTION + "\n\n"  # the user turn in chat mode: instruction, then the dialogue
WHOLE = 10**9  # a max_length nothing reaches: tokenize a row uncut to measure it


@dataclass
class DialogSumConfig:
    """DialogSum summarisation. ``heldout``: the first N validation dialogues whose summary loss is logged
    while training (None: all 500; 0: none). ``chat_template``: false for the plain prompt; true for the
    model's own chat template, or ``chatml`` / a Jinja template for models without one."""

    name: Literal["dialogsum"] = "dialogsum"
    source: str | None = None  # folder holding train/validation/test.jsonl; None: $SUPERLORA_DIALOGSUM_DIR
    heldout: int | None = 100
    chat_template: bool | str = False

    def __post_init__(self) -> None:
        if self.heldout is not None and self.heldout < 0:
            raise ValueError(f"task.heldout must be >= 0 (or null for all), got {self.heldout}")


@dataclass(frozen=True)
class Dialogue:
    """One row: its file name (the key outputs files show), the dialogue and every reference summary."""

    fname: str
    dialogue: str
    summaries: tuple[str, ...]


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise SuperloraError(f"{where}: " + (f"no '{key}' field" if value is None else f"'{key}' is not a string"))
    if not value.strip():
        raise SuperloraError(f"{where}: empty {key}")
    return value


def _dialogue(row: Any, where: str, n: int) -> Dialogue:
    if not isinstance(row, dict):
        raise SuperloraError(f"{where}: expected a JSON object, got {type(row).__name__}")
    numbered = sorted((k for k in row if k.startswith("summary") and k[7:].isdigit()), key=lambda k: int(k[7:]))
    keys = ["summary"] if "summary" in row else numbered  # test rows: summary1, summary2, summary3
    if not keys:
        raise SuperloraError(f"{where}: no 'summary' field (nor summary1, summary2, ...)")
    summaries = tuple(" ".join(_text(row, key, where).split()) for key in keys)
    fname = row.get("fname")
    return Dialogue(str(fname) if fname else f"row{n}", _text(row, "dialogue", where).strip(), summaries)


def load_split(split: str, source: str | None) -> list[Dialogue]:
    """Every row of one split, validated: a missing file or an empty dialogue or summary is one line."""
    path = FILES.file(split, source)
    rows = [_dialogue(row, where, n) for n, (where, row) in enumerate(read_rows(path), start=1)]
    if not rows:
        raise SuperloraError(f"{path}: no rows")
    return rows


def rouge_scores(references: list[list[str]], outputs: list[str]) -> list[dict[str, float]]:
    """Per item, ROUGE-1/2/L F-measure of the output against its best reference, per ROUGE type.

    Google's ``rouge-score`` (the reimplementation of ROUGE-1.5.5 that summarisation papers report) with the
    Porter stemmer; with several references ``score_multi`` keeps, for each type, the reference with the
    highest F-measure. The corpus score is the mean of these per-item maxima.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    items = []
    for refs, output in zip(references, outputs, strict=True):
        best = scorer.score_multi(refs, output)
        items.append({name: float(best[name].fmeasure) for name in ROUGE_TYPES})
    return items


class DialogSumTask(Task):
    name = "dialogsum"
    # ROUGE-L ranks the arms: its longest in-order match rewards a summary's word order as well as its words
    # (ROUGE-1 counts words alone); ROUGE-2, the strictest of the three about content, is plotted beside it.
    metrics = (
        Metric("rougeL"),
        Metric("rouge1"),
        Metric("rouge2"),
        Metric("output_words", digits=1),  # mean words an output: to read, not a goal (references: 19-23)
    )
    cfg: DialogSumConfig

    @property
    def secondary(self) -> Metric:
        return next(m for m in self.metrics if m.name == "rouge2")

    def _split(self, split: str) -> list[Dialogue]:
        cache = self.__dict__.setdefault("_rows", {})
        if split not in cache:
            cache[split] = load_split(split, self.cfg.source)
        return cache[split]

    # -- data --------------------------------------------------------------------------------------------
    def check(self) -> None:
        FILES.folder(self.cfg.source)

    def template(self) -> Template:
        if self.cfg.chat_template is False:
            return TEMPLATE
        return ChatTemplate(None if self.cfg.chat_template is True else str(self.cfg.chat_template))

    def _prompt(self, dialogue: str) -> str | Conversation:
        if self.cfg.chat_template is False:
            return dialogue
        return Conversation((Message("user", CHAT_PREFIX + dialogue),))

    def _sample(self, row: Dialogue) -> Sample:
        summary = row.summaries[0]
        if self.cfg.chat_template is False:
            return Completion(row.dialogue, summary)
        return Conversation((Message("user", CHAT_PREFIX + row.dialogue), Message("assistant", summary)))

    def train_samples(self, limit: int | None) -> list[Sample]:
        rows = self._split("train")
        return [self._sample(row) for row in (rows[:limit] if limit else rows)]

    def heldout_samples(self) -> list[Sample]:
        if self.cfg.heldout == 0:
            return []
        rows = self._split("validation")
        return [self._sample(row) for row in rows[: self.cfg.heldout]]

    def tokenize(self, tokenizer: Any, template: Template, sample: Sample, max_length: int) -> dict | None:
        return self._fit(tokenizer, template, sample, max_length)[0]

    def _fit(self, tokenizer: Any, template: Template, sample: Sample, max_length: int) -> tuple[dict | None, bool]:
        """The row, cut to ``max_length`` by dropping the end of its dialogue; and whether it was cut.

        None when even an empty dialogue leaves no room for the whole summary.
        """
        row = super().tokenize(tokenizer, template, sample, WHOLE)
        over = len(row["input_ids"]) - max_length
        if over <= 0:
            return row, False
        text, floor = (
            (sample.prompt, 0) if isinstance(sample, Completion) else (sample.messages[0].content, len(CHAT_PREFIX))
        )
        if not getattr(tokenizer, "is_fast", False):
            raise SuperloraError("cutting long dialogues needs a fast tokenizer (its offsets find token boundaries)")
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        while True:
            keep = len(offsets) - over  # prompt-text tokens that may stay
            cut = text[: offsets[keep][0]].rstrip() if keep > 0 else ""
            if len(cut) <= floor:
                return None, True
            row = super().tokenize(tokenizer, template, _with_prompt(sample, cut), WHOLE)
            left = len(row["input_ids"]) - max_length
            if left <= 0:
                return row, True
            over += left  # the cut re-tokenized longer than counted: cut further

    def tokenize_all(self, tokenizer: Any, template: Template, samples: list, max_length: int) -> tuple[list, int]:
        fitted = [self._fit(tokenizer, template, sample, max_length) for sample in samples]
        kept = [row for row, _ in fitted if row is not None]
        cut = sum(was_cut for row, was_cut in fitted if row is not None)
        dropped = len(fitted) - len(kept)
        if (cut or dropped) and os.environ.get("RANK", "0") == "0":  # once per job, not once per process
            left_out = f"; {dropped:,} left out, their summary alone too long" if dropped else ""
            print(
                f"dialogsum: {cut:,} of {len(samples):,} dialogues cut at the end to fit max_length={max_length} "
                f"(summaries kept whole){left_out}",
                flush=True,
            )
        return kept, dropped

    def describe_training(self, limit: int | None) -> str:
        how = "chat template" if self.cfg.chat_template is not False else "plain prompt"
        return f"DialogSum train ({limit or 'all'} dialogues, {how}, loss on the summary)"

    def describe_data(self, variant: str | None = None, split: str | None = None) -> list[str]:
        if variant:
            raise SuperloraError("--variant is E2E's; DialogSum has one release")
        lines = [f"{'split':<11} {'dialogues':>9} {'refs':>5} {'words/dialogue':>15} {'words/summary':>14}"]
        for s in [split] if split else SPLITS:
            rows = self._split(s)
            refs = {len(r.summaries) for r in rows}
            words = sum(len(r.dialogue.split()) for r in rows) / len(rows)
            summary = sum(len(x.split()) for r in rows for x in r.summaries) / sum(len(r.summaries) for r in rows)
            count = "/".join(map(str, sorted(refs)))
            lines.append(f"{s:<11} {len(rows):>9,} {count:>5} {words:>15.1f} {summary:>14.1f}")
        return lines

    # -- evaluation --------------------------------------------------------------------------------------
    def decode_defaults(self):
        from superlora.evaluation.decode import DecodeConfig

        # greedy; 96 new tokens hold 99.9% of the eval references and 99% of the training summaries (SmolLM2
        # tokens: eval p99 72, p99.9 97; train p99 83, median 32), so only a rambling output is cut
        return DecodeConfig(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=96, batch_size=8)

    def eval_items(self, split: str, limit: int | None) -> list[EvalItem]:
        """One item per dialogue with all its references (test: three, validation and train: one)."""
        rows = self._split(split)
        rows = rows[:limit] if limit else rows
        return [EvalItem(r.fname, self._prompt(r.dialogue), list(r.summaries), self._sample(r)) for r in rows]

    def describe_evaluation(self, count, split: str, decode) -> str:
        how = "greedy" if decode.num_beams == 1 else f"beam {decode.num_beams}"
        return f"{count} DialogSum {split} dialogues, {how}, at most {decode.max_new_tokens} new tokens"

    def score(self, items: list[EvalItem], outputs: list[str], options: ScoreOptions) -> dict:
        per_item = rouge_scores([i.references for i in items], outputs)
        n = max(len(items), 1)
        metrics = {name: sum(s[name] for s in per_item) / n for name in ROUGE_TYPES}
        metrics["output_words"] = sum(len(o.split()) for o in outputs) / n
        return {"metrics": metrics, "_items": per_item}

    def item_values(self, items: list[EvalItem], outputs: list[str]):
        import numpy as np

        values = np.array([s["rougeL"] for s in rouge_scores([i.references for i in items], outputs)])
        return values, lambda selection: float(np.mean(selection))

    def write_outputs(self, out: Path, items: list[EvalItem], outputs: list[str], scores: dict) -> list[str]:
        import json

        per_item = scores.get("_items") or [{}] * len(items)
        with (Path(out) / "outputs.jsonl").open("w", encoding="utf-8") as fh:
            for item, output, rouge in zip(items, outputs, per_item, strict=True):
                # no reference texts: they are DialogSum's (CC BY-NC-SA 4.0), found again by fname in the test file
                record = {"fname": item.key, "output": output, "references": len(item.references), **rouge}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return ["outputs.jsonl"]

    def read_outputs(self, folder: Path, items: list[EvalItem]) -> list[str] | None:
        import json

        path = Path(folder) / "outputs.jsonl"
        if not path.is_file():
            return None
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r["output"] for r in records] if [r["fname"] for r in records] == [i.key for i in items] else None


def _with_prompt(sample: Sample, text: str) -> Sample:
    """The sample with its prompt text (the dialogue, or the user turn) replaced by ``text``."""
    if isinstance(sample, Completion):
        return Completion(text, sample.completion)
    return Conversation((Message("user", text), *sample.messages[1:]))
