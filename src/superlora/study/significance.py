"""Across seeds and between arms: mean ± std per kind of arm, and paired-bootstrap tests of the differences.

A difference between two arms is tested on the same test items (paired), with each side's score the mean over
its seeds of the corpus metric, so seed noise and test-set noise are both in the interval.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from superlora.evaluation.bootstrap import paired_bootstrap
from superlora.study.arms import equal_time_arms, study_arms
from superlora.study.config import StudyConfig
from superlora.tasks.base import Task

RESAMPLES = 2000


def seed_summary(rows: list[dict], task: Task) -> list[dict]:
    """One row per kind of arm: how many seeds, mean and std of the primary and secondary metric, time."""
    kinds: dict[str, list[dict]] = {}
    for row in rows:
        kinds.setdefault(row.get("kind", row["arm"]), []).append(row)
    summary = []
    for kind, group in kinds.items():
        entry: dict = {"kind": kind, "seeds": len(group), "trainable_params": group[0]["trainable_params"]}
        entry["train_time_s"] = statistics.mean(r["train_time_s"] for r in group)
        relative = [r.get("relative_time") for r in group]
        entry["relative_time"] = statistics.mean(relative) if None not in relative else None
        for metric in (task.primary, task.secondary):
            values = [r[metric.name] for r in group if r.get(metric.name) is not None]
            entry[metric.name] = statistics.mean(values) if values else None
            entry[f"{metric.name}_std"] = statistics.stdev(values) if len(values) > 1 else None
        summary.append(entry)
    return summary


def _pairs(kinds: list[str]) -> list[tuple[str, str]]:
    """What the conclusions rest on: every arm against all blocks, super weights against each control."""
    pairs = [(k, "all") for k in kinds if k not in ("all", "base")] if "all" in kinds else []  # incl. @time
    if "superweights" in kinds:
        pairs += [("superweights", c) for c in ("probe", "random", "first", "last", "above", "avoid") if c in kinds]
    return pairs


def arm_item_values(cfg: StudyConfig, task: Task, items: list, key: str):
    """An arm's per-item values and their statistic (``task.item_values``), or None without its outputs."""
    outputs = task.read_outputs(Path(cfg.out) / "arms" / key, items)
    return task.item_values(items, outputs) if outputs is not None else None


def compare_arms(cfg: StudyConfig, task: Task) -> list[dict]:
    """The paired bootstrap of every pair in ``_pairs`` whose outputs are all there (empty if the task has none)."""
    items = task.eval_items(cfg.eval.split, cfg.eval.limit)
    per_kind: dict[str, list] = {}
    statistic = None
    for arm in [*study_arms(cfg), *equal_time_arms(cfg)]:
        values = arm_item_values(cfg, task, items, arm.key)
        if values is None:
            continue
        array, statistic = values
        per_kind.setdefault(arm.kind, []).append(array)
    if statistic is None:
        return []

    def seed_mean(stacked: np.ndarray) -> float:  # items x seeds (x statistics): mean over seeds
        return float(np.mean([statistic(stacked[:, j]) for j in range(stacked.shape[1])]))

    results = []
    for a, b in _pairs(list(per_kind)):
        stacked_a, stacked_b = np.stack(per_kind[a], axis=1), np.stack(per_kind[b], axis=1)
        result = paired_bootstrap(stacked_a, stacked_b, seed_mean, resamples=RESAMPLES)
        results.append({"arm": a, "against": b, "seeds": [len(per_kind[a]), len(per_kind[b])], **result.to_dict()})
    return results


def markdown_comparisons(results: list[dict], task: Task, items: int | str, split: str = "test") -> str:
    """The comparisons as a markdown table."""
    if not results:
        return "(no pair of arms to compare)"
    name = task.primary.name
    lines = [
        f"Differences in {name} (paired bootstrap over the {items} {split} items, {RESAMPLES:,} resamples; each side "
        "the mean over its seeds):",
        "",
        f"| arm | against | seeds | Δ {name} | 95% interval | p |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['arm']} | {r['against']} | {r['seeds'][0]} vs {r['seeds'][1]} | {r['delta']:+.4f} | "
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p_value']:.3f} |"
        )
    return "\n".join(lines)


