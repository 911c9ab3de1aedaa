"""PNG plots of the evidence: where the spikes are, and how the super activation travels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from superlora.identify.ablation import Coord, scaled_weights  # noqa: E402
from superlora.identify.detect import BlockSpike  # noqa: E402
from superlora.models.arch import ArchFacts  # noqa: E402


def plot_block_maxima(
    per_prompt: list[list[BlockSpike]], residual: list[dict], proven: list[Coord], title: str, path: Path
) -> Path:
    """Per-block max |input| and |output| of the MLP projection (max over prompts) and the
    residual stream's largest entry after each block (first prompt), log scale."""
    blocks = [s.block for s in per_prompt[0]]
    max_in = [max(spikes[i].max_in for spikes in per_prompt) for i in range(len(blocks))]
    max_out = [max(spikes[i].max_out for spikes in per_prompt) for i in range(len(blocks))]
    after_block = [r["max_abs"] for r in residual[1 : len(blocks) + 1]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharex=True)
    panels = (
        (axes[0], max_in, "MLP projection: max |input|"),
        (axes[1], max_out, "MLP projection: max |output|"),
        (axes[2], after_block, "residual stream after the block: max |h|"),
    )
    for ax, values, label in panels:
        ax.plot(blocks, values, marker="o", ms=3, color="tab:blue")
        for coord in proven:
            ax.plot(coord.block, values[coord.block], marker="o", ms=9, mfc="none", mec="tab:red", mew=2)
        ax.set_yscale("log")
        ax.set_xlabel("block")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    if proven:
        axes[1].plot([], [], marker="o", ls="", mfc="none", mec="tab:red", mew=2, label="proven super weight")
        axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def residual_channel(model: nn.Module, input_ids: torch.Tensor, token: int, channel: int) -> list[float]:
    """|hidden[token, channel]| after the embeddings and after every block."""
    hidden = model(input_ids=input_ids, output_hidden_states=True).hidden_states
    return [float(h[0, token, channel].abs()) for h in hidden]


def plot_residual_stream(
    model: nn.Module, arch: ArchFacts, input_ids: torch.Tensor, top: Coord, token: int, zeroed: list[Coord], path: Path
) -> Path:
    """The super-activation channel across the residual stream, as is and with the super weights zeroed."""
    token = min(token, input_ids.shape[1] - 1)
    original = residual_channel(model, input_ids, token, top.out_channel)
    with scaled_weights(model, arch, zeroed):
        ablated = residual_channel(model, input_ids, token, top.out_channel)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = list(range(len(original)))  # 0 = embeddings, i = after block i-1
    ax.plot(x, original, marker="o", ms=3, label="model as is")
    ax.plot(x, ablated, marker="o", ms=3, label=f"{len(zeroed)} super weight(s) zeroed")
    ax.axvline(top.block + 1, color="tab:red", ls=":", label=f"after block {top.block}")
    ax.set_yscale("log")
    ax.set_xlabel("residual stream (0 = embeddings, k = after block k-1; the last is after the final norm)")
    ax.set_ylabel(f"|hidden[{token}, {top.out_channel}]|")
    ax.set_title(f"Super-activation channel {top.out_channel} at token {token}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
