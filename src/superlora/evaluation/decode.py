"""Batched beam-search decoding of E2E MRs with a causal LM (optionally with a LoRA adapter).

Defaults follow the LoRA paper's E2E protocol: beam 10, length penalty 0.9, no repeated 4-grams.
Decoding runs in float32 on every machine, whatever the training's ``bf16`` choice: bfloat16 (autocast or cast
weights) changed 19-24% of the outputs of smollm2-135m on 48-100 test MRs, so scores would depend on the CPU.
Threads are chosen like training's (``speed.threads: auto``): the cores no other job keeps busy.
Prompts are exactly the training prompts (``build_prompt`` through ``tokenize_prompt``), left-padded
so every sequence in a batch continues from its last prompt token. Decoding stops at eos or at the
end of the line: a description is one line, and a base model that never learned to emit eos would
otherwise ramble for ``max_new_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from superlora.data.e2e import tokenize_prompt
from superlora.errors import SuperloraError


@dataclass
class DecodeConfig:
    """Generation settings (the LoRA paper's E2E protocol by default)."""

    num_beams: int = 10
    length_penalty: float = 0.9
    no_repeat_ngram_size: int = 4
    max_new_tokens: int = 64
    batch_size: int = 8

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


def attach_adapter(model, adapter: str | Path):
    """Wrap ``model`` with the LoRA adapter saved by peft ``save_pretrained``, in eval mode."""
    from peft import PeftModel

    folder = resolve_adapter(adapter)
    try:
        wrapped = PeftModel.from_pretrained(model, str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SuperloraError(f"cannot load adapter {folder}: {first}") from None
    return wrapped.eval()


def line_end_ids(tokenizer) -> list[int]:
    """Token ids whose text contains a line break; they end a description like eos does.

    Passing them as extra eos ids is far cheaper than ``stop_strings``, which re-scans the whole
    vocabulary on every ``generate`` call.
    """
    cached = getattr(tokenizer, "_superlora_line_end_ids", None)
    if cached is None:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cached = [i for i, text in enumerate(texts) if "\n" in text]
        tokenizer._superlora_line_end_ids = cached
    return cached


def _clean(text: str) -> str:
    """First line of the continuation, stripped: one description per MR."""
    return text.split("\n", 1)[0].strip()


def generate(
    model,
    tokenizer,
    mrs: Sequence[str],
    config: DecodeConfig,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Beam-search one output per MR, in the order of ``mrs``.

    Batches group prompts of similar length (less padding); ``progress`` gets the number of MRs
    finished after each batch.
    """
    import torch

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = [tokenize_prompt(tokenizer, mr) for mr in mrs]
    order = sorted(range(len(mrs)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(mrs)
    eos = [tokenizer.eos_token_id, *line_end_ids(tokenizer)]
    pad = tokenizer.pad_token_id
    kwargs = {
        "num_beams": config.num_beams,
        "length_penalty": config.length_penalty,
        "no_repeat_ngram_size": config.no_repeat_ngram_size,
        "max_new_tokens": config.max_new_tokens,
        "do_sample": False,
        "early_stopping": True,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch], device=device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch], device=device)
            generated = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = _clean(text)
            if progress is not None:
                progress(len(batch))
    return outputs


def timed_generate(model, tokenizer, mrs: Sequence[str], config: DecodeConfig, show_progress: bool = True):
    """``generate`` with a tqdm bar (ETA included); returns (outputs, seconds)."""
    from tqdm import tqdm

    started = time.perf_counter()
    with tqdm(total=len(mrs), desc="decoding", unit="MR", disable=not show_progress) as bar:
        outputs = generate(model, tokenizer, mrs, config, progress=bar.update)
    return outputs, time.perf_counter() - started
