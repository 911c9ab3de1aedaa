"""The teacher-forced loss of labelled rows: training's loss on data it did not train on."""

from __future__ import annotations

import math

import torch

from superlora.data.collate import PadCollator
from superlora.data.tokenize import IGNORE_INDEX


def mean_token_loss(model: torch.nn.Module, rows: list[dict], pad_id: int, batch_size: int = 4) -> dict[str, float]:
    """Mean cross-entropy over the rows' labelled tokens (no label smoothing) and its perplexity.

    The model runs in eval mode (no dropout, so no random numbers are drawn: a training run that measures
    this stays exact on resume) and is put back in the mode it was in.
    """
    collate = PadCollator(pad_id)
    device = next(model.parameters()).device
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                labels = batch["labels"][:, 1:]
                keep = labels != IGNORE_INDEX
                nll = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), labels[keep], reduction="sum")
                total, count = total + float(nll), count + int(keep.sum())
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
