"""The ``speed:`` switches: the same LoRA training, faster on a CPU. ``superlora bench`` measures each one.

- ``bf16``: autocast to bf16 (CPUs with AVX512-BF16/AMX multiply bf16 several times faster than fp32), and the
  frozen block weights stored in bf16 once — exactly the values autocast would cast them to on every forward
  pass, so the numbers are those of plain autocast without the per-step cast. LoRA weights, the optimiser and
  the loss stay fp32; the embeddings (tied to the LM head) stay fp32 too.
- ``target_only_logits``: the LM head and the loss only where the shifted label is set. On E2E ~40% of the
  positions are reference tokens (the rest is the prompt and padding), and the head (49k x 576 for SmolLM2)
  plus a 49k-wide log-softmax at every position is a large share of the step. Same loss, label smoothing and
  normaliser as the Trainer's, hence the same gradients.
- ``group_by_length``: the Trainer's LengthGroupedSampler; less padding, the same examples each epoch.
- ``fast_dropout``: LoRA dropout masks from 16 random bits a value instead of 32 (``Dropout16``).
- ``attention``: eager or SDPA; on CPU eager's bf16 backward is several times faster than SDPA's at E2E lengths.
- ``threads``, ``compile``: thread count; regional ``torch.compile`` of each block (off by default: about a
  minute of compiling on a cold cache for ~10% faster steps pays back only on long runs).
- ``bf16``, ``threads`` and ``attention`` may be ``auto``: decided on the machine that runs (``superlora.machine``
  measures; ``speed_setup`` decides and says why).

Always on in superlora's path (not a switch): no KV cache while training (transformers builds one by default,
which copies every key and value and keeps them alive). Autograd already skips the backward below the lowest
block with adapters, since nothing makes the inputs require grad (no gradient checkpointing); see README.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from superlora.data.tokenize import IGNORE_INDEX

if TYPE_CHECKING:
    from superlora.models import LoadedModel
    from superlora.training.config import SpeedConfig


# -----------------------------------------------------------------------------
# Target-only logits


def target_only_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    epsilon: float = 0.0,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The Trainer's causal-LM loss, with the head applied only at positions whose shifted label is set.

    Equals ``LabelSmoother(epsilon)(logits, labels, shift_labels=True, num_items_in_batch)`` (and, for
    epsilon 0, the model's own loss): the sum over target tokens of (1-eps)*NLL + eps*mean(-log p), divided by
    ``num_items_in_batch`` when the Trainer counts tokens across the accumulated batch, else by this batch's.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = project(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, targets[keep], reduction="sum", label_smoothing=epsilon)
    denominator = keep.sum() if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(denominator):
        denominator = denominator.to(loss.device)
    return loss / denominator


class Passthrough(nn.Module):
    """Stands in for the LM head during the forward pass, so the model returns its final hidden states."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def target_only_unsupported(model: nn.Module) -> str | None:
    """Why the head cannot be applied outside the model's forward for ``model``, or None when it can."""
    base = causal_lm(model)
    if base.get_output_embeddings() is None:
        return "the model has no output embeddings"
    config = base.config
    if getattr(config, "final_logit_softcapping", None) is not None:
        return "its forward soft-caps the logits (final_logit_softcapping)"
    for key in ("logit_scale", "logits_scaling"):
        if getattr(config, key, None) not in (None, 1, 1.0):
            return f"its forward rescales the logits ({key})"
    return None


@contextlib.contextmanager
def head_replaced(model: nn.Module, stand_in: nn.Module) -> Iterator[nn.Module]:
    """Swap the output-embedding module for ``stand_in`` for the duration; yields the real head."""
    base = causal_lm(model)
    head = base.get_output_embeddings()
    name = next(n for n, m in base.named_modules() if m is head)
    parent_name, _, attr = name.rpartition(".")
    parent = base.get_submodule(parent_name)
    setattr(parent, attr, stand_in)
    try:
        yield head
    finally:
        setattr(parent, attr, head)


