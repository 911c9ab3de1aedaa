"""Perplexity of a model whose block weights are rounded block-wise, against block size, with and without keeping
the super weights in full precision."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from superlora.identify.ablation import Coord
from superlora.models.arch import ArchFacts
from superlora.models.quantize import block_linears
from superlora.quantization.blockwise import quantized

say = functools.partial(print, flush=True)  # progress lines appear as they happen, also in a log file


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: a block size, and the weights held out of the rounding (none: plain)."""

    block: int
    keep: str  # "none" or the name of the kept set, e.g. "superweights"
    coords: tuple[Coord, ...] = ()
    clip: float | None = None  # outliers clipped to this many standard deviations first (None: no clipping)

    @property
    def label(self) -> str:
        return f"keep {self.keep}" + (f", clip {self.clip:g}σ" if self.clip is not None else "")


def kept_indices(arch: ArchFacts, coords: tuple[Coord, ...]) -> dict[str, list[tuple[int, int]]]:
    """The stored indices of ``coords``, by the name of the layer that holds them."""
    out: dict[str, list[tuple[int, int]]] = {}
    for coord in coords:
        name = f"{arch.block_name(coord.block)}.{arch.mlp_out_name}"
        out.setdefault(name, []).append(arch.stored_index(coord.out_channel, coord.in_channel))
    return out


@torch.no_grad()
def perplexity(model: nn.Module, rows: list[torch.Tensor]) -> float:
    """exp of the mean next-token loss over every predicted token of every row (token-weighted)."""
    total, count = 0.0, 0
    for ids in rows:
        logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1].float()
        total += float(nn.functional.cross_entropy(logits, ids[1:], reduction="sum"))
        count += ids.numel() - 1
    return math.exp(total / count) if math.isfinite(total) else float("inf")


def run_sweep(
    model: nn.Module,
    arch: ArchFacts,
    rows: list[torch.Tensor],
    method: str,
    settings: list[Setting],
    progress: Callable[[str], None] = say,
) -> tuple[float, list[dict]]:
    """(fp32 perplexity, one record per setting). The original weights are restored exactly after each point."""
    layers = block_linears(model, arch.blocks_path)
    originals = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    start = time.perf_counter()
    base = perplexity(model, rows)
    progress(f"fp32: perplexity {base:.3f} ({time.perf_counter() - start:.0f} s)")
    records = []
    try:
        for setting in settings:
            start = time.perf_counter()
            keep = kept_indices(arch, setting.coords)
            for name, layer in layers.items():
                rounded = quantized(originals[name], method, setting.block, keep.get(name, ()), setting.clip)
                layer.weight.data.copy_(rounded)
            ppl = perplexity(model, rows)
            seconds = time.perf_counter() - start
            records.append(
                {
                    "block": setting.block,
                    "keep": setting.keep,
                    "clip": setting.clip,
                    "label": setting.label,
                    "kept": [str(c) for c in setting.coords],
                    "ppl": ppl,
                }
            )
            progress(f"{method} block {setting.block:6d}, {setting.label}: perplexity {ppl:.3f} ({seconds:.0f} s)")
    finally:
        for name, layer in layers.items():
            layer.weight.data.copy_(originals[name])
    return base, records
