"""A merged model as one GGUF file (llama.cpp, Ollama, LM Studio), written with the ``gguf`` package alone.

No llama.cpp build and no convert script: the tensor names come from ``gguf``'s own name map (the one
transformers' GGUF loader reads back with), the model metadata is the handful of keys llama.cpp and
transformers read for a Llama or Qwen2 block stack, and the tokenizer is ``gguf_vocab``'s.

Two layout conventions differ from Hugging Face's and are applied here:

- llama.cpp rotates *adjacent* pairs of a Llama head's query/key dimensions, Hugging Face the two *halves*
  of the head, so the rows of ``q_proj``/``k_proj`` are interleaved per head (transformers undoes exactly this
  on load; Qwen2 files keep Hugging Face's order: llama.cpp's Qwen2 graph rotates halves).
- ggml lists a tensor's dimensions fastest first; ``GGUFWriter`` reverses numpy's order itself.

One-dimensional tensors (norms, biases) stay f32 whatever ``dtype`` says, as llama.cpp keeps them, and a
q8_0 tensor whose rows are not a whole number of 32-value blocks falls back to f16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from superlora.errors import SuperloraError

# model_type -> the architecture name llama.cpp and transformers use in the file (the key prefix as well)
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2"}
DTYPES = ("f32", "f16", "bf16", "q8_0")
Q8_BLOCK = 32  # values per q8_0 block: a row must be a whole number of them
INSTEAD = "export --format safetensors"


def unsupported_reason(config: Any) -> str | None:
    """Why this model cannot be written as a GGUF file that reads back the same, or None when it can.

    Checked on the config alone (no weights), so the verb refuses before any work. Besides the
    architecture, a few settings the file format has no key for (transformers would read the file back as
    a different model) are refused rather than silently dropped.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        return f"GGUF export supports {', '.join(ARCHITECTURES)}; this run's model is {model_type} ({INSTEAD} instead)"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in (None, "default"):
        return f"GGUF export writes plain RoPE; this model uses {rope_type!r} rope scaling ({INSTEAD})"
    if model_type == "llama" and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        return f"GGUF export of Llama models with attention or MLP biases is not supported ({INSTEAD})"
    if model_type == "qwen2" and getattr(config, "use_sliding_window", False):
        return f"GGUF export of Qwen2 models with sliding-window attention is not supported ({INSTEAD})"
    return None


def check_supported(config: Any) -> None:
    reason = unsupported_reason(config)
    if reason:
        raise SuperloraError(reason)


def rope_theta(config: Any) -> float:
    """RoPE's base frequency: ``rope_parameters`` in transformers 5, ``rope_theta`` before."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def interleave_rope_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder a Llama q/k projection's rows from Hugging Face's half-split rotary layout to llama.cpp's pairs.

    Per head, HF keeps the rotated dimension pairs as (i, i + d/2); llama.cpp as (2i, 2i + 1). Row r of the
    second half of a head moves next to row r of the first half.
    """
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def file_type(dtype: str) -> int:
    """``general.file_type``: what most of the file's tensors are (llama.cpp's ``LlamaFileType``)."""
    from gguf import LlamaFileType

    return {
        "f32": LlamaFileType.ALL_F32,
        "f16": LlamaFileType.MOSTLY_F16,
        "bf16": LlamaFileType.MOSTLY_BF16,
        "q8_0": LlamaFileType.MOSTLY_Q8_0,
    }[dtype]


def encode_tensor(tensor: torch.Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """``tensor`` as the bytes of the file's type: (array, raw ggml type or None when numpy's dtype says it)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    data = tensor.detach().to(torch.float32).contiguous().numpy()
    if data.ndim < 2 or dtype == "f32":
        return data, None
    if dtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        return quantize(data, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    if dtype == "bf16":
        return quantize(data, GGMLQuantizationType.BF16), GGMLQuantizationType.BF16
    return data.astype(np.float16), None  # f16, and q8_0's fallback


def gguf_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(GGUF name, tensor in the file's layout) for every weight of the model, in state-dict order.

    A weight the name map does not know is an error, never skipped: a file missing a tensor would load
    with that weight left random.
    """
    import gguf

    config = model.config
    arch_name = ARCHITECTURES[config.model_type]
    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch_name)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # the file says "tied" by having no output.weight
        base, _, suffix = hf_name.rpartition(".")
        name = names.get_name(base)
        if name is None or suffix not in ("weight", "bias"):
            raise SuperloraError(f"GGUF export: no GGUF name for the model's tensor {hf_name}")
        if arch_name == "llama" and name.endswith((".attn_q", ".attn_k")):
            heads = config.num_attention_heads if name.endswith(".attn_q") else config.num_key_value_heads
            tensor = interleave_rope_rows(tensor, heads)
        out.append((f"{name}.{suffix}", tensor))
    return out


def add_model_metadata(writer: Any, config: Any, dtype: str, name: str, description: str) -> None:
    """The keys llama.cpp and transformers read to rebuild the block stack (``ARCH.<key>``)."""
    from gguf import GGML_QUANT_VERSION

    writer.add_type("model")
    writer.add_name(name)
    writer.add_description(description)
    writer.add_file_type(file_type(dtype))
    if dtype == "q8_0":
        writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    dim = head_dim(config)
    writer.add_rope_dimension_count(dim)
    if dim * config.num_attention_heads != config.hidden_size:  # llama.cpp assumes hidden/heads otherwise
        writer.add_key_length(dim)
        writer.add_value_length(dim)
    writer.add_vocab_size(int(config.vocab_size))


def write_gguf(
    model: torch.nn.Module,
    tokenizer: Any,
    path: Path,
    dtype: str,
    name: str,
    description: str,
    chat_template: str | None,
) -> int:
    """Write ``model`` (merged, full precision) and its tokenizer to ``path``; return the file's size in bytes.

    The caller writes into a temporary folder and renames it into place, so a failure here leaves nothing.
    """
    from gguf import GGUFWriter

    from superlora.export.gguf_vocab import add_tokenizer_metadata

    if dtype not in DTYPES:
        raise SuperloraError(f"GGUF export writes {', '.join(DTYPES)}, not {dtype!r}")
    config = model.config
    check_supported(config)
    writer = GGUFWriter(None, ARCHITECTURES[config.model_type])
    add_model_metadata(writer, config, dtype, name, description)
    add_tokenizer_metadata(writer, tokenizer, int(config.vocab_size), chat_template)
    with torch.no_grad():
        for tensor_name, tensor in gguf_tensors(model):
            data, raw = encode_tensor(tensor, dtype)
            writer.add_tensor(tensor_name, data, raw_dtype=raw)
    try:
        writer.write_header_to_file(Path(path))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return Path(path).stat().st_size
