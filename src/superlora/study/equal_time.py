"""The equal-time view: every arm with the all-block arm's training time, against it, one table per seed.

An arm's equal-time run has as many steps as fit in the all-block arm's time at the side-by-side step times
(``study.timing``); where that is its equal-step count to within ``equal_time_min_gain``, its equal-step run
stands for it (``arms.equal_time_standins``). Each arm is compared with the same seed's all-block arm by the
paired bootstrap over the test items.
"""

from __future__ import annotations

from superlora.evaluation.bootstrap import paired_bootstrap
from superlora.study.arms import EQUAL_TIME, equal_time_plan
from superlora.study.config import StudyConfig
from superlora.study.significance import arm_item_values
from superlora.tasks.base import Task


def view_rows(cfg: StudyConfig, rows: list[dict]) -> dict[int, list[dict]]:
    """Seed -> its all-block row, then each kind's equal-time row (or the equal-step row standing for it), in the
    study's order of arms."""
    by_key = {r["arm"]: r for r in rows}
    view: dict[int, list[dict]] = {}
    for timed, standin in equal_time_plan(cfg):
        arm = standin or timed
        reference = next((r for r in rows if r["kind"] == "all" and r["seed"] == arm.seed), None)
        if arm.key in by_key and reference is not None:
            view.setdefault(arm.seed, [reference]).append({**by_key[arm.key], "standin": standin is not None})
    return view


def markdown_equal_time(cfg: StudyConfig, rows: list[dict], task: Task) -> str | None:
    """The equal-time tables (None before any equal-time arm is scored)."""
    view = view_rows(cfg, rows)
    if not any(len(r) > 1 for r in view.values()):
        return None
    p, q = task.primary, task.secondary
    items = task.eval_items(cfg.eval.split, cfg.eval.limit)
    by_key = {r["arm"]: r for r in rows}
    out = []
    for seed, seed_rows in sorted(view.items()):
        reference = seed_rows[0]
        values = arm_item_values(cfg, task, items, reference["arm"])
        out += [
            f"Equal time, seed {seed}: each arm trained for the all-block arm's time ({reference['steps']:,} of its "
            "steps; the others' step counts from the side-by-side step times). Δ: against "
            f"{reference['arm']}, paired bootstrap over the {len(items)} {cfg.eval.split} items.",
            "",
            f"| arm | steps | time vs all | {p.name} | {q.name} | {p.name} at equal steps | Δ {p.name} | 95% interval "
            "| p |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {reference['arm']} | {reference['steps']:,} | 1.00 | {p.format(reference[p.name])} | "
            f"{q.format(reference.get(q.name))} | {p.format(reference[p.name])} | - | - | - |",
        ]
        for r in seed_rows[1:]:
            kind = r["kind"].removesuffix(EQUAL_TIME)
            equal_steps = by_key.get(r["arm"].removesuffix(EQUAL_TIME), {}).get(p.name)
            mine = arm_item_values(cfg, task, items, r["arm"])
            if mine is not None and values is not None:
                c = paired_bootstrap(mine[0], values[0], values[1])
                delta = f"{c.delta:+.4f} | [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.p_value:.3f}"
            else:
                delta = "- | - | -"
            name = f"{kind} (its equal-step run)" if r["standin"] else r["arm"]
            time = f"{r['relative_time']:.2f}" if r.get("relative_time") is not None else "-"
            out.append(
                f"| {name} | {r['steps']:,} | {time} | {p.format(r[p.name])} | {q.format(r.get(q.name))} | "
                f"{p.format(equal_steps)} | {delta} |"
            )
        if any(r["standin"] for r in seed_rows[1:]):
            out += [
                "",
                f"An arm named with its equal-step run was not trained again: at equal time its steps would change "
                f"by less than {cfg.equal_time_min_gain:.0%} (fewer than the step times' own spread), so that run "
                "already had the all-block arm's time.",
            ]
        out.append("")
    return "\n".join(out).rstrip()
