"""A frozen base in 4 or 8 bits for QLoRA: the blocks' linear layers become bitsandbytes layers, in place.

Quantising an already loaded model (rather than ``from_pretrained(quantization_config=...)``) works for every
source superlora loads — Hub folders, the built-in aliases, GGUF files — and lets the caller choose exactly
which layers stay in full precision. Only the transformer blocks are quantised; embeddings, the final norm and
the LM head stay as they are, as in QLoRA. NF4 and FP4 quantise deterministically, so a resumed run rebuilds
the very base it trained on.

``protect`` holds chosen weights (the super weights, ``keep_superweights: true``) out of quantisation, as the
super-weight paper does for round-to-nearest: each is zeroed before its layer is quantised, so it no longer sets
its block's scale, and a forward hook adds back its exact difference from the quantised value
(``out[..., row] += x[..., col] * delta``). Dequantising folds the same difference into the weight, so a merge
or an export holds the original super weight.

Two CPU pitfalls of bitsandbytes 0.50 are handled here (``../shared/PLATFORM-NOTES.md``):
- On AVX512-BF16 CPUs the first no-grad forward repacks each ``Linear4bit`` into an inference-only layout,
  after which LoRA gradients silently stop (only a warning). ``support_avx512bf16_for_cpu`` is switched off
  on every layer; ``test_qlora`` checks gradients after an eval pass.
- ``peft.prepare_model_for_kbit_training`` turns gradient checkpointing on unless told not to (slower here).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from superlora.errors import SuperloraError

Method = Literal["nf4", "fp4", "int8"]
METHODS: tuple[str, ...] = ("nf4", "fp4", "int8")
BITS = {"nf4": 4, "fp4": 4, "int8": 8}


@dataclass(frozen=True)
class Quantized:
    """What ``quantize_blocks`` did: for the log line and run.json."""

    method: str
    layers: int  # linear layers replaced
    kept: tuple[str, ...]  # linear layers left in full precision on request
    values: int  # weights now stored in ``BITS[method]`` bits
    superweights: tuple[str, ...] = ()  # "block:out:in" of the weights held in full precision (protect)

    def describe(self) -> str:
        kept = f", {len(self.kept)} kept in full precision" if self.kept else ""
        held = f", super weights {' '.join(self.superweights)} held in full precision" if self.superweights else ""
        return f"{self.method} base: {self.layers} block linear layers ({self.values / 1e6:.1f}M weights){kept}{held}"

    def to_dict(self) -> dict:
        record = {"method": self.method, "layers": self.layers, "kept": list(self.kept), "values": self.values}
        return record | ({"superweights": list(self.superweights)} if self.superweights else {})


def check_method(method: str | None) -> None:
    """One line for a method bitsandbytes does not offer here, before any model loads."""
    if method is not None and method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SuperloraError(f"unknown quantize method {method!r}{hint}; choose {', '.join(METHODS)}")


def _bnb():
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - a dependency; the message is for a broken environment
        raise SuperloraError("quantize needs bitsandbytes: pip install 'bitsandbytes>=0.50'") from None
    return bnb


def _as_linear(module: nn.Module) -> nn.Linear:
    """GPT-2's Conv1D stores W as [in, out]; bitsandbytes wants nn.Linear's [out, in]."""
    if isinstance(module, Conv1D):
        linear = nn.Linear(module.weight.shape[0], module.weight.shape[1], bias=module.bias is not None)
        linear.weight.data = module.weight.data.t().contiguous()
        if module.bias is not None:
            linear.bias.data = module.bias.data
        return linear
    return module


def quantized_layer(
    module: nn.Module, method: str, compute_dtype: torch.dtype, protect: tuple[tuple[int, int], ...] = ()
) -> nn.Module:
    """A bitsandbytes copy of one linear layer, quantised on the layer's device; ``protect``: (row, col) of
    ``nn.Linear``'s [out, in] weight to hold in full precision (see the module docstring)."""
    bnb = _bnb()
    linear = _as_linear(module)
    weight = linear.weight.data.float()
    if protect:
        rows = torch.tensor([r for r, _ in protect], dtype=torch.long, device=weight.device)
        cols = torch.tensor([c for _, c in protect], dtype=torch.long, device=weight.device)
        originals = weight[rows, cols].clone()
        weight = weight.clone()
        weight[rows, cols] = 0.0  # out of its block's scale
    has_bias = linear.bias is not None
    if method == "int8":
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False, device="meta"
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            compute_dtype=compute_dtype,
            quant_type=method,
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=method)
        layer.support_avx512bf16_for_cpu = False  # the repacking bug: see the module docstring
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.data.float(), requires_grad=False)
    layer = layer.to(weight.device)  # bitsandbytes quantises on this move
    if protect:
        delta = originals - dequantized_weight(layer)[rows, cols]
        layer.register_buffer("superlora_rows", rows, persistent=False)
        layer.register_buffer("superlora_cols", cols, persistent=False)
        layer.register_buffer("superlora_delta", delta, persistent=False)
        layer.register_forward_hook(_add_protected)
    return layer


