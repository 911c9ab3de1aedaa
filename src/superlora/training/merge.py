"""``superlora merge``: fold a run's adapter into its base model, for tools that know no peft.

W' = W + (alpha/r)·B·A in every adapted layer; the result is a plain Hugging Face folder
(safetensors + tokenizer) whose logits equal the adapter model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from superlora.errors import SuperloraError
from superlora.training import rundir
from superlora.verb import add_verb


def base_model_ref(config: dict) -> str:
    """The base model a run's config names."""
    return str(config["model"])


def check_mergeable(run: Path) -> rundir.RunFolder:
    """The run folder, or a one-line error when it has no final adapter to merge."""
    folder = rundir.open_run(run)
    if folder.adapter is None:
        raise SuperloraError(f"{run} has no final adapter (training did not finish); resume it with --resume first")
    return folder


def check_new_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SuperloraError(f"output {out} already exists; choose another --out or remove it")


def merged_model(run: str | Path, model: str | None = None):
    """(merged model, the loaded base, the base's stored dtype): ``RUN/adapter`` folded into the base, in memory.

    The merge is computed in fp32 (a base stored in 16 bits is upcast first: exact, and the fingerprint check
    reads the same values). A QLoRA run's adapter learnt to correct the *quantised* base, so it is folded into
    that base dequantised (``models.quantize.dequantize``): the merged model computes what the QLoRA model did.
    Merging into the 4-bit layers themselves would re-quantise the sum and lose most of the adapter.
    """
    import torch

    from superlora.models import load_model
    from superlora.models.quantize import dequantize, quantize_like
    from superlora.training.adapters import base_record, load_adapter

    run = Path(run)
    folder = check_mergeable(run)
    config = folder.config
    ref = model or base_model_ref(config)
    head = folder.task().model_kwargs()  # a classifier run's base gets its head back (the adapter's copy)
    loaded = load_model(ref, trust_remote_code=bool(config.get("trust_remote_code", False)), **head)
    base_dtype = next(loaded.model.parameters()).dtype
    loaded.model.to(torch.float32)
    fingerprint = rundir.base_fingerprint(loaded.model)  # of the bare base, before any quantising
    quantized = (base_record(run / "adapter")[0] or {}).get("quantized")
    if quantized:
        quantize_like(loaded.model, quantized)
        dequantize(loaded.model)  # fp32 layers holding exactly the values the adapter trained against
    merged = load_adapter(loaded.model, run / "adapter", ref, fingerprint).merge_and_unload()  # checks the base
    return merged, loaded, base_dtype


def merge(run: str | Path, out: str | Path | None = None, model: str | None = None) -> Path:
    """Merge ``RUN/adapter`` into the base model (the run's, or ``model``) and save it to ``out``."""
    run = Path(run)
    check_mergeable(run)
    out = Path(out) if out is not None else run / "merged"
    check_new_out(out)
    merged, loaded, base_dtype = merged_model(run, model)
    merged.to(base_dtype)  # the base's own dtype, as before: fp32 for every built-in model

    def save(tmp: Path) -> None:
        merged.save_pretrained(tmp)  # safetensors by default
        loaded.tokenizer.save_pretrained(tmp)

    rundir.write_atomic(out, save)
    return out


def run(args: argparse.Namespace) -> int:
    out = merge(args.run, args.out, args.model)
    print(f"merged model: {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "merge",
        help="merge a run's LoRA adapter into its base model (a plain Hugging Face folder)",
        description="Fold RUN/adapter into the base model the run was trained on and save safetensors plus "
        "tokenizer; the result loads with transformers alone. A base model other than the run's is refused.",
        epilog="examples:\n  superlora merge runs/e2e-lora                  # -> runs/e2e-lora/merged\n"
        "  superlora merge runs/e2e-lora --out models/e2e-smollm2\n"
        "  superlora merge runs/e2e-lora --model ./my-copy-of-the-base",
    )
    parser.add_argument("run", help="a run directory written by `superlora train`")
    parser.add_argument("--out", help="output folder (default: RUN/merged); must not exist yet")
    parser.add_argument("--model", help="base model to merge into (default: the run's model); must be the same")
    parser.set_defaults(func=run)
