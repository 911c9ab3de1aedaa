"""Do the super weights move? Each arm's adapter merged into the base, then identified again.

LoRA on attention projections never changes a ``down_proj`` weight, but it changes what flows into it: the
super activation (the spike the super weight writes) can grow, shrink or move. So the question is answered
on the merged model with the same detector and ablation proof as ``superlora identify``: which coordinates
are proven now, how large their spikes are, and what zeroing them all does to perplexity.
"""

from __future__ import annotations

import json
from pathlib import Path

from superlora.study.config import StudyConfig


def _coords(records: list[dict]) -> list[str]:
    return [r.get("coordinate") or f"{r['block']}:{r['out_channel']}:{r['in_channel']}" for r in records]


def arm_drift(cfg: StudyConfig, run: Path | None) -> dict:
    """The identification of ``run``'s merged model (the base model's own for ``run=None``), summarised."""
    from superlora.identify import IdentifyConfig, identify
    from superlora.identify.report import weight_record
    from superlora.models import load_model
    from superlora.training.adapters import load_adapter

    loaded = load_model(cfg.train.model, trust_remote_code=cfg.train.trust_remote_code)
    if run is not None:
        loaded.model = load_adapter(loaded.model, run / "adapter", cfg.train.model).merge_and_unload().eval()
    result = identify(loaded, IdentifyConfig(model=cfg.train.model, plots=False))
    proven = [weight_record(sw) for sw in result.proven]
    base = json.loads(Path(cfg.train.superweights).read_text(encoding="utf-8")) if cfg.train.superweights else {}
    before = [r for r in base.get("super_weights", []) if r.get("proven", True)]
    spikes = {str(sw.coord): sw.output_abs for sw in result.candidates}
    peak = max(result.residual, key=lambda r: r["max_abs"]) if result.residual else {}
    return {
        "proven": _coords(proven),
        "same_as_base": sorted(_coords(proven)) == sorted(_coords(before)),
        "spike_at_base_coordinates": {c: spikes.get(c) for c in _coords(before)},
        "base_spikes": dict(zip(_coords(before), [r.get("output_abs") for r in before], strict=True)),
        "ppl": result.perplexity.get("ppl_base"),
        "ppl_all_proven_zeroed": result.perplexity.get("ppl_all_proven_zeroed"),
        "residual_peak": {k: peak.get(k) for k in ("max_abs", "channel", "token")},  # the massive activation
    }


def markdown_drift(records: dict[str, dict]) -> str:
    """One row per arm: are the base model's super weights still the proven ones, and how big is the spike."""
    if not records:
        return "(no drift measured)"
    lines = [
        "| arm | proven super weights | same as base | spike at the base's coordinates | ppl | all zeroed | "
        "residual peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, r in records.items():
        spikes = ", ".join(
            f"{c}: {v:,.0f}" if v is not None else f"{c}: none" for c, v in r["spike_at_base_coordinates"].items()
        )
        zeroed = f"{r['ppl_all_proven_zeroed']:.1f}" if r.get("ppl_all_proven_zeroed") else "-"
        peak = r.get("residual_peak") or {}
        lines.append(
            f"| {arm} | {', '.join(r['proven']) or 'none'} | {'yes' if r['same_as_base'] else 'no'} | {spikes} | "
            f"{r['ppl']:.2f} | {zeroed} | {peak.get('max_abs', 0):,.0f} (channel {peak.get('channel')}) |"
        )
    return "\n".join(lines)
