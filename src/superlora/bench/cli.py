"""``superlora bench``: the verb's arguments and output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from superlora.bench.measure import RSS_METHODS, quiet
from superlora.bench.report import format_table
from superlora.bench.runner import bench
from superlora.errors import SuperloraError
from superlora.verb import add_recipe_argument, add_verb

if TYPE_CHECKING:
    pass


EPILOG = """examples:
  superlora bench configs/e2e-lora.yaml task.source=E2E_DIR                    # all arms, 3 repeats
  superlora bench configs/e2e-lora.yaml --steps 6 --repeats 3 --out results/bench/smollm2-135m-CPU.json
  superlora bench configs/e2e-lora.yaml --arms recipe,bf16 --steps 5 --repeats 1  # the reference always runs
  superlora bench configs/e2e-lora.yaml --arms recipe,nf4,int8 --out results/bench/qlora-smollm2-135m.json
  superlora bench configs/e2e-lora.yaml model=qwen2.5-1.5b --arms recipe,nf4 --steps 3 --repeats 2

Arms: ref (plain transformers Trainer + peft, fp32, dynamic padding, full logits), off (superlora, all speed
switches off), bf16, target, group, drop16, eager (each switch alone), recipe (the CONFIG's speed: section, its auto
switches decided here as a run decides them), no-bf16, no-target, no-group, no-drop16, no-attn (the recipe without one
switch that is on), threads (the recipe with the other thread count), compile (the recipe + torch.compile);
with --qlora or when --arms names them: nf4, int8 (the recipe on a 4-bit / 8-bit bitsandbytes base: QLoRA).
bf16 runs only where a short probe measures bf16 matmuls faster than fp32 ones, or when --arms names it
(on an AVX2-only CPU bf16 is emulated: minutes a step).
Other jobs on the machine slow every arm (repeats and within-repeat ratios limit the damage); when the cores
are shared, OMP_NUM_THREADS=1 keeps the arms on one thread each (the threads arm then tries 2)."""


def run(args: argparse.Namespace) -> int:
    from superlora.training.cli import load_train_config

    quiet()
    if args.steps < 1 or args.repeats < 1 or args.warmup < 1:
        raise SuperloraError("--steps, --repeats and --warmup must be >= 1")
    cfg = load_train_config(args.items)
    keys = [k.strip() for k in args.arms.split(",")] if args.arms else None
    result = bench(
        cfg, steps=args.steps, repeats=args.repeats, warmup=args.warmup, keys=keys, rss=args.rss, qlora=args.qlora
    )
    table = format_table(result)
    print("\n" + table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        out.with_suffix(".txt").write_text(table + "\n", encoding="utf-8")
        print(f"\nwrote {out} and {out.with_suffix('.txt')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "bench",
        help="training speed: superlora's path and each speed switch against a plain transformers Trainer",
        description="Measure training throughput (tokens/s, step time, peak RSS, MFU against a matmul peak "
        "measured in the same run) of the recipe's model, data, LoRA and batch size, side by side with a plain "
        "transformers Trainer + peft recipe, in one process, interleaved over repeats.",
        epilog=EPILOG,
    )
    add_recipe_argument(parser, "a train recipe YAML and/or overrides")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per arm and repeat (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="times every arm runs, interleaved (default 3)")
    parser.add_argument("--arms", help="comma-separated subset of arms (default: all; ref always runs)")
    parser.add_argument(
        "--rss",
        choices=sorted(RSS_METHODS),
        default="subprocess",
        help="peak RSS per arm: a fresh process each (default, clean) or in the bench process (faster)",
    )
    parser.add_argument("--qlora", action="store_true", help="add the QLoRA arms nf4 and int8 to the chosen arms")
    parser.add_argument("--out", help="write the result JSON here (and the table next to it, .txt)")
    parser.set_defaults(func=run)
