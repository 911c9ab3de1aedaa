"""Batched decoding with a causal LM (optionally with a LoRA adapter), prompted the way its task trained it.

Defaults come from the task (E2E: the LoRA paper's beam 10, length penalty 0.9, no repeated 4-grams;
chat: greedy).
Decoding runs in float32 on every machine, whatever the training's ``bf16`` choice: bfloat16 (autocast or cast
weights) changed 19-24% of the outputs of smollm2-135m on 48-100 test MRs, so scores would depend on the CPU.
Threads are chosen like training's (``speed.threads: auto``): the cores no other job keeps busy.
Prompts are exactly the training prompts (the template's ``prompt_ids``), and decoding stops at the
template's stop ids (E2E: eos or a line break; chat: the end-of-turn token).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from superlora.data.templates import Template, line_end_ids  # noqa: F401 (line_end_ids: the app warms it)
from superlora.errors import SuperloraError


@dataclass
class DecodeConfig:
    """Generation settings; a field left ``None`` takes the task's default (``Task.decode_defaults``)."""

    num_beams: int | None = None
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_beams", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"decode.{name} must be >= 1, got {value}")
        if self.no_repeat_ngram_size is not None and self.no_repeat_ngram_size < 0:
            raise ValueError(f"decode.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if self.length_penalty is not None and not math.isfinite(self.length_penalty):
            raise ValueError(f"decode.length_penalty must be finite, got {self.length_penalty}")

    def resolved(self, defaults: DecodeConfig) -> DecodeConfig:
        """These settings, with the task's defaults where none is given."""
        return DecodeConfig(**{k: v if v is not None else getattr(defaults, k) for k, v in asdict(self).items()})

    def to_dict(self) -> dict:
        return asdict(self)


def set_decode_threads(setting: int | str | None = "auto") -> str:
    """Set torch's threads for decoding (``auto``: ``superlora.machine.choose_threads``); returns a log phrase."""
    import torch

    from superlora.machine import choose_threads

    choice = choose_threads(setting)
    torch.set_num_threads(choice.threads)
    return f"threads {choice.threads} ({choice.reason})"


def resolve_adapter(path: str | Path) -> Path:
    """The peft adapter folder: ``path`` itself, or its ``adapter/`` subfolder (a training run dir)."""
    path = Path(path).expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    if not path.exists():
        raise SuperloraError(f"adapter not found: {path}")
    raise SuperloraError(
        f"no adapter_config.json in {path} or {path / 'adapter'}; give a training run or adapter folder"
    )


def attach_adapter(model, adapter: str | Path, model_ref: str = "the model", fingerprint: str | None = None):
    """Wrap ``model`` with the LoRA adapter saved by peft ``save_pretrained``, in eval mode, after checking that
    it was trained on this base (``training.adapters``)."""
    from superlora.training.adapters import load_adapter

    return load_adapter(model, resolve_adapter(adapter), model_ref, fingerprint).eval()


def generate(
    model,
    tokenizer,
    prompts: Sequence,
    config: DecodeConfig,
    template: Template,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """One output per prompt, in the order of ``prompts`` (what ``template`` renders: an MR, a conversation).

    Batches group prompts of similar length (less padding), left-padded so every sequence continues from
    its last prompt token; generation stops at the template's stop ids. ``progress`` gets the number of
    prompts finished after each batch.
    """
    import torch

    ids_list = [template.prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(ids_list[i]))
    outputs: list[str] = [""] * len(prompts)
    pad = template.pad_id(tokenizer)
    kwargs = {
        "num_beams": config.num_beams,
        "length_penalty": config.length_penalty,
        "no_repeat_ngram_size": config.no_repeat_ngram_size,
        "max_new_tokens": config.max_new_tokens,
        "do_sample": False,
        "early_stopping": True,
        "eos_token_id": template.stop_ids(tokenizer),
        "pad_token_id": pad,
    }
    if config.num_beams == 1:  # greedy: beam-only settings would only warn
        for key in ("length_penalty", "early_stopping"):
            kwargs.pop(key)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            width = max(len(ids_list[i]) for i in batch)
            ids = torch.tensor([[pad] * (width - len(ids_list[i])) + ids_list[i] for i in batch], device=device)
            mask = torch.tensor(
                [[0] * (width - len(ids_list[i])) + [1] * len(ids_list[i]) for i in batch], device=device
            )
            generated = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = template.clean(text)
            if progress is not None:
                progress(len(batch))
    return outputs


def timed_generate(model, tokenizer, prompts: Sequence, config: DecodeConfig, template: Template, show_progress=True):
    """``generate`` with a tqdm bar (ETA included); returns (outputs, seconds)."""
    from tqdm import tqdm

    started = time.perf_counter()
    with tqdm(total=len(prompts), desc="decoding", unit="prompt", disable=not show_progress) as bar:
        outputs = generate(model, tokenizer, prompts, config, template, progress=bar.update)
    return outputs, time.perf_counter() - started
