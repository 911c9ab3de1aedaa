"""The bench's table: medians over repeats, ratios to the reference within each repeat, the machine."""

from __future__ import annotations

import platform
import statistics
from typing import TYPE_CHECKING, Any

from superlora.bench.arms import Arm
from superlora.bench.flops import FLOP_FORMULA, PEAK_SHAPE
from superlora.bench.measure import RSS_METHODS

if TYPE_CHECKING:
    pass


def machine() -> dict[str, Any]:
    import torch

    from superlora.machine import cpu_info

    cpu = cpu_info()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": torch.get_num_threads(),
        "cpu": cpu.model,
        "cpu_flags": list(cpu.flags),
        "torch_cpu_capability": cpu.capability,
        "isa_limits": list(cpu.isa_limits),
        "label": cpu.label(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(arms: list[Arm], runs: dict[str, list[dict]], peaks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm: medians over repeats; ratios to the reference taken within each repeat."""
    ref_runs = runs["ref"]
    rows = []
    for arm in arms:
        arm_runs = runs[arm.key]
        ratios = [r["tokens_per_s"] / ref["tokens_per_s"] for r, ref in zip(arm_runs, ref_runs, strict=True)]
        mfu_best, mfu_own = [], []
        for run, peak in zip(arm_runs, peaks, strict=True):
            p = peak[str(run["threads"])]
            mfu_best.append(run["model_flops_per_s"] / (max(p["bf16"], p["fp32"]) * 1e9))
            mfu_own.append(run["model_flops_per_s"] / (p["bf16" if run["bf16"] else "fp32"] * 1e9))
        same_batches = arm.speed is None or not arm.speed["group_by_length"]
        deltas = [
            max((abs(a - b) for a, b in zip(r["losses"], ref["losses"], strict=False)), default=float("nan"))
            for r, ref in zip(arm_runs, ref_runs, strict=True)
        ]
        rows.append(
            {
                "key": arm.key,
                "name": arm.name,
                "speed": arm.speed,
                "quantize": arm.quantize,
                "threads": arm_runs[0]["threads"],
                "bf16": arm_runs[0]["bf16"],
                "tokens_per_s": median([r["tokens_per_s"] for r in arm_runs]),
                "ratio_to_ref": median(ratios),
                "median_step_s": median([d for r in arm_runs for d in r["step_s"]]),
                "padding": 1 - sum(r["tokens"] for r in arm_runs) / sum(r["padded_tokens"] for r in arm_runs),
                "peak_rss_mb": median([r["peak_rss_mb"] for r in arm_runs]),
                "model_gflops_per_s": median([r["model_flops_per_s"] for r in arm_runs]) / 1e9,
                "mfu_best_peak": median(mfu_best),
                "mfu_own_dtype_peak": median(mfu_own),
                "warmup_s": median([r["warmup_s"] for r in arm_runs]),
                "max_loss_diff_vs_ref": median(deltas) if same_batches else None,
                "notes": arm_runs[0]["notes"],
            }
        )
    return rows


def format_table(result: dict[str, Any]) -> str:
    """The bench result as a fixed-width text table with its header lines."""
    s = result["setup"]
    lines = [
        f"superlora bench: {s['model']}, LoRA r={s['lora_r']} on {', '.join(s['lora_targets'])} in "
        f"{s['adapted_blocks']} of {s['num_blocks']} blocks, batch {s['batch_size']}, max_length {s['max_length']}; "
        f"{s['repeats']} repeats x {s['steps']} timed steps (+{s['warmup']} warm-up) per arm, arms interleaved in one "
        f"process; E2E training examples drawn at random: a pool of {s['examples']}",
        f"machine: {result['machine']['label']}, torch {result['machine']['torch']}",
    ]
    for threads, peak in sorted(result["peak_gflops"].items()):
        lines.append(
            f"matmul peak {'x'.join(map(str, PEAK_SHAPE))}, {threads} thread(s), median: "
            f"fp32 {peak['fp32']:,.1f} GFLOP/s, bf16 {peak['bf16']:,.1f} GFLOP/s"
        )
    auto = result["auto"]
    lines.append(
        f"the recipe's auto choices here: {auto['bf16']['reason']}; threads {auto['threads']['threads']} "
        f"({auto['threads']['reason']}); attention {auto['attention']['attention']}"
    )
    if not auto["bf16_pays"] and "bf16" not in {row["key"] for row in result["arms"]}:
        lines.append("the arm that forces bf16 is left out: bf16 does not pay here (--arms bf16 runs it)")
    head = (
        f"{'arm':34s} {'tokens/s':>9s} {'x ref':>6s} {'step s':>7s} {'pad':>5s} {'RSS MB':>7s} "
        f"{'GFLOP/s':>8s} {'dtype':>5s} {'MFU':>6s} {'MFU max':>7s} {'|dloss|':>8s}"
    )
    lines += ["", head, "-" * len(head)]
    for row in result["arms"]:
        dloss = row["max_loss_diff_vs_ref"]
        lines.append(
            f"{row['name'][:34]:34s} {row['tokens_per_s']:9,.0f} {row['ratio_to_ref']:6.2f} "
            f"{row['median_step_s']:7.3f} {100 * row['padding']:4.0f}% {row['peak_rss_mb']:7,.0f} "
            f"{row['model_gflops_per_s']:8,.1f} {'bf16' if row['bf16'] else 'fp32':>5s} "
            f"{100 * row['mfu_own_dtype_peak']:5.1f}% {100 * row['mfu_best_peak']:6.1f}% "
            f"{'-' if dloss is None else f'{dloss:.4f}':>8s}"
        )
    pad = result["padding_full_epoch"]
    lines += [
        "",
        "tokens/s: non-padding tokens over the timed steps (wall clock, step end to step end); x ref: within each "
        "repeat, then median; step s: median; pad: padding share of the timed batches; RSS: "
        + RSS_METHODS[s["rss_method"]]
        + "; MFU: model FLOP/s / the matmul peak of the arm's dtype; MFU max: / the faster dtype's peak; "
        "|dloss|: largest per-step loss difference from the reference "
        "on the same batches ('-': other batches, grouped by length).",
        f"padding over one epoch of {pad['examples']} training examples, batch {s['batch_size']}: random batches "
        f"{100 * pad['random']:.0f}%, length-grouped {100 * pad['grouped']:.0f}%. In the bench, grouped arms take "
        "their steps from one mega-batch of the pool sorted by length (the longest batch first, in the warm-up).",
        FLOP_FORMULA,
    ]
    return "\n".join(lines)
