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


def compare_arms(cfg: StudyConfig, task: Task) -> list[dict]:
    """The paired bootstrap of every pair in ``_pairs`` whose outputs are all there (empty if the task has none)."""
    items = task.eval_items(cfg.eval.split, cfg.eval.limit)
    per_kind: dict[str, list] = {}
    statistic = None
    for arm in [*study_arms(cfg), *equal_time_arms(cfg)]:
        outputs = task.read_outputs(Path(cfg.out) / "arms" / arm.key, items)
        values = task.item_values(items, outputs) if outputs is not None else None
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


def markdown_comparisons(results: list[dict], task: Task, items: int | str) -> str:
    """The comparisons as a markdown table."""
    if not results:
        return "(no pair of arms to compare)"
    name = task.primary.name
    lines = [
        f"Differences in {name} (paired bootstrap over the {items} test items, {RESAMPLES:,} resamples; each side "
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
    lines = [f"| arm | seeds | trainable params | train time | {p.name} | {s.name} |", "|---|---|---|---|---|---|"]
    for e in summary:
        cells = []
        for m in (p, s):
            value, std = e.get(m.name), e.get(f"{m.name}_std")
            cells.append("-" if value is None else m.format(value) + (f" ± {m.format(std)}" if std is not None else ""))
        minutes = f"{e['train_time_s'] / 60:.1f} min" if e["train_time_s"] else "-"
        params = f"{e['trainable_params']:,}"
        lines.append(f"| {e['kind']} | {e['seeds']} | {params} | {minutes} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)
