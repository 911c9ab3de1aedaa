"""``layers: probe``: choose the blocks by a short gradient probe, the cheap importance measure super weights
must beat to matter.

LoRA goes into every block for ``probe_steps`` optimiser steps of the recipe (its targets, rank, learning
rate and batch size, on seeded batches of the training data). A block's score is the mean over those steps of
the norm of its LoRA gradients; the ``count`` highest-scoring blocks are chosen. The probe's adapters are
then removed (``unload``: the base weights were never changed), so the run trains fresh adapters in the
chosen blocks exactly as any other selection would.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from superlora.data.collate import PadCollator

if TYPE_CHECKING:
    from superlora.models import LoadedModel
    from superlora.training.config import TrainConfig


def probe_blocks(
    cfg: TrainConfig, loaded: LoadedModel, rows: list[dict], pad_id: int, count: int, targets: list[str]
) -> tuple[list[int], list[float]]:
    """The ``count`` blocks with the largest LoRA gradients over a short all-block run, and every block's score."""
    from peft import LoraConfig, get_peft_model

    from superlora.training.layers import target_module_names

    model, arch = loaded.model, loaded.arch
    names = target_module_names(model, arch, list(range(arch.num_blocks)), targets)
    torch.manual_seed(cfg.seed)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=0.0, target_modules=names)
    probe = get_peft_model(model, lora)
    params = {n: p for n, p in probe.named_parameters() if p.requires_grad}
    optimiser = torch.optim.AdamW(params.values(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    order = random.Random(cfg.seed).sample(range(len(rows)), len(rows))
    collate, batch = PadCollator(pad_id), cfg.optim.batch_size
    scores = [0.0] * arch.num_blocks
    prefix = f"base_model.model.{arch.blocks_path}."
    probe.train()
    for step in range(cfg.probe_steps):
        picked = [rows[order[(step * batch + i) % len(rows)]] for i in range(batch)]
        loss = probe(**collate(picked)).loss
        loss.backward()
        for name, param in params.items():
            if param.grad is not None and name.startswith(prefix):
                scores[int(name[len(prefix) :].split(".", 1)[0])] += float(param.grad.norm()) / cfg.probe_steps
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    probe.unload()  # the base model as it was: the probe's adapters are dropped, nothing merged
    model.eval()
    chosen = sorted(sorted(range(arch.num_blocks), key=lambda b: -scores[b])[:count])
    return chosen, [round(s, 6) for s in scores]
