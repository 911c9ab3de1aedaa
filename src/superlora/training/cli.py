"""``superlora train``: parse a recipe plus overrides and start (or resume) a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from superlora.verb import add_recipe_argument, add_verb

EPILOG = """examples:
  superlora train configs/e2e-lora.yaml                       # baseline: LoRA in every block (E2E)
  superlora train configs/chat/gsm8k-lora.yaml optim.max_steps=100   # chat SFT on GSM8K conversations
  superlora train configs/e2e-superweight.yaml superweights=results/superweights.json
  superlora train configs/e2e-random.yaml count=2 seed=1      # control: 2 random blocks
  superlora train configs/e2e-qlora.yaml                      # QLoRA: frozen NF4 base (quantize: nf4|fp4|int8)
  superlora train configs/e2e-qlora-keep.yaml                 # QLoRA, the super weights held in full precision
  superlora train configs/e2e-lora.yaml layers=[3,4] lora.r=8 optim.max_steps=100 output_dir=runs/try
  superlora train configs/e2e-lora.yaml --resume              # continue after a crash or kill -9
  superlora train --resume output_dir=runs/e2e-lora           # same, reusing the run's own config.yaml
  OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m superlora train configs/e2e-lora.yaml

The run directory (output_dir) gets config.yaml, run.json (task, template, blocks), checkpoints/, adapter/,
log.jsonl, eval.jsonl (held-out loss), tensorboard/ and summary.json. The task (task.name: e2e, chat) says
where the data come from: E2E from task.source, else $SUPERLORA_E2E_DIR, else the Hub; chat from task.sources."""


def load_train_config(items: list[str], resume: bool = False):
    """TrainConfig from ``[CONFIG] [key=value ...]``; with resume and no CONFIG, the run's own config."""
    from superlora.config import load_config, split_recipe
    from superlora.training.config import TrainConfig

    path, overrides = split_recipe(items)
    if resume:
        overrides.append("resume=true")
    if path is None and resume:
        run = Path(load_config(TrainConfig, None, overrides).output_dir)
        if (run / "config.yaml").is_file():
            path = str(run / "config.yaml")
    return load_config(TrainConfig, path, overrides)


def run(args: argparse.Namespace) -> int:
    from superlora.training.trainer import train

    train(load_train_config(args.items, args.resume))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "train",
        help="LoRA fine-tuning of a task (E2E, chat): all blocks, super-weight blocks, or controls; resumable",
        description="Fine-tune a causal LM on a task (E2E data-to-text, chat SFT) with LoRA adapters in the "
        "chosen blocks. "
        "Settings come from a YAML recipe (see configs/) and key=value overrides (dotted for sections: "
        "lora.r=8, optim.max_steps=200). Checkpoints are written atomically; --resume continues from the last.",
        epilog=EPILOG,
    )
    add_recipe_argument(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    parser.set_defaults(func=run)
