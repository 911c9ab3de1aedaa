"""Zero or scale individual weights of an MLP output projection, and put them back exactly."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from superlora.errors import SuperloraError
from superlora.models.arch import ArchFacts


@dataclass(frozen=True, order=True)
class Coord:
    """A weight of block ``block``'s MLP output projection, in Llama layout W[out, in]."""

    block: int
    out_channel: int
    in_channel: int

    def __str__(self) -> str:
        return f"{self.block}:{self.out_channel}:{self.in_channel}"


COORD_PATTERN = re.compile(r"^\s*(\d+)\s*[:,]\s*(\d+)\s*[:,]\s*(\d+)\s*$")


def parse_coord_text(text: str) -> Coord:
    """``"11:507:1229"`` (block:out:in) → Coord, syntax only: checkable before a model is loaded."""
    match = COORD_PATTERN.match(text)
    if not match:
        raise SuperloraError(f"coordinate '{text}' is not BLOCK:OUT:IN (e.g. 2:3968:7003)")
    return Coord(*(int(g) for g in match.groups()))


def parse_coord(text: str, arch: ArchFacts) -> Coord:
    """``"11:507:1229"`` (block:out:in) → Coord, checked against the model's shapes."""
    coord = parse_coord_text(text)
    limits = (arch.num_blocks, arch.mlp_out_features, arch.mlp_in_features)
    values = (coord.block, coord.out_channel, coord.in_channel)
    for name, value, limit in zip(("block", "out channel", "in channel"), values, limits, strict=True):
        if value >= limit:
            raise SuperloraError(f"coordinate '{text}': {name} {value} out of range (model has {limit})")
    return coord


def _stored(arch: ArchFacts, model: nn.Module, coord: Coord) -> tuple[torch.Tensor, tuple[int, int]]:
    return arch.mlp_out(model, coord.block).weight, arch.stored_index(coord.out_channel, coord.in_channel)


@contextmanager
def scaled_weights(model: nn.Module, arch: ArchFacts, coords: Iterable[Coord], scale: float = 0.0) -> Iterator[None]:
    """Multiply the given weights by ``scale`` inside the block; restore the exact originals after."""
    saved: list[tuple[torch.Tensor, tuple[int, int], torch.Tensor]] = []
    try:
        with torch.no_grad():
            for coord in coords:
                weight, index = _stored(arch, model, coord)
                saved.append((weight, index, weight[index].clone()))
                weight[index] = weight[index] * scale
        yield
    finally:
        with torch.no_grad():
            for weight, index, original in reversed(saved):
                weight[index] = original


def weight_value(model: nn.Module, arch: ArchFacts, coord: Coord) -> float:
    weight, index = _stored(arch, model, coord)
    return float(weight.detach()[index])
