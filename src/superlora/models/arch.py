"""Where the parts of a decoder-only transformer live, whatever its family.

Later stages (super-weight detection, layer-selective LoRA) need the same few facts about
any causal LM: the list of blocks, each block's attention and MLP, and the MLP output
projection with its weight layout. They are discovered from the module tree by name, so a
new Llama-like family works without a table entry; an unknown layout fails with a message
that says what was looked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from superlora.errors import SuperloraError

# Paths to the output projection of the MLP, relative to one block, in the order tried.
MLP_OUT_CANDIDATES = (
    "mlp.down_proj",  # Llama, Mistral, Qwen, Gemma, SmolLM
    "mlp.c_proj",  # GPT-2 (Conv1D, weight stored [in, out])
    "mlp.fc2",  # Phi
    "fc2",  # OPT (no mlp submodule)
    "mlp.dense_4h_to_h",  # GPT-NeoX, Falcon
    "feed_forward.w2",  # InternLM-style
    "output.dense",  # BERT, RoBERTa, MPNet (intermediate.dense -> output.dense; not attention.output.dense)
    "ffn.lin2",  # DistilBERT
)
# BERT keeps query/key/value one level down (attention.self), MPNet too (attention.attn)
ATTENTION_CANDIDATES = ("self_attn", "attn", "attention.self", "attention.attn", "attention", "self_attention")
# LoRA's classic targets (query and value), by family; fused projections are taken whole.
QUERY_VALUE_CANDIDATES = (
    ("q_proj", "v_proj"),
    ("c_attn",),
    ("query_key_value",),
    ("qkv_proj",),
    ("Wqkv",),
    ("query", "value"),  # BERT, RoBERTa
    ("q_lin", "v_lin"),  # DistilBERT
    ("q", "v"),  # MPNet
)

Layout = Literal["out_in", "in_out"]


@dataclass(frozen=True)
class ArchFacts:
    """Names and shapes of one causal LM's transformer stack.

    ``mlp_out_layout`` is how the projection's weight is stored: ``"out_in"`` for
    ``nn.Linear`` (``W[out, in]``, the paper's convention) and ``"in_out"`` for GPT-2's
    ``Conv1D`` (``W[in, out]``). ``stored_index`` converts between the two.
    """

    model_type: str
    num_blocks: int
    blocks_path: str  # e.g. "model.layers" or "transformer.h"
    attention_name: str  # relative to a block, e.g. "self_attn"
    mlp_names: tuple[str, ...]  # relative to a block: ("mlp",) or OPT's ("fc1", "fc2")
    mlp_out_name: str  # relative to a block, e.g. "mlp.down_proj"
    mlp_out_layout: Layout
    mlp_in_features: int  # width of the projection's input (the MLP's hidden size)
    mlp_out_features: int  # width of its output (the residual stream)
    attention_projections: tuple[str, ...]  # linear layers inside the attention module
    query_value: tuple[str, ...]  # default LoRA targets, relative to the attention module

    def block_name(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    def mlp_out_module_name(self, index: int) -> str:
        return f"{self.block_name(index)}.{self.mlp_out_name}"

    def mlp_out_param_name(self, index: int) -> str:
        return f"{self.mlp_out_module_name(index)}.weight"

    def block(self, model: nn.Module, index: int) -> nn.Module:
        return model.get_submodule(self.block_name(index))

    def mlp_out(self, model: nn.Module, index: int) -> nn.Module:
        return model.get_submodule(self.mlp_out_module_name(index))

    def stored_index(self, out_channel: int, in_channel: int) -> tuple[int, int]:
        """Index into the stored weight tensor of the Llama-layout coordinate W[out, in]."""
        return (out_channel, in_channel) if self.mlp_out_layout == "out_in" else (in_channel, out_channel)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _find_blocks(model: nn.Module, num_layers: int | None) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the longest one (matching the config if it says)."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if num_layers:
        lists = [(n, m) for n, m in lists if len(m) == num_layers] or lists
    if not lists:
        raise SuperloraError(f"unrecognised architecture {type(model).__name__}: found no list of transformer blocks")
    return max(lists, key=lambda item: (len(item[1]), -item[0].count(".")))


def _has(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _linear_children(module: nn.Module) -> tuple[str, ...]:
    return tuple(n for n, m in module.named_children() if isinstance(m, (nn.Linear, Conv1D)))


def describe_architecture(model: nn.Module) -> ArchFacts:
    """Discover :class:`ArchFacts` for a causal LM, or raise a one-line SuperloraError."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config  # multimodal wrappers
    model_type = str(getattr(config, "model_type", type(model).__name__))
    num_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    blocks_path, blocks = _find_blocks(model, num_layers)
    first = blocks[0]

    mlp_out_name = next((c for c in MLP_OUT_CANDIDATES if _has(first, c)), None)
    if mlp_out_name is None:
        raise SuperloraError(
            f"unrecognised architecture '{model_type}': no MLP output projection in {blocks_path}.0 "
            f"(looked for {', '.join(MLP_OUT_CANDIDATES)})"
        )
    proj = first.get_submodule(mlp_out_name)
    if isinstance(proj, Conv1D):
        layout: Layout = "in_out"
        in_features, out_features = proj.weight.shape
    elif isinstance(proj, nn.Linear):
        layout = "out_in"
        out_features, in_features = proj.weight.shape
    else:
        raise SuperloraError(
            f"unrecognised architecture '{model_type}': {blocks_path}.0.{mlp_out_name} is a "
            f"{type(proj).__name__}, expected nn.Linear or Conv1D"
        )

    attention_name = next((c for c in ATTENTION_CANDIDATES if _has(first, c)), None)
    if attention_name is None:
        raise SuperloraError(
            f"unrecognised architecture '{model_type}': no attention module in {blocks_path}.0 "
            f"(looked for {', '.join(ATTENTION_CANDIDATES)})"
        )
    attention_projections = _linear_children(first.get_submodule(attention_name))
    query_value = next((qv for qv in QUERY_VALUE_CANDIDATES if set(qv) <= set(attention_projections)), ())

    mlp_parent = mlp_out_name.rpartition(".")[0]
    if mlp_out_name == "output.dense":  # BERT-like: the MLP is intermediate (in) + output (out)
        mlp_names: tuple[str, ...] = ("intermediate", "output")
    elif mlp_parent:
        mlp_names = (mlp_parent,)
    else:  # OPT keeps fc1/fc2 directly in the block
        mlp_names = tuple(n for n in _linear_children(first) if n.startswith("fc"))

    return ArchFacts(
        model_type=model_type,
        num_blocks=len(blocks),
        blocks_path=blocks_path,
        attention_name=attention_name,
        mlp_names=mlp_names,
        mlp_out_name=mlp_out_name,
        mlp_out_layout=layout,
        mlp_in_features=int(in_features),
        mlp_out_features=int(out_features),
        attention_projections=attention_projections,
        query_value=query_value,
    )


def mlp_out_weight_llama_layout(facts: ArchFacts, model: nn.Module, index: int) -> torch.Tensor:
    """The projection weight of block ``index`` viewed as W[out, in] (a view, not a copy)."""
    weight = facts.mlp_out(model, index).weight
    return weight if facts.mlp_out_layout == "out_in" else weight.t()


def encode(tokenizer, model: nn.Module, text: str) -> torch.Tensor:
    """Token ids [1, T] of ``text``, cut to the model's context length (GPT-2 has learned positions)."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    ids = tokenizer(text, return_tensors="pt").input_ids
    return ids[:, :limit] if limit else ids
