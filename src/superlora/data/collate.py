"""Pre-tokenized rows and the collator that pads them; the loss mask travels in ``labels``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from superlora.data.tokenize import IGNORE_INDEX
from superlora.errors import SuperloraError


class TokenizedRows(torch.utils.data.Dataset):
    """Pre-tokenized examples (tokenizing ~1 ms each is cheaper than a datasets pipeline here); ``dropped``: how
    many samples were left out because no labelled token fitted max_length."""

    def __init__(self, rows: list[dict[str, list[int]]], dropped: int = 0) -> None:
        self.rows = rows
        self.dropped = dropped

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]


@dataclass
class PadCollator:
    """Right-pad a batch: pad id for inputs, 0 for the mask, IGNORE_INDEX for labels.

    Labels are padded by position, never derived from ``input_ids == pad``: a pad id equal to eos
    would otherwise mask the real end token and the model would never learn to stop.
    A batch in which no label is set would train on nothing; it is refused. Rows of a classification task
    carry one class index (``label``) instead: ``labels`` is then that index per row.
    """

    pad_id: int

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([row[key] + [value] * (width - len(row[key])) for row in rows])

        if "label" in rows[0]:
            return {
                "input_ids": pad("input_ids", self.pad_id),
                "attention_mask": pad("attention_mask", 0),
                "labels": torch.tensor([row["label"] for row in rows]),
            }

        batch = {
            "input_ids": pad("input_ids", self.pad_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
        }
        if not bool((batch["labels"][:, 1:] != IGNORE_INDEX).any()):
            raise SuperloraError(
                "a batch has no token to train on (every label is masked): check the loss mask and max_length"
            )
        return batch
