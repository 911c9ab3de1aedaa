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


def merge(run: str | Path, out: str | Path | None = None, model: str | None = None) -> Path:
    """Merge ``RUN/adapter`` into the base model (the run's, or ``model``) and save it to ``out``."""
    from superlora.models import load_model
    from superlora.training.adapters import load_adapter

    run = Path(run)
    folder = rundir.open_run(run)
    config, adapter = folder.config, run / "adapter"
    if folder.adapter is None:
        raise SuperloraError(f"{run} has no final adapter (training did not finish); resume it with --resume first")
    out = Path(out) if out is not None else run / "merged"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SuperloraError(f"output {out} already exists; choose another --out or remove it")

    ref = model or config["model"]
    loaded = load_model(ref, trust_remote_code=bool(config.get("trust_remote_code", False)))
    merged = load_adapter(loaded.model, adapter, ref).merge_and_unload()  # checks the base (training.adapters)

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
