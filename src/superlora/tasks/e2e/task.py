"""E2E as a task: completion samples (MR -> reference), the LoRA paper's beam search, the official metrics.

Behaviour is the one superlora had before tasks existed: the same prompt, tokenization, loss mask, stop
tokens (eos or a line break), decoding defaults and scores.
"""

from __future__ import annotations

from pathlib import Path

from superlora.data.shapes import Completion
from superlora.data.templates import CompletionTemplate
from superlora.errors import SuperloraError
from superlora.tasks.base import EvalItem, Metric, ScoreOptions, Task
from superlora.tasks.e2e import data
from superlora.tasks.e2e.config import E2EConfig


class E2ETask(Task):
    name = "e2e"
    metrics = (
        Metric("BLEU"),
        Metric("NIST"),
        Metric("METEOR"),
        Metric("ROUGE_L"),
        Metric("CIDEr"),
        Metric("SER", higher_is_better=False, percent=True),
    )
    cfg: E2EConfig

    def check(self) -> None:
        if self.cfg.source is not None and not Path(self.cfg.source).expanduser().is_dir():
            raise SuperloraError(f"task.source: E2E data folder not found: {self.cfg.source}")

    def template(self) -> CompletionTemplate:
        return data.TEMPLATE

    def train_samples(self, limit: int | None) -> list[Completion]:
        examples = data.load_split(self.cfg.split, self.cfg.variant, self.cfg.source)
        if limit is not None:
            examples = examples[:limit]
        return [Completion(ex.mr, ex.ref) for ex in examples]

    def describe_data(self, variant: str | None = None, split: str | None = None) -> list[str]:
        lines = [f"{'variant':<9} {'split':<11} {'rows':>7} {'MRs':>6} {'ref groups':>11}"]
        for v in [variant] if variant else data.VARIANTS:
            for s in [split] if split else data.SPLITS:
                examples = data.load_split(s, v, self.cfg.source)
                mrs, groups = len({ex.mr for ex in examples}), len(data.group_references(examples))
                lines.append(f"{v:<9} {s:<11} {len(examples):>7,} {mrs:>6,} {groups:>11,}")
        return lines

    def decode_defaults(self):
        from superlora.evaluation.decode import DecodeConfig

        # the LoRA paper's E2E protocol
        return DecodeConfig(num_beams=10, length_penalty=0.9, no_repeat_ngram_size=4, max_new_tokens=64, batch_size=8)

    def eval_items(self, split: str, limit: int | None) -> list[EvalItem]:
        """One item per MR (references grouped by orig_mr, as the official scorer groups them)."""
        groups = data.group_references(data.load_split(split, self.cfg.eval_variant, self.cfg.source))
        groups = groups[:limit] if limit else groups
        return [EvalItem(key=mr, prompt=mr, references=refs) for mr, refs in groups]

    def score(self, items: list[EvalItem], outputs: list[str], options: ScoreOptions) -> dict:
        from superlora.tasks.e2e.score import score_outputs

        mrs, refs = [i.key for i in items], [i.references for i in items]
        return score_outputs(mrs, refs, outputs, options.python_nist, options.skip_meteor)

    def values(self, scores: dict) -> dict[str, float | None]:
        return {**scores["metrics"], "SER": scores["ser"]["SER"]}

    def write_outputs(self, out: Path, items: list[EvalItem], outputs: list[str], scores: dict) -> list[str]:
        from superlora.tasks.e2e.score import write_outputs

        write_outputs(out, [i.key for i in items], outputs, scores.get("_ser_examples"))
        return ["outputs.tsv", "slot_errors.tsv"]

    def read_outputs(self, folder: Path, items: list[EvalItem]) -> list[str] | None:
        import csv

        path = Path(folder) / "outputs.tsv"
        if not path.is_file():
            return None
        with path.open(encoding="utf-8", newline="") as f:
            by_mr = {row["MR"]: row["output"] for row in csv.DictReader(f, delimiter="\t")}
        return [by_mr[i.key] for i in items] if all(i.key in by_mr for i in items) else None

    def item_values(self, items: list[EvalItem], outputs: list[str]):
        from superlora.evaluation.bootstrap import bleu_from_stats, bleu_item_stats

        return bleu_item_stats([i.references for i in items], outputs), bleu_from_stats

    def axis_label(self, metric: Metric) -> str:
        return {"BLEU": "BLEU (official-equivalent scorer)", "SER": "slot error rate"}.get(metric.name, metric.name)

    def describe_training(self, limit: int | None) -> str:
        return f"{self.cfg.variant} E2E {self.cfg.split} ({limit or 'all'} rows)"

    def describe_evaluation(self, count, split: str, decode) -> str:
        return (
            f"{count} {self.cfg.eval_variant} {split} MRs with beam {decode.num_beams}, length penalty "
            f"{decode.length_penalty:g}, no-repeat n-gram {decode.no_repeat_ngram_size}"
        )

    def score_lines(self, scores: dict) -> list[str]:
        from superlora.tasks.e2e.score import score_lines

        return score_lines(scores["metrics"], scores["ser"])
