"""The FLOP model of a frozen-base LoRA step and the matmul peak it is measured against (MFU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from superlora.models import LoadedModel


FLOP_FORMULA = (
    "model FLOPs per step = forward 2*N_block*T + 4*d*sum(L^2) per block (attention scores) + 2*N_lora*T "
    "+ backward (activation gradients only: frozen weights get no weight gradient) 2*N_block*T + 8*d*sum(L^2) "
    "+ 4*N_lora*T for every block from the lowest adapted one up (autograd computes nothing below it) "
    "+ LM head 2*V*d*P forward and 2*V*d*P backward. T = non-padding tokens, L = example lengths, d = query "
    "heads x head dim, P = positions whose logits are computed (non-padding positions with full logits, target "
    "positions with target-only logits). About 4*N*T, not 6*N*T: padding and the weight gradients of frozen "
    "weights are not model work."
)
PEAK_SHAPE = (1024, 4096, 1024)


@dataclass
class Batch:
    """What one collated batch held: example lengths, padded size, labelled (shifted) positions."""

    lengths: list[int]
    padded: int
    targets: int


def matmul_gflops(dtype: torch.dtype, threads: int, budget_s: float = 1.0) -> float:
    """GFLOP/s of PEAK_SHAPE matmuls in ``dtype`` on ``threads`` threads, timed for about ``budget_s`` (an
    emulated dtype is timed on fewer rows instead of stalling the bench: ~17 s a call at full size)."""
    from superlora.machine import matmul_rate

    return matmul_rate(dtype, [PEAK_SHAPE], threads, budget_s).gflops


@dataclass
class FlopModel:
    """The sizes the FLOP formula needs, read from the adapted model."""

    block_weights: list[int]  # frozen matmul weights per block
    lora_weights: list[int]  # trainable (adapter) weights per block
    attn_dim: int  # query heads x head dim
    head_weights: int  # LM head, V x d (0 for a classification head)
    lowest: int  # lowest block with adapters

    def step(self, batches: list[Batch], target_only: bool) -> float:
        """Model FLOPs of one optimiser step over ``batches`` (FLOP_FORMULA)."""
        tokens = sum(sum(b.lengths) for b in batches)
        squares = sum(length * length for b in batches for length in b.lengths)
        positions = sum(b.targets for b in batches) if target_only else tokens
        total = 4 * self.head_weights * positions
        for i, (w, lw) in enumerate(zip(self.block_weights, self.lora_weights, strict=True)):
            total += 2 * w * tokens + 2 * lw * tokens + 4 * self.attn_dim * squares
            if i >= self.lowest:
                total += 2 * w * tokens + 4 * lw * tokens + 8 * self.attn_dim * squares
        return float(total)


def flop_model(peft_model: nn.Module, loaded: LoadedModel) -> FlopModel:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    from superlora.training.speed import causal_lm

    blocks = loaded.model.get_submodule(loaded.arch.blocks_path)
    frozen, lora = [], []
    for block in blocks:
        linears = [m for m in block.modules() if isinstance(m, (nn.Linear, Conv1D))]
        frozen.append(sum(m.weight.numel() for m in linears if not m.weight.requires_grad))
        lora.append(sum(p.numel() for p in block.parameters() if p.requires_grad))
    config = causal_lm(peft_model).config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    adapted = [i for i, n in enumerate(lora) if n]
    head = causal_lm(peft_model).get_output_embeddings()  # None: a classification head (one position, ~0 FLOPs)
    return FlopModel(
        block_weights=frozen,
        lora_weights=lora,
        attn_dim=heads * head_dim,
        head_weights=head.weight.numel() if head is not None else 0,
        lowest=min(adapted) if adapted else len(lora),
    )
