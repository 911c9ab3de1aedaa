"""Model resolution: one call from a reference to (model, tokenizer, architecture facts)."""

from superlora.models.aliases import ALIASES, DEFAULT_MODEL, cache_root, pull
from superlora.models.arch import ArchFacts, describe_architecture
from superlora.models.loading import LoadedModel, load_model

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "ArchFacts",
    "LoadedModel",
    "cache_root",
    "describe_architecture",
    "load_model",
    "pull",
]
