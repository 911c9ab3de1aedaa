"""E2E scoring of one set of outputs: the five official metrics and the slot error rate, and the files."""

from __future__ import annotations

import csv
import time
from pathlib import Path


def score_outputs(
    mrs: list[str], refs: list[list[str]], outputs: list[str], python_nist: bool = False, skip_meteor: bool = False
) -> dict:
    """The five metrics and SER as a JSON-ready dict; ``_ser_examples`` holds the per-output checks."""
    from superlora.evaluation.metrics import score_corpus
    from superlora.tasks.e2e.ser import slot_error_rate

    started = time.perf_counter()
    corpus = score_corpus(refs, outputs, python_nist=python_nist, skip_meteor=skip_meteor)
    ser = slot_error_rate(mrs, outputs)
    return {
        "metrics": corpus.metrics(),
        "ser": ser.summary(),
        "outputs": corpus.outputs,
        "mteval": corpus.mteval,
        "ptb_tokenizer": corpus.ptb_tokenizer,
        "notes": corpus.notes,
        "scoring_seconds": round(time.perf_counter() - started, 2),
        "_ser_examples": ser.examples,
    }


def write_outputs(out: Path, mrs: list[str], outputs: list[str], checks: list | None = None) -> None:
    """``outputs.tsv`` (challenge format: MR<TAB>output) and, given the checks, ``slot_errors.tsv``."""
    with (out / "outputs.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["MR", "output"])
        writer.writerows(zip(mrs, outputs, strict=True))
    if checks is None:
        return
    with (out / "slot_errors.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["MR", "output", "missing", "wrong", "added"])
        for mr, output, check in zip(mrs, outputs, checks, strict=True):
            if check.errors:
                writer.writerow([mr, output, "; ".join(check.missing), "; ".join(check.wrong), "; ".join(check.added)])


def _fmt(value: float | None, digits: int = 4) -> str:
    return "skipped" if value is None else f"{value:.{digits}f}"


def score_lines(scores: dict, ser: dict) -> list[str]:
    """The five metrics and SER as terminal lines."""
    lines = [f"{name:<8} {_fmt(scores[name])}" for name in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")]
    lines.append(
        f"{'SER':<8} {ser['SER'] * 100:.2f}%  (missing {ser['missing']}, wrong {ser['wrong']}, "
        f"added {ser['added']} of {ser['slots']} slots)"
    )
    return lines