class TargetOnlyLogitsMixin:
    """``Trainer.compute_loss`` with the LM head and loss at target positions only (``target_only_logits``).

    The forward still goes through the wrapped model (DDP, peft, accelerate's autocast); only the head is
    swapped for a passthrough while it runs, then applied to the target positions. The loss is the Trainer's
    (label smoothing, ``num_items_in_batch``), so gradients are the same as with full logits.
    """

    target_only_logits: bool = False
    _passthrough = Passthrough()
    _head_bf16: torch.Tensor | None = None

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if not self.target_only_logits or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        with head_replaced(self.accelerator.unwrap_model(model), self._passthrough) as head:
            outputs = model(**inputs)
        hidden = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        smoother = self.label_smoother
        epsilon = smoother.epsilon if smoother is not None else 0.0
        # the Trainer's normaliser: LabelSmoother always uses num_items_in_batch, the model only if it accepts it
        items = num_items_in_batch if smoother is not None or self.model_accepts_loss_kwargs else None
        loss = target_only_loss(hidden, labels, lambda h: self._project(head, h), epsilon, items)
        counted = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        if self.args.average_tokens_across_devices and counted:  # as Trainer.compute_loss does
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    def _project(self, head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``head(hidden)``, in bf16 when training in bf16 (what autocast would do), fp32 otherwise."""
        if not self.args.bf16:
            return head(hidden)
        if isinstance(head, nn.Linear) and not head.weight.requires_grad:
            if self._head_bf16 is None:  # frozen: cast once, not every step
                self._head_bf16 = head.weight.detach().to(torch.bfloat16)
            bias = None if head.bias is None else head.bias.to(torch.bfloat16)
            return F.linear(hidden.to(torch.bfloat16), self._head_bf16, bias)
        with torch.autocast(hidden.device.type, dtype=torch.bfloat16):
            return head(hidden)


# -----------------------------------------------------------------------------
# Model-side switches


class Dropout16(nn.Module):
    """Inverted dropout whose mask is drawn from 16 random bits per value (``speed.fast_dropout``).

    torch's dropout draws a 32-bit random number per value from one generator thread; on a CPU that is ~6% of a
    LoRA step (60 masks of batch x length x hidden for q/v adapters in 30 blocks). Here one 64-bit draw gives four
    values' masks: a quarter of the random numbers. A value is kept with probability ``keep / 65536`` (``p``
    rounded to a multiple of 1/65536: 0.1 becomes 0.1000061) and scaled by the inverse of exactly that, so the
    expectation is the input, as with ``nn.Dropout``. It draws from torch's default generator, which checkpoints
    save and restore, so resumed runs stay exact.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.keep = round(65536 * (1.0 - p))  # kept values per 65536

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if torch.compiler.is_compiling():  # traced: torch's own dropout, which inductor fuses with its own RNG
            return F.dropout(x, self.p, training=True)
        if self.keep == 0:
            return torch.zeros_like(x)
        return torch.where(keep_mask(x.shape, self.keep, x.device), x, 0.0) * (65536.0 / self.keep)

    def extra_repr(self) -> str:
        return f"p={self.p}, keep={self.keep}/65536"


def keep_mask(shape: torch.Size, keep: int, device: torch.device) -> torch.Tensor:
    """A bool mask of ``shape``, each value True with probability ``keep / 65536``: four per 64-bit draw.

    Eager only: inside a ``torch.compile`` graph (``speed.compile``) ``Dropout16`` uses torch's dropout instead
    (p not rounded). Traced, the int16 view of the draws corrupted the heap, and so did a graph break around it
    under bf16 (torch 2.13); ``test_dropout16_runs_inside_torch_compile`` guards both.
    """
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    bits = draws.view(torch.int16)[:n].view(shape)  # uniform in [-32768, 32767]
    return bits < keep - 32768


def fast_lora_dropout(model: nn.Module) -> int:
    """Replace every LoRA dropout (peft's ``lora_dropout`` nn.Dropout) by ``Dropout16``; returns how many."""
    count = 0
    for name, module in list(model.named_modules()):
        if ".lora_dropout." in f".{name}" and type(module) is nn.Dropout and module.p > 0:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, Dropout16(module.p))
            count += 1
    return count


def frozen_weights_to_bf16(blocks: nn.Module) -> int:
    """Store the frozen Linear/Conv1D weights under ``blocks`` in bf16; returns how many values were cast.

    Under bf16 autocast every matmul casts its fp32 weight to bf16 on each forward pass (0.16 s a step for
    SmolLM2's 106M block weights here); stored in bf16, the cast is a no-op and the memory halves. The values
    are identical to autocast's casts, so the results are too. Adapter weights (trainable) stay fp32.
    """
    count = 0
    for module in blocks.modules():
        frozen = isinstance(module, (nn.Linear, Conv1D)) and not module.weight.requires_grad
        if frozen and module.weight.dtype == torch.float32:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            count += module.weight.numel()
    return count


