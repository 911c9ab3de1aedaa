"""Shared fixtures: tiny random models of each family, the real data folder, offline Hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny import tiny_model, tiny_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
E2E_DIR = Path(os.environ.get("SUPERLORA_E2E_DIR", REPO.parent / "shared" / "data" / "e2e"))


@pytest.fixture
def tiny_model_dir(tmp_path):
    """Factory: save a tiny random model of a family (with tokenizer) to a folder."""

    def make(family: str, seed: int = 0) -> Path:
        folder = tmp_path / family
        tiny_model(family, seed).save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
        return folder

    return make


@pytest.fixture
def e2e_dir() -> Path:
    if not (E2E_DIR / "original" / "trainset.csv").is_file():
        pytest.skip(f"E2E data not found at {E2E_DIR}")
    return E2E_DIR
