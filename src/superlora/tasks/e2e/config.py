"""The E2E task's recipe section (light: no data are read here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class E2EConfig:
    """E2E NLG: MR -> one-sentence restaurant description (Novikova et al. 2017).

    ``variant``/``split`` choose the training rows; evaluation decodes ``eval_variant`` (the official
    test set is the original release: 630 MRs with all their references).
    """

    name: Literal["e2e"] = "e2e"
    source: str | None = None  # folder holding original/ and cleaned/; None: $SUPERLORA_E2E_DIR, then the Hub
    variant: Literal["original", "cleaned"] = "cleaned"
    split: Literal["train", "validation", "test"] = "train"
    eval_variant: Literal["original", "cleaned"] = "original"
