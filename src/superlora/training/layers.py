"""Which transformer blocks get LoRA adapters, and the exact module names that means.

The study compares adapters in the blocks that hold super weights with adapters everywhere
(the baseline), with placements defined by them (``above`` the highest one, ``avoid`` them) and with
controls of the same size (random, first, last blocks). Selection
is resolved to explicit full module names, so peft cannot silently adapt anything else.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn
from transformers.pytorch_utils import Conv1D

from superlora.errors import SuperloraError

if TYPE_CHECKING:
    from superlora.models import ArchFacts, LoadedModel
    from superlora.training.config import TrainConfig


def read_superweight_blocks(path: str | Path, num_blocks: int) -> list[int]:
    """Sorted distinct block indices listed in a ``superweights.json`` (from ``superlora identify``)."""
    path = Path(path)
    if not path.is_file():
        raise SuperloraError(f"superweights file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["super_weights"]
        blocks = sorted({int(entry["block"]) for entry in entries if entry.get("proven", True)})
    except (ValueError, KeyError, TypeError) as exc:
        raise SuperloraError(
            f"{path}: not a superweights file (expected {{'super_weights': [{{'block': int, ...}}]}}; {exc!r})"
        ) from None
    if not blocks:
        raise SuperloraError(f"{path}: lists no super weights, so there are no blocks to train")
    check_blocks(blocks, num_blocks, where=str(path))
    return blocks


def superweight_coordinates(cfg: TrainConfig, loaded: LoadedModel) -> tuple[str, ...]:
    """The proven super weights as "block:out:in" (from ``cfg.superweights``, or identified now): what a
    ``keep_superweights`` base holds in full precision."""
    if cfg.superweights:
        try:
            data = json.loads(Path(cfg.superweights).read_text(encoding="utf-8"))
            coords = tuple(
                e.get("coordinate") or f"{e['block']}:{e['out_channel']}:{e['in_channel']}"
                for e in data["super_weights"]
                if e.get("proven", True)
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SuperloraError(f"{cfg.superweights}: no super-weight coordinates in it ({exc!r})") from None
    else:
        from superlora.identify import find_super_weights

        coords = tuple(str(sw.coord) for sw in find_super_weights(loaded))
    if not coords:
        raise SuperloraError(f"keep_superweights: true, but {cfg.superweights or loaded.name} has no super weights")
    return coords


def identify_superweight_blocks(loaded: LoadedModel) -> list[int]:
    """Find the super weights now (slower than reading a file) and return their blocks."""
    try:
        from superlora.identify import find_super_weights
    except ImportError:
        raise SuperloraError(
            "super-weight identification is not available in this install; "
            "give superweights: PATH (a superweights.json) or use layers: [block, ...]"
        ) from None
    blocks = sorted({int(sw.block) for sw in find_super_weights(loaded)})
    if not blocks:
        raise SuperloraError(f"no super weights found in {loaded.name}; choose layers: all or an explicit list")
    check_blocks(blocks, loaded.arch.num_blocks, where="identified super weights")
    return blocks


def check_blocks(blocks: list[int], num_blocks: int, where: str = "layers") -> None:
    for b in blocks:
        if not 0 <= b < num_blocks:
            raise SuperloraError(
                f"{where}: block index {b} is out of range; the model has {num_blocks} blocks (0-{num_blocks - 1})"
            )


def select_blocks(cfg: TrainConfig, loaded: LoadedModel) -> tuple[list[int], int | None]:
    """Resolve ``cfg.layers`` to sorted block indices, and the ``count`` the controls used.

    Controls default to as many blocks as hold super weights, so they are a fair comparison.
    """
    n = loaded.arch.num_blocks

    def superweight_blocks() -> list[int]:
        if cfg.superweights:
            return read_superweight_blocks(cfg.superweights, n)
        return identify_superweight_blocks(loaded)

    if isinstance(cfg.layers, list):
        check_blocks(cfg.layers, n)
        return sorted(set(cfg.layers)), cfg.count
    if cfg.layers == "all":
        return list(range(n)), cfg.count
    if cfg.layers == "none":
        return [], cfg.count
    if cfg.layers == "superweights":
        return superweight_blocks(), cfg.count
    if cfg.layers in ("above", "avoid"):
        return placed_around(cfg.layers, superweight_blocks(), n), cfg.count
    count = cfg.count if cfg.count is not None else len(superweight_blocks())
    if count > n:
        raise SuperloraError(f"count={count} is more blocks than the model has ({n})")
    if cfg.layers == "probe":
        return [], count  # chosen by plan_run once the training data are tokenized (training.probe)
    if cfg.layers == "first":
        return list(range(count)), count
    if cfg.layers == "last":
        return list(range(n - count, n)), count
    return sorted(random.Random(cfg.seed).sample(range(n), count)), count  # random


def placed_around(strategy: str, superweight_blocks: list[int], num_blocks: int) -> list[int]:
    """``above``: every block after the highest super-weight block (the backward pass stops there, which is
    where layer selection saves time); ``avoid``: every block except the super-weight ones."""
    if strategy == "above":
        top = max(superweight_blocks)
        if top == num_blocks - 1:
            raise SuperloraError(f"layers: above: the super weights are in the last block ({top}); no block is above")
        return list(range(top + 1, num_blocks))
    rest = [b for b in range(num_blocks) if b not in set(superweight_blocks)]
    if not rest:
        raise SuperloraError("layers: avoid: every block holds a super weight; no block is left")
    return rest


def matched_rank(rank: int, num_blocks: int, selected: int) -> int:
    """The rank at which LoRA in ``selected`` blocks has as many trainable parameters as rank ``rank`` in all
    ``num_blocks`` (exact when every block's targets have the same shapes, as in every decoder here)."""
    return max(1, round(rank * num_blocks / selected))


def default_targets(arch: ArchFacts) -> list[str]:
    """LoRA's classic targets, the attention query/value projections (GPT-2: the fused ``c_attn``)."""
    if not arch.query_value:
        raise SuperloraError(
            f"no default LoRA targets for '{arch.model_type}' (attention projections: "
            f"{', '.join(arch.attention_projections)}); set lora.targets"
        )
    return [f"{arch.attention_name}.{name}" for name in arch.query_value]


def target_module_names(model: nn.Module, arch: ArchFacts, blocks: list[int], targets: list[str]) -> list[str]:
    """Full names of the modules to adapt: each target (a name suffix) inside each selected block."""
    selected = {arch.block_name(b) + "." for b in blocks}
    found: dict[str, list[str]] = {target: [] for target in targets}
    for name, module in model.named_modules():
        prefix = next((p for p in selected if name.startswith(p)), None)
        if prefix is None or not isinstance(module, (nn.Linear, Conv1D)):
            continue
        for target in targets:
            if name[len(prefix) :] == target or name.endswith("." + target):
                found[target].append(name)
    for target, names in found.items():
        if not names:
            raise SuperloraError(
                f"lora.targets: '{target}' matches no linear layer in the selected blocks (attention "
                f"projections are {', '.join(arch.attention_projections)}; MLP output is {arch.mlp_out_name})"
            )
    return sorted({n for names in found.values() for n in names}, key=lambda n: (_block_of(n, arch), n))


def _block_of(name: str, arch: ArchFacts) -> int:
    return int(name[len(arch.blocks_path) + 1 :].split(".", 1)[0])


def adapted_blocks(model: nn.Module, arch: ArchFacts) -> list[int]:
    """Blocks that actually hold LoRA weights (checks the selection took effect)."""
    prefixes = [("base_model.model." + arch.blocks_path + "."), (arch.blocks_path + ".")]
    blocks = set()
    for name, _ in model.named_modules():
        if not name.endswith("lora_A"):
            continue
        for prefix in prefixes:
            if name.startswith(prefix):
                blocks.add(int(name[len(prefix) :].split(".", 1)[0]))
                break
    return sorted(blocks)
