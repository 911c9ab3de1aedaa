"""Identification end to end: detect candidates, prove them, and report — for any causal LM."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from superlora.config import to_dict
from superlora.identify.config import IdentifyConfig
from superlora.identify.detect import BlockSpike, SuperWeight, find_candidates, residual_maxima
from superlora.identify.plots import plot_block_maxima, plot_residual_stream
from superlora.identify.prove import prove
from superlora.identify.report import build_report, format_table, ranked, write_json
from superlora.models.arch import encode
from superlora.models.loading import LoadedModel


@dataclass
class Identification:
    candidates: list[SuperWeight]  # ranked: proven first, by damage
    perplexity: dict
    first_round: list[list[BlockSpike]]  # per prompt, per block, before anything is zeroed
    residual: list[dict]  # largest residual-stream entry per position, first prompt
    seconds: float

    @property
    def proven(self) -> list[SuperWeight]:
        return [sw for sw in self.candidates if sw.proof.get("proven")]


def identify(loaded: LoadedModel, cfg: IdentifyConfig) -> Identification:
    """Find candidates by activation spikes and prove each by ablation."""
    start = time.perf_counter()
    model, arch, tokenizer = loaded.model, loaded.arch, loaded.tokenizer
    candidates, first_round = find_candidates(
        model, arch, tokenizer, cfg.prompts, cfg.abs_threshold, cfg.median_ratio, cfg.min_recurrence, cfg.max_count
    )
    summary = prove(model, arch, tokenizer, candidates, cfg.passage, cfg.seed, cfg.min_ppl_ratio, cfg.min_distortion)
    residual = residual_maxima(model, encode(tokenizer, model, cfg.prompts[0]))
    return Identification(ranked(candidates), summary, first_round, residual, time.perf_counter() - start)


def find_super_weights(loaded: LoadedModel, cfg: IdentifyConfig | None = None) -> list[SuperWeight]:
    """The proven super weights of a loaded model (strongest first)."""
    return identify(loaded, cfg or IdentifyConfig(model=loaded.name)).proven


def write_outputs(loaded: LoadedModel, cfg: IdentifyConfig, result: Identification, out_dir: Path) -> dict:
    """superweights.json, table.txt and (unless disabled) the PNG plots; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in to_dict(cfg).items() if k not in {"prompts", "passage"}}
    settings |= {"prompts": cfg.prompts, "passage": cfg.passage, "seconds": round(result.seconds, 2)}
    report = build_report(
        loaded.name, loaded.source, loaded.arch.to_dict(), settings, result.candidates, result.perplexity
    )
    report["blocks"] = [  # round 0, maximum over the prompts: what the activations plot shows
        {
            "block": i,
            "max_in": max(spikes[i].max_in for spikes in result.first_round),
            "max_out": max(spikes[i].max_out for spikes in result.first_round),
            "median_out": max(spikes[i].median_out for spikes in result.first_round),
        }
        for i in range(loaded.arch.num_blocks)
    ]
    report["residual_stream"] = result.residual
    plots = []
    if cfg.plots:
        proven = [sw.coord for sw in result.proven]
        title = f"{loaded.name}: MLP output projection activations over {len(cfg.prompts)} prompts"
        path = out_dir / "activations.png"
        plots.append(plot_block_maxima(result.first_round, result.residual, proven, title, path))
        if result.proven:
            top = result.proven[0]
            ids = encode(loaded.tokenizer, loaded.model, cfg.prompts[0])
            path = out_dir / "residual_stream.png"
            plots.append(
                plot_residual_stream(loaded.model, loaded.arch, ids, top.coord, top.token_position, proven, path)
            )
    report["plots"] = [p.name for p in plots]
    write_json(report, out_dir)
    (out_dir / "table.txt").write_text(format_table(report) + "\n")
    return report
