"""Batched prediction with a sequence-classification head (optionally under a LoRA adapter).

The texts are tokenized exactly as training tokenized them (``data.tokenize.text_ids``: the same cut at
max_length) and right-padded with the template's pad id, which the model's config names as its pad token: a
decoder's head reads the last non-pad token. Runs in float32, like decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from superlora.data.templates import LabelTemplate
from superlora.data.tokenize import text_ids


def classify(
    model,
    tokenizer,
    texts: Sequence[str],
    template: LabelTemplate,
    batch_size: int = 32,
    max_length: int = 512,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[list[float]]]:
    """(predicted label name, class probabilities) per text, in the order of ``texts``."""
    import torch

    ids_list = [text_ids(tokenizer, template, text, max_length)[0] for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(ids_list[i]))  # similar lengths batch together
    labels: list[str] = [""] * len(texts)
    probabilities: list[list[float]] = [[] for _ in texts]
    pad = template.pad_id(tokenizer)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(ids_list[i]) for i in batch)
            ids = torch.tensor([ids_list[i] + [pad] * (width - len(ids_list[i])) for i in batch], device=device)
            mask = torch.tensor([[1] * len(ids_list[i]) + [0] * (width - len(ids_list[i])) for i in batch])
            logits = model(input_ids=ids, attention_mask=mask.to(device)).logits.float()
            probs = torch.softmax(logits, dim=-1).cpu()
            for row, i in enumerate(batch):
                probabilities[i] = [round(float(p), 6) for p in probs[row]]
                labels[i] = template.labels[int(probs[row].argmax())]
            if progress is not None:
                progress(len(batch))
    return labels, probabilities


def timed_classify(
    model,
    tokenizer,
    texts: Sequence[str],
    template: LabelTemplate,
    batch_size: int,
    max_length: int,
    show_progress: bool = True,
) -> tuple[list[str], float]:
    """``classify`` with a tqdm bar; returns (labels, seconds)."""
    from tqdm import tqdm

    started = time.perf_counter()
    with tqdm(total=len(texts), desc="classifying", unit="text", disable=not show_progress) as bar:
        labels, _ = classify(model, tokenizer, texts, template, batch_size, max_length, progress=bar.update)
    return labels, time.perf_counter() - started
