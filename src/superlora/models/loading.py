"""Turn a model reference (alias, local folder, .gguf file or Hub id) into a ready model."""

from __future__ import annotations

import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import nn

from superlora.errors import SuperloraError
from superlora.models.aliases import ALIASES, CACHE_MARKER, cache_root, load_gguf, pull, save_cache
from superlora.models.arch import ArchFacts, describe_architecture

# peft 0.21 still reads transformers' old attribute name when it wraps a model; nothing a user can act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
OFFLINE_HINT = (
    "offline alternatives: a built-in alias ({aliases}; see `superlora models list`), "
    "a local Hugging Face folder, or a .gguf file"
)


Head = Literal["lm", "classifier"]
# Encoder-only families: loaded bare for "lm" (they cannot generate; identify and the explorer need no head).
# BERT's config also maps to a causal LM class (BertLMHeadModel) whose head would be random: never wanted here.
ENCODER_TYPES = frozenset(
    {"bert", "distilbert", "mpnet", "roberta", "xlm-roberta", "electra", "albert", "camembert", "deberta", "deberta-v2"}
)


def head_module_names(model: nn.Module) -> list[str]:
    """A classification model's head: its top-level modules with weights outside the pretrained body (BERT:
    classifier; DistilBERT: pre_classifier and classifier; Llama: score)."""
    body = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children() if name != body and any(True for _ in child.parameters())]


def is_encoder(config) -> bool:
    return getattr(config, "model_type", None) in ENCODER_TYPES and not getattr(config, "is_decoder", False)


@dataclass
class LoadedModel:
    """A model with its tokenizer and the architecture facts later stages rely on: a causal LM (``head``
    "lm"), a bare encoder (head "lm", ``is_encoder``: no generation), or either with a new classification head."""

    model: nn.Module
    tokenizer: object
    arch: ArchFacts
    name: str  # the reference the user gave
    source: str  # where the weights were read from
    head: Head = "lm"


