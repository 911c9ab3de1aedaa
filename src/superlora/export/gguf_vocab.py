"""The tokenizer as GGUF metadata: a byte-level BPE ("gpt2") vocabulary, its merges and its special tokens.

A GGUF file carries no ``tokenizer.json``; readers rebuild the tokenizer from ``tokenizer.ggml.*``: the tokens
in id order (spelt in GPT-2's byte alphabet, as the vocabulary stores them), one type per token (special
tokens are CONTROL, so they stay whole), the merges in rank order, and the pre-tokenizer's name
(``tokenizer.ggml.pre``), which picks the regex that splits text before the merges. Only the splits
transformers and llama.cpp both know are named; any other tokenizer is refused instead of exported with a
tokenizer that cuts text differently. The export checks the result by reading the tokenizer back.
"""

from __future__ import annotations

import json
from typing import Any

from superlora.errors import SuperloraError

# the Split regexes of tokenizers that GGUF readers know by name (tokenizer.ggml.pre), as tokenizer.json spells them
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = _WORDS + r"\p{N}" + _REST  # digits one by one
LLAMA3_SPLIT = _WORDS + r"\p{N}{1,3}" + _REST  # digits in threes
KNOWN_SPLITS = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}

# token types (gguf.TokenType), spelt out so this module imports nothing heavy
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def backend_json(tokenizer: Any) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SuperloraError("GGUF export needs a fast (tokenizers) tokenizer; this model's has none")
    return json.loads(backend.to_str())


def pre_tokenizer_name(spec: dict) -> str:
    """``tokenizer.ggml.pre`` for this tokenizer.json, or a SuperloraError for a split GGUF cannot name.

    GPT-2's own split is ByteLevel with its built-in regex ("gpt2", also what readers fall back to); Qwen2's and
    Llama 3's are a Split regex followed by ByteLevel without one.
    """
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if model.get("type") != "BPE" or "ByteLevel" not in kinds:
        what = model.get("type") or "unknown"
        raise SuperloraError(
            f"GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM style); this model's "
            f"tokenizer is {what}{'' if 'ByteLevel' in kinds else ' without byte-level pre-tokenization'}"
        )
    if spec.get("normalizer"):
        kind = spec["normalizer"].get("type")
        raise SuperloraError(f"GGUF export: the tokenizer's normalizer ({kind}) has no GGUF form")
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in KNOWN_SPLITS:
            return KNOWN_SPLITS[pattern]
    raise SuperloraError(
        f"GGUF export: the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds))}) is not one GGUF readers "
        "know by name (gpt2, qwen2, llama-bpe)"
    )


def vocabulary(tokenizer: Any, spec: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order and their GGUF types, padded to the model's ``vocab_size`` with unused
    ``[PADn]`` tokens (embedding matrices are often rounded up past the tokenizer)."""
    tokens: dict[int, str] = {index: token for token, index in spec["model"]["vocab"].items()}
    types = dict.fromkeys(tokens, NORMAL)
    for added in spec.get("added_tokens") or []:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    if max(tokens) >= vocab_size:
        raise SuperloraError(
            f"GGUF export: the tokenizer has token id {max(tokens)}, but the model's vocabulary has {vocab_size} rows"
        )
    listed = [tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    kinds = [types.get(i, UNUSED) for i in range(vocab_size)]
    return listed, kinds


def merges(spec: dict) -> list[str]:
    """The merges as "left right" strings (tokenizer.json stores pairs, or such strings in older files)."""
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or []]


def adds_bos(tokenizer: Any) -> bool:
    """Whether encoding plain text puts BOS first (Llama 2 style) — llama.cpp must then add it too."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def add_tokenizer_metadata(writer: Any, tokenizer: Any, vocab_size: int, chat_template: str | None) -> None:
    spec = backend_json(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(spec))
    tokens, types = vocabulary(tokenizer, spec, vocab_size)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges(spec))
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    writer.add_add_bos_token(adds_bos(tokenizer))
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    if chat_template:
        writer.add_chat_template(chat_template)
