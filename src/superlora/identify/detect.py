"""Find super weights from activation spikes (paper §3.1), zeroing and re-running as it does.

For every block we watch the MLP output projection ``Y = X W^T``. A super activation is a
huge entry ``Y[t, r]``; the weight that creates it is ``W[r, c]`` where ``c`` is the input
channel contributing most to that entry (almost always the input channel with the largest
|X[t, ·]| too, as the paper observes). Each round takes, in every block, the spike that
recurs across prompts, zeroes those weights and runs again: a weight whose spike was masked by
a larger one in the same block surfaces in a later round. Not every spike is a super weight
(late blocks also react to the super activation), so every candidate is then proven or
rejected by ablation in prove.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from superlora.identify.ablation import Coord, scaled_weights, weight_value
from superlora.models.arch import ArchFacts, encode, mlp_out_weight_llama_layout


@dataclass
class BlockSpike:
    """The largest MLP-projection activations of one block on one prompt."""

    block: int
    max_in: float  # largest |X| anywhere
    max_out: float  # largest |Y| anywhere
    median_out: float  # median |Y|: the block's ordinary scale
    token: int  # position of the output spike
    out_channel: int
    in_channel: int  # input channel contributing most to Y[token, out_channel]
    in_at_token: float  # |X[token, in_channel]|

    def is_candidate(self, abs_threshold: float, median_ratio: float) -> bool:
        return self.max_out > abs_threshold and self.max_out > median_ratio * max(self.median_out, 1e-12)

    @property
    def coord(self) -> Coord:
        return Coord(self.block, self.out_channel, self.in_channel)


@dataclass
class SuperWeight:
    """One identified super weight and the evidence for it."""

    coord: Coord
    param_name: str
    stored_index: tuple[int, int]
    value: float
    input_abs: float  # median over the prompts where it spiked
    output_abs: float
    token_position: int  # most common spike position
    token: str
    recurrence: float  # share of prompts on which it was the block's spike
    round: int  # zero-and-rerun round that found it
    proof: dict = field(default_factory=dict)  # filled by prove.py

    @property
    def block(self) -> int:
        return self.coord.block


@torch.no_grad()
def block_spikes(model: nn.Module, arch: ArchFacts, input_ids: torch.Tensor) -> list[BlockSpike]:
    """One forward pass of a single prompt; per-block spike statistics of the MLP projection."""
    spikes: list[BlockSpike] = []

    def hook(block: int):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x, y = inputs[0][0].float(), output[0].float()  # [T, d_in], [T, d_out]
            y_abs = y.abs()
            token, out_channel = divmod(int(y_abs.argmax()), y_abs.shape[1])
            row = mlp_out_weight_llama_layout(arch, model, block)[out_channel].float()
            in_channel = int((x[token] * row).abs().argmax())
            spikes.append(
                BlockSpike(
                    block=block,
                    max_in=float(x.abs().max()),
                    max_out=float(y_abs[token, out_channel]),
                    median_out=float(y_abs.median()),
                    token=token,
                    out_channel=out_channel,
                    in_channel=in_channel,
                    in_at_token=float(x[token, in_channel].abs()),
                )
            )

        return record

    handles = [arch.mlp_out(model, i).register_forward_hook(hook(i)) for i in range(arch.num_blocks)]
    try:
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(spikes, key=lambda s: s.block)


@torch.no_grad()
def residual_maxima(model: nn.Module, input_ids: torch.Tensor) -> list[dict]:
    """Largest |hidden| entry after the embeddings and after each block (where it is, how big).

    Models that re-normalise the MLP output (Gemma's post-feed-forward norm) can carry a massive
    residual activation without any down-projection spike; this shows it either way.
    """
    hidden = model(input_ids=input_ids, output_hidden_states=True).hidden_states
    maxima = []
    for position, h in enumerate(hidden):
        magnitude = h[0].float().abs()
        token, channel = divmod(int(magnitude.argmax()), magnitude.shape[1])
        maxima.append(
            {
                "position": position,
                "max_abs": float(magnitude[token, channel]),
                "token": token,
                "channel": channel,
                "median_abs": float(magnitude.median()),
            }
        )
    return maxima


def spikes_per_prompt(
    model: nn.Module, arch: ArchFacts, prompts_ids: list[torch.Tensor], zeroed: list[Coord]
) -> list[list[BlockSpike]]:
    """Block statistics for every prompt with the ``zeroed`` weights set to 0."""
    with scaled_weights(model, arch, zeroed, 0.0):
        return [block_spikes(model, arch, ids) for ids in prompts_ids]


def find_candidates(
    model: nn.Module,
    arch: ArchFacts,
    tokenizer,
    prompts: list[str],
    abs_threshold: float,
    median_ratio: float,
    min_recurrence: float,
    max_count: int,
) -> tuple[list[SuperWeight], list[list[BlockSpike]]]:
    """The zero-and-rerun loop: candidates in the order found (unproven), and round 0's spikes."""
    prompts_ids = [encode(tokenizer, model, p) for p in prompts]
    needed = max(1, round(min_recurrence * len(prompts) + 1e-9))
    found: list[SuperWeight] = []
    first_round: list[list[BlockSpike]] = []
    for round_index in range(max_count):
        zeroed = [sw.coord for sw in found]
        per_prompt = spikes_per_prompt(model, arch, prompts_ids, zeroed)
        first_round = first_round or per_prompt
        # spikes above threshold, per coordinate, over prompts
        hits: dict[Coord, list[tuple[int, BlockSpike]]] = {}
        for prompt_index, spikes in enumerate(per_prompt):
            for spike in spikes:
                if spike.is_candidate(abs_threshold, median_ratio) and spike.coord not in zeroed:
                    hits.setdefault(spike.coord, []).append((prompt_index, spike))
        recurring = {c: h for c, h in hits.items() if len(h) >= needed}
        if not recurring:
            break
        # one coordinate per spiking block (its most recurrent, then largest), biggest first
        best: dict[int, Coord] = {}
        for coord, coord_hits in recurring.items():
            key = (len(coord_hits), _median([s.max_out for _, s in coord_hits]))
            held = best.get(coord.block)
            if held is None or key > (len(recurring[held]), _median([s.max_out for _, s in recurring[held]])):
                best[coord.block] = coord
        ranked = sorted(best.values(), key=lambda c: -_median([s.max_out for _, s in recurring[c]]))
        for coord in ranked[: max_count - len(found)]:
            found.append(_describe(model, arch, tokenizer, coord, recurring[coord], prompts_ids, round_index))
        if len(found) >= max_count:
            break
    return found, first_round


def _median(values: list[float]) -> float:
    return float(torch.tensor(values).median())


def _describe(
    model: nn.Module,
    arch: ArchFacts,
    tokenizer,
    coord: Coord,
    hits: list[tuple[int, BlockSpike]],
    prompts_ids: list[torch.Tensor],
    round_index: int,
) -> SuperWeight:
    spikes = [s for _, s in hits]
    position = Counter(s.token for s in spikes).most_common(1)[0][0]
    prompt_index = next(i for i, s in hits if s.token == position)
    token_id = int(prompts_ids[prompt_index][0, position])
    stored = arch.stored_index(coord.out_channel, coord.in_channel)
    return SuperWeight(
        coord=coord,
        param_name=arch.mlp_out_param_name(coord.block),
        stored_index=stored,
        value=weight_value(model, arch, coord),
        input_abs=_median([s.in_at_token for s in spikes]),
        output_abs=_median([s.max_out for s in spikes]),
        token_position=position,
        token=tokenizer.decode([token_id]),
        recurrence=len(hits) / len(prompts_ids),
        round=round_index,
    )
