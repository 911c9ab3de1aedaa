"""Prove each candidate by ablation: perplexity with it zeroed against two controls.

A super weight is one scalar whose removal wrecks the model. The controls show that the
damage is not what removing *any* weight does: (1) the same number of random weights of the
same projection, (2) the largest other weights of the same row — which also rules out "it
is just a big weight".

An encoder (BERT, MPNet, ...) has no next-token perplexity. Its damage is the **distortion** of its output: the
mean cosine distance, over the passage's tokens, between the final hidden states with and without the weight
zeroed (0: unchanged; 1: orthogonal). Proven: at least ``min_distortion`` and more than both controls.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from superlora.identify.ablation import Coord, scaled_weights
from superlora.identify.detect import SuperWeight
from superlora.models.arch import ArchFacts, encode, mlp_out_weight_llama_layout


@torch.no_grad()
def perplexity(model: nn.Module, input_ids: torch.Tensor) -> float:
    loss = model(input_ids=input_ids, labels=input_ids).loss
    return math.exp(float(loss)) if torch.isfinite(loss) else float("inf")


def random_coords(arch: ArchFacts, block: int, count: int, exclude: set[Coord], generator: torch.Generator) -> list:
    coords: list[Coord] = []
    while len(coords) < count:
        out = int(torch.randint(arch.mlp_out_features, (1,), generator=generator))
        inp = int(torch.randint(arch.mlp_in_features, (1,), generator=generator))
        coord = Coord(block, out, inp)
        if coord not in exclude and coord not in coords:
            coords.append(coord)
    return coords


def largest_in_row(model: nn.Module, arch: ArchFacts, coord: Coord, count: int, exclude: set[Coord]) -> list[Coord]:
    """The ``count`` largest-magnitude weights of ``coord``'s row that are not candidates themselves."""
    row = mlp_out_weight_llama_layout(arch, model, coord.block)[coord.out_channel].detach().abs().clone()
    for other in exclude | {coord}:
        if other.block == coord.block and other.out_channel == coord.out_channel:
            row[other.in_channel] = -1.0
    return [Coord(coord.block, coord.out_channel, int(i)) for i in row.topk(count).indices]


@torch.no_grad()
def final_states(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids, output_hidden_states=True)
    return out.hidden_states[-1][0].float()


def distortion(reference: torch.Tensor, states: torch.Tensor) -> float:
    """Mean over tokens of 1 - cos(reference, states): how far zeroing moved the encoder's output."""
    return float(1 - torch.nn.functional.cosine_similarity(reference, states, dim=-1).mean())


def prove_encoder(
    model: nn.Module,
    arch: ArchFacts,
    tokenizer,
    candidates: list[SuperWeight],
    passage: str,
    seed: int,
    min_distortion: float,
) -> dict:
    """``prove`` for an encoder: distortion of the final hidden states instead of a perplexity ratio."""
    ids = encode(tokenizer, model, passage)
    reference = final_states(model, ids)
    generator = torch.Generator().manual_seed(seed)
    all_coords = {sw.coord for sw in candidates}

    def moved(coords: list[Coord]) -> float:
        with scaled_weights(model, arch, coords):
            return distortion(reference, final_states(model, ids))

    for sw in tqdm(candidates, desc="ablation proof", unit="weight", leave=False):
        zeroed = moved([sw.coord])
        randoms = random_coords(arch, sw.block, 1, all_coords, generator)
        row_peers = largest_in_row(model, arch, sw.coord, 1, all_coords)
        random_d, row_d = moved(randoms), moved(row_peers)
        sw.proof = {
            "distortion": zeroed,
            "random_control": {"coords": [str(c) for c in randoms], "distortion": random_d},
            "row_control": {"coords": [str(c) for c in row_peers], "distortion": row_d},
            "proven": zeroed >= min_distortion and zeroed > random_d and zeroed > row_d,
        }
    proven = [sw.coord for sw in candidates if sw.proof["proven"]]
    summary = {"metric": "distortion", "passage_tokens": int(ids.shape[1]), "min_distortion": min_distortion}
    if proven:
        summary["distortion_all_proven_zeroed"] = moved(proven)
        randoms = []
        for coord in proven:
            randoms += random_coords(arch, coord.block, 1, all_coords | set(randoms), generator)
        summary["distortion_same_count_random_zeroed"] = moved(randoms)
    return summary


def prove(
    model: nn.Module,
    arch: ArchFacts,
    tokenizer,
    candidates: list[SuperWeight],
    passage: str,
    seed: int,
    min_ppl_ratio: float,
    min_distortion: float = 0.1,
) -> dict:
    """Fill ``candidate.proof`` for each candidate; return the model-level summary."""
    from superlora.models.loading import is_encoder

    if is_encoder(getattr(model, "config", None)):
        return prove_encoder(model, arch, tokenizer, candidates, passage, seed, min_distortion)
    ids = encode(tokenizer, model, passage)
    base = perplexity(model, ids)
    generator = torch.Generator().manual_seed(seed)
    all_coords = {sw.coord for sw in candidates}
    for sw in tqdm(candidates, desc="ablation proof", unit="weight", leave=False):
        with scaled_weights(model, arch, [sw.coord]):
            zeroed = perplexity(model, ids)
        randoms = random_coords(arch, sw.block, 1, all_coords, generator)
        with scaled_weights(model, arch, randoms):
            random_ppl = perplexity(model, ids)
        row_peers = largest_in_row(model, arch, sw.coord, 1, all_coords)
        with scaled_weights(model, arch, row_peers):
            row_ppl = perplexity(model, ids)
        ratio = zeroed / base
        sw.proof = {
            "ppl_zeroed": zeroed,
            "ppl_ratio": ratio,
            "random_control": {"coords": [str(c) for c in randoms], "ppl": random_ppl, "ppl_ratio": random_ppl / base},
            "row_control": {"coords": [str(c) for c in row_peers], "ppl": row_ppl, "ppl_ratio": row_ppl / base},
            "proven": ratio >= min_ppl_ratio and ratio > random_ppl / base and ratio > row_ppl / base,
        }
    proven = [sw.coord for sw in candidates if sw.proof["proven"]]
    summary = {"passage_tokens": int(ids.shape[1]), "ppl_base": base}
    if proven:
        with scaled_weights(model, arch, proven):
            summary["ppl_all_proven_zeroed"] = perplexity(model, ids)
        randoms = []
        for coord in proven:
            randoms += random_coords(arch, coord.block, 1, all_coords | set(randoms), generator)
        with scaled_weights(model, arch, randoms):
            summary["ppl_same_count_random_zeroed"] = perplexity(model, ids)
    return summary
