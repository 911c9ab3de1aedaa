"""Tiny random models and an offline tokenizer for fast tests."""

from __future__ import annotations

import torch

ENCODERS = ("bert", "distilbert", "mpnet")


def tiny_config(family: str):
    """A few-block random config of ``family`` (gpt2, llama, opt, phi, gemma3; encoders: bert, distilbert, mpnet)."""
    from transformers import (
        BertConfig,
        DistilBertConfig,
        Gemma3TextConfig,
        GPT2Config,
        LlamaConfig,
        MPNetConfig,
        OPTConfig,
        PhiConfig,
    )

    common = {"vocab_size": 96}
    if family == "bert":
        return BertConfig(
            num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2, pad_token_id=1, **common
        )
    if family == "distilbert":
        return DistilBertConfig(n_layers=3, dim=32, hidden_dim=64, n_heads=2, pad_token_id=1, **common)
    if family == "mpnet":
        return MPNetConfig(
            num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2, pad_token_id=1, **common
        )
    if family == "gpt2":
        return GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=64, **common)
    if family == "llama":
        return LlamaConfig(
            num_hidden_layers=3,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
            **common,
        )
    if family == "opt":
        return OPTConfig(
            num_hidden_layers=2,
            hidden_size=32,
            ffn_dim=64,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            **common,
        )
    if family == "phi":
        return PhiConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            max_position_embeddings=64,
            **common,
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=64,
            **common,
        )
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0):
    """A random model of ``family``: a causal LM, or a bare encoder (as sentence-embedding checkpoints ship)."""
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    cls = AutoModel if family in ENCODERS else AutoModelForCausalLM
    return cls.from_config(tiny_config(family)).eval()


def tiny_tokenizer():
    """A word-level tokenizer built offline, with the special tokens causal LMs expect."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the a of is and to in capital france paris restaurant pub near food cheap name eatType".split()  # noqa: SIM905
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "<eos>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


CHAT_WORDS = (
    "user",
    "assistant",
    "system",
    "what",
    "is",
    "one",
    "two",
    "three",
    "four",
    "plus",
    "minus",
    "equals",
    "answer",
    "thanks",
    "you",
    "welcome",
    "hi",
    "hello",
    "help",
    "how",
    "can",
    "i",
    "the",
    "sum",
    "of",
    "and",
    "#",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "=",
    "+",
    "-",
    ".",
    ",",
    "?",
    "!",
)


def tiny_chat_tokenizer():
    """A word-level tokenizer with ChatML's special tokens and a ChatML chat template (pad, eos, im_end distinct)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from superlora.data.templates import CHATML

    specials = ["<unk>", "<pad>", "<eos>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate([*specials, *dict.fromkeys(CHAT_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<eos>"],
    )
    fast.chat_template = CHATML
    return fast
