"""One ``evaluate()`` for the verb, the study and the app: decode a task's items, score, and (for tasks that
have it) the held-out loss of the references, teacher-forced the way training computes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superlora.errors import SuperloraError
from superlora.evaluation.decode import DecodeConfig, timed_generate
from superlora.evaluation.loss import mean_token_loss
from superlora.tasks.base import EvalItem, ScoreOptions, Task

if TYPE_CHECKING:
    from superlora.data.templates import Template


def heldout_loss(
    model, tokenizer, task: Task, template: Template, samples: list, max_length: int, batch_size: int = 4
) -> dict[str, float]:
    """The training loss (its mask, no label smoothing) of held-out samples, and its perplexity."""
    rows, _ = task.tokenize_all(tokenizer, template, samples, max_length)
    if not rows:
        raise SuperloraError("no held-out sample has a token to score within max_length")
    return mean_token_loss(model, rows, template.pad_id(tokenizer), batch_size)


def evaluate(
    task: Task,
    model,
    tokenizer,
    items: list[EvalItem],
    decode: DecodeConfig,
    template: Template | None = None,
    options: ScoreOptions | None = None,
    max_length: int = 1024,
    show_progress: bool = True,
) -> tuple[dict, list[str]]:
    """Generate for every item, score, and add the held-out loss where the task has one.

    Returns (report, outputs); the report holds ``count``, ``decode``, ``decode_seconds`` and the task's
    scores (keys starting with ``_`` are per-output checks for ``Task.write_outputs``).
    """
    template = template or task.template()
    decode = decode.resolved(task.decode_defaults())
    prompts = [i.prompt for i in items]
    if task.head == "classifier":  # a head's argmax, nothing generated
        from superlora.evaluation.classify import timed_classify

        outputs, seconds = timed_classify(
            model, tokenizer, prompts, template, decode.batch_size, max_length, show_progress
        )
    else:
        outputs, seconds = timed_generate(model, tokenizer, prompts, decode, template, show_progress)
    scores = task.score(items, outputs, options or ScoreOptions())
    if task.teacher_forced_loss:
        loss = heldout_loss(model, tokenizer, task, template, [i.sample for i in items], max_length)
        scores["metrics"] = {**scores["metrics"], "loss": loss["loss"], "perplexity": loss["perplexity"]}
        scores["loss_tokens"] = loss["tokens"]
    report = {"count": len(items), "decode": decode.to_dict(), "decode_seconds": round(seconds, 2), **scores}
    return report, outputs


def check_out(out: Path) -> None:
    """``out`` may be new, empty, or an earlier report (it is replaced whole); never a folder of the user's."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "scores.json").is_file())):
        raise SuperloraError(f"out={out} exists and is not an earlier evaluate report; choose another out=...")


def write_report(
    task: Task,
    out: Path,
    items: list[EvalItem],
    outputs: list[str],
    report: dict[str, Any],
    extra: Callable[[dict], dict[str, str]] | None = None,
) -> dict:
    """The task's output files, ``scores.json`` (without the per-output checks) and the ``extra(public report)``
    text files, written into a hidden sibling and renamed to ``out``: a failure leaves no folder, half or empty."""
    from superlora.training.rundir import write_atomic

    check_out(out)
    public = {k: v for k, v in report.items() if not k.startswith("_")}

    def fill(tmp: Path) -> None:
        task.write_outputs(tmp, items, outputs, report)
        (tmp / "scores.json").write_text(json.dumps(public, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for name, text in (extra(public) if extra else {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    write_atomic(Path(out), fill)
    return public
