"""Block-wise 4-bit quantisation, simulated: each weight matrix is rounded and put back in fp32.

The perplexity of the rounded model is what a real 4-bit kernel would compute (up to the matmul's own rounding),
so the sweep measures quality only, on any CPU. Blocks are runs of ``block`` consecutive values of the
row-major weight, as bitsandbytes lays them out. A block's scale comes from its extremes, so one huge value (a
super weight is ~100x its neighbours) stretches the scale and rounds every other value of its block to a few
levels; ``keep`` holds such values out of the statistics and restores them exactly afterwards.

Min-max rounding keeps a block's extremes exact, so a super weight survives plain RTN by itself. The paper's
recipe (section 4.2) goes further: clip every tensor's outliers (``clip``: to ``clip`` standard deviations) so all
blocks get a finer scale — which would clip the super weight too and destroy the model unless it is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

METHODS = ("rtn", "nf4")


def _blocks(flat: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    pad = (-flat.numel()) % block
    padded = torch.cat([flat, flat.new_zeros(pad)]) if pad else flat
    return padded.view(-1, block), pad


def rtn(weight: torch.Tensor, block: int, bits: int = 4) -> torch.Tensor:
    """Asymmetric min-max round-to-nearest with ``bits`` bits per value and one scale and zero point per block."""
    rows, pad = _blocks(weight.reshape(-1).float(), block)
    low, high = rows.min(dim=1, keepdim=True).values, rows.max(dim=1, keepdim=True).values
    levels = 2**bits - 1
    scale = ((high - low) / levels).clamp(min=1e-12)
    codes = torch.round((rows - low) / scale).clamp(0, levels)
    out = (codes * scale + low).reshape(-1)
    return (out[: out.numel() - pad] if pad else out).view_as(weight)


def nf4(weight: torch.Tensor, block: int) -> torch.Tensor:
    """NF4 as QLoRA defines it: absmax per block, each value to the nearest of bitsandbytes' 16 NF4 levels.

    Written out rather than calling ``bitsandbytes.functional.quantize_4bit``: on the CPU (0.50.2) that gives
    2-4x the rounding error of this very scheme for any block size but 64 (measured on SmolLM2's weights; equal
    at 64, which ``test_nf4_is_what_bitsandbytes_layers_compute_with`` checks).
    """
    import bitsandbytes.functional as bnbf

    levels = bnbf.get_4bit_type("nf4", device="cpu").float()
    rows, pad = _blocks(weight.reshape(-1).float(), block)
    scale = rows.abs().max(dim=1, keepdim=True).values.clamp(min=1e-12)
    out = torch.empty_like(rows)
    for start in range(0, rows.shape[0], 4096):  # nearest level, a slab of blocks at a time (bounded memory)
        part = rows[start : start + 4096] / scale[start : start + 4096]
        nearest = (part.unsqueeze(-1) - levels).abs().argmin(dim=-1)
        out[start : start + 4096] = levels[nearest] * scale[start : start + 4096]
    out = out.reshape(-1)
    return (out[: out.numel() - pad] if pad else out).view_as(weight)


def quantized(
    weight: torch.Tensor, method: str, block: int, keep: Iterable[tuple[int, int]] = (), clip: float | None = None
) -> torch.Tensor:
    """``weight`` rounded by ``method``; the ``keep`` indices are left out of their blocks' scales and kept exact;
    ``clip``: every other value first clipped to ``clip`` standard deviations of the tensor."""
    keep = list(keep)
    work = weight.detach().float().clone()
    originals = [work[index].clone() for index in keep]
    for index in keep:
        work[index] = 0.0  # inside every block's range: it no longer sets the scale
    if clip is not None:
        bound = clip * float(work.std())
        work.clamp_(-bound, bound)
    out = rtn(work, block) if method == "rtn" else nf4(work, block)
    for index, value in zip(keep, originals, strict=True):
        out[index] = value
    return out