def _hub_offline() -> bool:
    """True when the Hub cannot be used: HF_HUB_OFFLINE set, or its host does not answer."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return True
    return False


def _offline_error(ref: str) -> SuperloraError:
    hint = OFFLINE_HINT.format(aliases=", ".join(ALIASES))
    return SuperloraError(
        f"cannot load '{ref}': not in the local Hugging Face cache and the Hub is unreachable; {hint}"
    )


def _from_pretrained(ref: str, what: str, trust_remote_code: bool, head: Head = "lm", num_labels: int = 2):
    """Load a model (what='model') or tokenizer from a folder or Hub id, cache first. ``head``: "lm" is the
    causal LM (an encoder loads bare), "classifier" a new ``num_labels``-way sequence-classification head."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    def load(local_only: bool):
        common = {"local_files_only": local_only, "trust_remote_code": trust_remote_code}
        if what == "tokenizer":
            return AutoTokenizer.from_pretrained(ref, **common)
        config = AutoConfig.from_pretrained(ref, **common)
        if head == "classifier":
            config.num_labels = num_labels
            from transformers.utils import logging as hf_logging

            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # its report lists the new head as missing weights: expected here
            try:
                with torch.random.fork_rng(devices=[]):  # the new head starts the same on every load (reproducible)
                    torch.manual_seed(0)
                    model = AutoModelForSequenceClassification.from_pretrained(
                        ref, config=config, use_safetensors=True, **common
                    )
            finally:
                hf_logging.set_verbosity(level)
            model._superlora_head = "classifier"  # base_fingerprint hashes the body only
            return model
        cls = AutoModel if is_encoder(config) else AutoModelForCausalLM
        return cls.from_pretrained(ref, config=config, use_safetensors=True, **common)

    if Path(ref).is_dir():
        try:
            return load(local_only=True)
        except (OSError, ValueError) as exc:
            raise SuperloraError(f"cannot load {what} from folder {ref}: {_first_line(exc)}") from None
    if not HUB_ID.match(ref):
        raise SuperloraError(f"model '{ref}' is not an alias ({', '.join(ALIASES)}), an existing path or a Hub id")
    if _hub_offline():
        if not _in_hf_cache(ref):
            raise _offline_error(ref)
        _force_offline()  # cached files only: never wait on retries to an unreachable Hub
        try:
            return load(local_only=True)
        except (OSError, ValueError) as exc:
            raise SuperloraError(
                f"cannot load {what} '{ref}' from the Hugging Face cache: {_first_line(exc)}"
            ) from None
    try:
        return load(local_only=False)
    except (OSError, ValueError) as exc:
        raise SuperloraError(f"cannot load {what} '{ref}' from the Hub: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _in_hf_cache(ref: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(ref, "config.json"), str)


def _force_offline() -> None:
    """Switch this process to Hugging Face offline mode (it is offline anyway)."""
    import importlib

    from huggingface_hub import constants, is_offline_mode

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    module = importlib.import_module(is_offline_mode.__module__)
    if hasattr(module, "HF_HUB_OFFLINE"):
        module.HF_HUB_OFFLINE = True


def _gguf_cache_dir(path: Path) -> Path:
    stat = path.stat()
    return cache_root() / "gguf-models" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"


GGUF_MAGIC = b"GGUF"


def _check_gguf_magic(path: Path) -> None:
    """Refuse a file that merely ends in .gguf before transformers parses it (it tracebacks)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise SuperloraError(f"cannot read GGUF file {path}: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        raise SuperloraError(f"{path} is not a GGUF file (bad magic {head!r}, expected {GGUF_MAGIC!r})")


def _cache_user_gguf(path: Path) -> Path:
    """Dequantize a user's GGUF file once into the cache; return the cached folder."""
    cached = _gguf_cache_dir(path)
    if (cached / CACHE_MARKER).is_file():
        return cached
    _check_gguf_magic(path)
    try:
        model, tokenizer = load_gguf(path)
    except Exception as exc:  # a corrupt or unsupported file can fail anywhere in the GGUF reader
        raise SuperloraError(f"cannot read GGUF file {path}: {_first_line(exc)}") from None
    save_cache(model, tokenizer, cached, {"source": str(path)})
    return cached


def resolve_weights(ref: str) -> tuple[str, str]:
    """Where to load ``ref`` from: (path or Hub id, kind). Prepares aliases and GGUF caches."""
    if ref in ALIASES:
        return str(pull(ref)), "alias"
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SuperloraError(f"GGUF file not found: {path}")
        return str(_cache_user_gguf(path.resolve())), "gguf"
    if path.exists() and not path.is_dir():
        raise SuperloraError(f"model path {path} is a file; give a Hugging Face model folder or a .gguf file")
    return (str(path), "folder") if path.is_dir() else (ref, "hub")


def load_model(
    ref: str,
    tokenizer: str | None = None,
    trust_remote_code: bool = False,
    head: Head = "lm",
    num_labels: int = 2,
) -> LoadedModel:
    """Load model ``ref`` (and tokenizer ``tokenizer``, default: the same) for CPU work; ``head="classifier"``
    puts a new ``num_labels``-way classification head on it (an encoder's or a decoder's).

    Raises :class:`SuperloraError` with one clear line for every user-fixable problem:
    unknown alias, missing path, offline Hub, unknown architecture.
    """
    weights, kind = resolve_weights(ref)
    model = _from_pretrained(weights, "model", trust_remote_code, head, num_labels)
    tok_weights = weights if tokenizer is None else resolve_weights(tokenizer)[0]
    tok = _from_pretrained(tok_weights, "tokenizer", trust_remote_code)
    if tok.pad_token is None:  # GPT-2 has none; batching needs one
        tok.pad_token = tok.eos_token
    if head == "classifier" and not is_encoder(model.config):
        model.config.pad_token_id = tok.pad_token_id  # a decoder's head reads the last token that is not this one
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tok,
        arch=describe_architecture(model),
        name=ref,
        source=weights,
        head=head,
    )