def _add_protected(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """The protected weights' exact contribution on top of the quantised product."""
    x = inputs[0]
    source = x[..., layer.superlora_cols] * layer.superlora_delta.to(x.dtype)
    return output.index_add(-1, layer.superlora_rows, source.to(output.dtype))


def protected_delta(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(rows, cols, delta) of a layer ``quantized_layer`` built with ``protect``, else None."""
    if not hasattr(layer, "superlora_delta"):
        return None
    return layer.superlora_rows, layer.superlora_cols, layer.superlora_delta


def block_linears(model: nn.Module, blocks_path: str) -> dict[str, nn.Module]:
    """Every linear layer inside the transformer blocks, by full name: what 4-bit schemes quantise."""
    blocks = model.get_submodule(blocks_path)
    return {
        f"{blocks_path}.{name}": module
        for name, module in blocks.named_modules()
        if isinstance(module, (nn.Linear, Conv1D))
    }


def quantize_blocks(
    model: nn.Module,
    blocks_path: str,
    method: str,
    compute_dtype: torch.dtype = torch.float32,
    keep: frozenset[str] = frozenset(),
    superweights: tuple[str, ...] = (),
) -> Quantized:
    """Replace every linear layer under ``blocks_path`` with its ``method`` version; ``keep`` names stay as is;
    ``superweights`` ("block:out:in" coordinates, identify's notation) are held in full precision."""
    check_method(method)
    protect = _protected_by_layer(model, superweights)
    kept, layers, values = [], 0, 0
    for name, module in block_linears(model, blocks_path).items():
        if is_quantized(module):
            continue
        if name in keep:
            kept.append(name)
            continue
        parent, _, child = name.rpartition(".")
        layer = quantized_layer(module, method, compute_dtype, tuple(protect.get(name, ())))
        setattr(model.get_submodule(parent), child, layer)
        layers += 1
        values += module.weight.numel()
    model._superlora_quantized = method
    return Quantized(method, layers, tuple(kept), values, tuple(superweights))


def _protected_by_layer(model: nn.Module, superweights: tuple[str, ...]) -> dict[str, list[tuple[int, int]]]:
    """Super-weight coordinates as (row, col) of ``nn.Linear`` weights, by layer name (checked for range)."""
    if not superweights:
        return {}
    from superlora.identify.ablation import parse_coord
    from superlora.models.arch import describe_architecture

    arch = describe_architecture(model)
    by_layer: dict[str, list[tuple[int, int]]] = {}
    for text in superweights:
        coord = parse_coord(text, arch)
        by_layer.setdefault(arch.mlp_out_module_name(coord.block), []).append((coord.out_channel, coord.in_channel))
    return by_layer


def is_quantized(module: nn.Module) -> bool:
    bnb = _bnb()
    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def set_compute_dtype(model: nn.Module, dtype: torch.dtype) -> int:
    """The dtype 4-bit layers dequantise to for their matmul: bf16 where the machine multiplies it fast."""
    bnb = _bnb()
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.compute_dtype = dtype
            count += 1
    return count


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The full-precision values a quantised layer multiplies by (what a merge must add the adapter to)."""
    bnb = _bnb()
    weight = module.weight
    if isinstance(module, bnb.nn.Linear4bit):
        values = bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    else:
        scale = getattr(weight, "SCB", None)
        if scale is None:
            scale = getattr(module.state, "SCB", None)
        values = weight.data.float() * scale.float().unsqueeze(1) / 127.0
    if (held := protected_delta(module)) is not None:  # the protected weights, exactly
        rows, cols, delta = held
        values[rows, cols] += delta
    return values


def dequantize(model: nn.Module) -> int:
    """Replace every bitsandbytes layer with an fp32 ``nn.Linear`` holding its dequantised weight.

    Merging LoRA into a 4-bit layer re-quantises the sum and loses most of the adapter; merging into the
    dequantised base keeps exactly what the adapter was trained against. The model keeps its
    ``_superlora_quantized`` mark: its values are still that method's rounding (``quantize_like`` skips it).
    """
    count = 0
    for name, module in list(model.named_modules()):
        if not is_quantized(module):
            continue
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        linear.weight.data = dequantized_weight(module)
        if module.bias is not None:
            linear.bias.data = module.bias.data.float()
        linear.weight.requires_grad_(False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, linear)
        count += 1
    return count


def quantize_like(
    model: nn.Module, record: dict | None, compute_dtype: torch.dtype = torch.float32
) -> Quantized | None:
    """Quantise a bare base the way a QLoRA run's record says (``{"method": ..., "kept": [...],
    "superweights": [...]}``), if it does."""
    if not record or getattr(model, "_superlora_quantized", None) == record.get("method"):
        return None
    from superlora.models.arch import describe_architecture

    arch = describe_architecture(model)
    kept = frozenset(record.get("kept", ()))
    held = tuple(record.get("superweights", ()))
    return quantize_blocks(model, arch.blocks_path, record["method"], compute_dtype, kept, held)