def markdown_seed_summary(summary: list[dict], task: Task) -> str:
    """Mean ± std over seeds per kind of arm."""
    p, s = task.primary, task.secondary
    relative = any(e.get("relative_time") is not None for e in summary)  # only with side-by-side step times
    extra = " time vs all |" if relative else ""
    head = f"| arm | seeds | trainable params | train time |{extra} {p.name} | {s.name} |"
    lines = [head, "|---|---|---|---|" + ("---|" if relative else "") + "---|---|"]
    for e in summary:
        cells = []
        for m in (p, s):
            value, std = e.get(m.name), e.get(f"{m.name}_std")
            cells.append("-" if value is None else m.format(value) + (f" ± {m.format(std)}" if std is not None else ""))
        minutes = f"{e['train_time_s'] / 60:.1f} min" if e["train_time_s"] else "-"
        params = f"{e['trainable_params']:,}"
        ratio = (f" {e['relative_time']:.2f} |" if e.get("relative_time") is not None else " - |") if relative else ""
        lines.append(f"| {e['kind']} | {e['seeds']} | {params} | {minutes} |{ratio} {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _against(c: dict, other: str) -> str:
    """ "better than random (+0.0158, p = 0.012)", "worse than ...", or "not distinguishable from ..."."""
    if c["ci_low"] > 0:
        words = f"better than {other}"
    elif c["ci_high"] < 0:
        words = f"worse than {other}"
    else:
        words = f"not distinguishable from {other}"
    return f"{words} ({c['delta']:+.4f}, p = {c['p_value']:.3f})"


def answer(summary: list[dict], comparisons: list[dict], task: Task) -> str | None:
    """The one-paragraph answer to the study's question, worded from the numbers alone (None: not enough arms).

    "Keeps quality" is said only when the 95% interval of super-weight-blocks minus all-blocks lies above
    -0.01 of the primary metric, "loses quality" when it lies below zero; otherwise the answer says it is open.
    """
    kinds = {e["kind"]: e for e in summary}
    against = {(c["arm"], c["against"]): c for c in comparisons}
    key = ("superweights", "all")
    if "superweights" not in kinds or "all" not in kinds or key not in against:
        return None
    m = task.primary
    sw, full, c = kinds["superweights"], kinds["all"], against[key]
    if c["ci_low"] > -0.01:
        verdict = "keeps quality"
    elif c["ci_high"] < 0:
        verdict = "does not keep quality"
    else:
        verdict = "may or may not keep quality"
    seeds = f"{sw['seeds']} seed{'s' if sw['seeds'] > 1 else ''}"
    side_by_side = sw.get("relative_time") is not None
    if side_by_side:
        time_share = sw["relative_time"]
    else:
        time_share = sw["train_time_s"] / full["train_time_s"] if full["train_time_s"] else None
    parts = [
        f"**LoRA only in the super-weight blocks {verdict}** here: {m.name} {m.format(sw[m.name])} against "
        f"{m.format(full[m.name])} for all blocks ({seeds}; difference {c['delta']:+.4f}, 95% interval "
        f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], p = {c['p_value']:.3f})",
        f"with {100 * sw['trainable_params'] / full['trainable_params']:.1f}% of the trainable parameters"
        + (f" in {100 * time_share:.0f}% of the training time" if time_share else "")
        + ((" (step times measured side by side)" if side_by_side else " (wall-clock)") if time_share else ""),
    ]
    controls = [
        _against(against[("superweights", other)], other)
        for other in ("probe", "random", "first", "last", "above", "avoid")
        if ("superweights", other) in against
    ]
    text = ", ".join(parts) + "."
    if verdict.startswith("may"):
        text += " The interval is too wide to say which: more seeds or test items would."
    if controls:
        text += " Against the other placements the super-weight blocks are: " + "; ".join(controls) + "."
    return text