@dataclass
class SpeedSetup:
    """What ``speed_setup`` did: the switches with every ``auto`` decided, what the Trainer should do, and why.

    ``choices`` is what run.json records: each automatic decision with its reason and measurements.
    """

    speed: SpeedConfig
    threads: int
    target_only: bool
    notes: list[str]
    choices: dict[str, Any]


def resolve_attention(setting: str, bf16: bool, device: str) -> tuple[str, str]:
    """``speed.attention``: (kernel, reason). auto: eager for bf16 on a CPU, whose SDPA bf16 backward is several
    times slower at E2E lengths; SDPA otherwise (fused on GPUs, and no slower in fp32 on CPUs)."""
    if setting != "auto":
        return setting, "set in the recipe"
    if device == "cpu" and bf16:
        return "eager", "auto: bf16 on a CPU"
    return "sdpa", f"auto: {'fp32' if not bf16 else 'bf16'} on {device.upper() if device == 'cuda' else 'a CPU'}"


def speed_setup(
    model: nn.Module, loaded: LoadedModel, speed: SpeedConfig, rows: int = 512, device: str = "cpu"
) -> SpeedSetup:
    """Decide every ``auto`` switch for this machine, then apply the switches that act on the process or the
    model. ``rows`` (tokens per batch) sizes the bf16 probe's matmuls like the training step's.

    The Trainer-side switches are returned (``target_only``) or are TrainingArguments (``speed.bf16``,
    ``group_by_length``): build those from the returned ``speed``, not the recipe's.
    """
    from superlora.machine import choose_bf16, choose_threads, model_shapes

    thread_choice = choose_threads(speed.threads)
    threads = set_threads(thread_choice.threads)
    shapes = model_shapes(loaded.model, loaded.arch.blocks_path, rows)
    bf16 = choose_bf16(speed.bf16, shapes, threads, device)
    attention, attention_why = resolve_attention(speed.attention, bf16.enabled, device)
    resolved = dataclasses.replace(speed, bf16=bf16.enabled, threads=threads, attention=attention)
    notes = [bf16.reason, f"threads {threads} ({thread_choice.reason})", f"attention: {attention} ({attention_why})"]
    notes += apply_speed(model, loaded, resolved)
    target_only = speed.target_only_logits
    if target_only and loaded.head == "classifier":
        notes.append("target-only logits off: a classification head has no token logits")
        target_only = False
    elif target_only and (why := target_only_unsupported(model)):
        notes.append(f"target-only logits off: {why}")
        target_only = False
    elif target_only:
        notes.append("logits and loss at target positions only")
    if speed.group_by_length:
        notes.append("length-grouped batches")
    choices = {
        "device": device,
        "bf16": bf16.to_dict(),
        "threads": {"threads": threads, "reason": thread_choice.reason},
        "attention": {"attention": attention, "reason": attention_why},
    }
    return SpeedSetup(resolved, threads, target_only, notes, choices)


def set_threads(threads: int | None) -> int:
    """Apply a thread count (None: keep torch's default); returns the count in effect."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def apply_speed(model: nn.Module, loaded: LoadedModel, speed: SpeedConfig) -> list[str]:
    """Apply the model-side switches (every ``auto`` already decided) to a peft-wrapped model; returns one line
    per switch that took effect.

    For training only: with ``bf16`` the block weights stay bf16 afterwards (outside autocast they would not
    run); evaluate by loading the saved adapter onto a freshly loaded base model.
    """
    base = causal_lm(model)
    notes = []
    base.config.use_cache = False  # a KV cache is for generation; in training it only copies keys and values
    if speed.attention != "model":
        base.set_attn_implementation(speed.attention)
    blocks = loaded.model.get_submodule(loaded.arch.blocks_path)
    if speed.fast_dropout and (count := fast_lora_dropout(model)):
        notes.append(f"LoRA dropout from 16-bit draws ({count} modules)")
    if speed.bf16 is True:
        cast = frozen_weights_to_bf16(blocks)
        stored = f"; {cast / 1e6:.1f}M frozen block weights stored in bf16" if cast else ""  # none left: QLoRA
        notes.append(f"bf16 autocast{stored}")
    if speed.compile:
        for block in blocks:
            block.compile(dynamic=True)
        notes.append(f"torch.compile: {len(blocks)} blocks")
    return notes
