"""The identification report: ``superweights.json`` and the terminal table."""

from __future__ import annotations

import json
from pathlib import Path

from superlora.identify.detect import SuperWeight


def ranked(weights: list[SuperWeight]) -> list[SuperWeight]:
    """Proven super weights first, each group by the damage zeroing it does."""
    return sorted(
        weights,
        key=lambda sw: (not sw.proof.get("proven"), -sw.proof.get("ppl_ratio", sw.proof.get("distortion", 0.0))),
    )


def weight_record(sw: SuperWeight) -> dict:
    return {
        "block": sw.coord.block,
        "parameter": sw.param_name,
        "out_channel": sw.coord.out_channel,
        "in_channel": sw.coord.in_channel,
        "coordinate": str(sw.coord),
        "stored_index": list(sw.stored_index),
        "value": sw.value,
        "input_abs": sw.input_abs,
        "output_abs": sw.output_abs,
        "token_position": sw.token_position,
        "token": sw.token,
        "recurrence": sw.recurrence,
        "round": sw.round,
        **sw.proof,
    }


def build_report(model_name: str, source: str, arch: dict, settings: dict, weights: list, summary: dict) -> dict:
    order = ranked(weights)
    return {
        "model": model_name,
        "source": source,
        "architecture": arch,
        "settings": settings,
        "perplexity": summary,
        # the super weights training and the web app use: proven by ablation
        "super_weights": [weight_record(sw) for sw in order if sw.proof.get("proven")],
        "rejected_candidates": [weight_record(sw) for sw in order if not sw.proof.get("proven")],
    }


def write_json(report: dict, out_dir: Path) -> Path:
    path = out_dir / "superweights.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    tmp.replace(path)
    return path


def format_table(report: dict) -> str:
    """A fixed-width table: one row per candidate, proven ones marked."""
    if report["perplexity"].get("metric") == "distortion":
        return format_encoder_table(report)
    head = (
        f"{'':2}{'block':>5} {'out':>5} {'in':>5} {'stored[i,j]':>12} {'value':>8} {'|in|':>9} {'|out|':>9} "
        f"{'tok':>4} {'recur':>6} {'ppl x':>8} {'rand x':>7} {'row x':>7}"
    )
    lines = [head, "-" * len(head)]
    rows = [(True, r) for r in report["super_weights"]] + [(False, r) for r in report["rejected_candidates"]]
    for proven, r in rows:
        stored = f"[{r['stored_index'][0]},{r['stored_index'][1]}]"
        lines.append(
            f"{'*' if proven else ' ':2}{r['block']:>5} {r['out_channel']:>5} {r['in_channel']:>5} {stored:>12} "
            f"{r['value']:>8.3f} {r['input_abs']:>9.1f} {r['output_abs']:>9.1f} {r['token_position']:>4} "
            f"{r['recurrence']:>6.0%} {r['ppl_ratio']:>8.2f} {r['random_control']['ppl_ratio']:>7.3f} "
            f"{r['row_control']['ppl_ratio']:>7.3f}"
        )
    ppl = report["perplexity"]
    lines.append("")
    lines.append(
        f"* = proven super weight. Perplexity on the {ppl['passage_tokens']}-token passage: {ppl['ppl_base']:.2f}"
    )
    lines.append(
        "  'x' columns: perplexity ratio with that weight / one random weight / the row's largest other weight zeroed"
    )
    if "ppl_all_proven_zeroed" in ppl:
        lines.append(
            f"  all {len(report['super_weights'])} proven zeroed: {ppl['ppl_all_proven_zeroed']:.2f} "
            f"(x{ppl['ppl_all_proven_zeroed'] / ppl['ppl_base']:.1f}); same number of random weights zeroed: "
            f"{ppl['ppl_same_count_random_zeroed']:.2f} (x{ppl['ppl_same_count_random_zeroed'] / ppl['ppl_base']:.3f})"
        )
    else:
        lines.append(none_found(report, rows))
    if report.get("residual_stream"):
        peak = max(report["residual_stream"], key=lambda r: r["max_abs"])
        lines.append(
            f"  largest residual-stream entry (first prompt): {peak['max_abs']:.1f} in channel {peak['channel']} "
            f"at token {peak['token']}, after block {peak['position'] - 1} (median there {peak['median_abs']:.2f})"
        )
    return "\n".join(lines)


def format_encoder_table(report: dict) -> str:
    """``format_table`` for an encoder: the distortion of its output instead of perplexity ratios."""
    head = (
        f"{'':2}{'block':>5} {'out':>5} {'in':>5} {'value':>8} {'|in|':>9} {'|out|':>9} {'tok':>4} {'recur':>6} "
        f"{'dist':>8} {'rand':>8} {'row':>8}"
    )
    lines = [head, "-" * len(head)]
    rows = [(True, r) for r in report["super_weights"]] + [(False, r) for r in report["rejected_candidates"]]
    for proven, r in rows:
        lines.append(
            f"{'*' if proven else ' ':2}{r['block']:>5} {r['out_channel']:>5} {r['in_channel']:>5} {r['value']:>8.3f} "
            f"{r['input_abs']:>9.1f} {r['output_abs']:>9.1f} {r['token_position']:>4} {r['recurrence']:>6.0%} "
            f"{r['distortion']:>8.4f} {r['random_control']['distortion']:>8.4f} {r['row_control']['distortion']:>8.4f}"
        )
    summary = report["perplexity"]
    lines += [
        "",
        f"* = proven super weight. An encoder: 'dist' is the mean cosine distance, over the {summary['passage_tokens']}"
        "-token passage, of the final hidden states with that weight / one random weight / the row's largest other "
        f"weight zeroed (proven: >= {summary['min_distortion']:g} and above both controls)",
    ]
    if "distortion_all_proven_zeroed" in summary:
        lines.append(
            f"  all {len(report['super_weights'])} proven zeroed: {summary['distortion_all_proven_zeroed']:.4f}; "
            f"same number of random weights zeroed: {summary['distortion_same_count_random_zeroed']:.4f}"
        )
    else:
        lines.append(none_found(report, rows))
    return "\n".join(lines)


def none_found(report: dict, rows: list) -> str:
    """The line that says no super weight was found, and at which step."""
    if rows:
        return "  no candidate passed the ablation proof: no super weight found by this method"
    st = report["settings"]
    return (
        f"  no MLP-projection spike above |out| > {st['abs_threshold']:g} and > {st['median_ratio']:g}x the "
        "block median recurred across prompts: no super weight found by this method"
    )
