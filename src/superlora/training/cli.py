"""``superlora train``: parse a recipe plus overrides and start (or resume) a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from superlora.errors import SuperloraError

EPILOG = """examples:
  superlora train configs/e2e-lora.yaml                       # baseline: LoRA in every block
  superlora train configs/e2e-superweight.yaml superweights=results/superweights.json
  superlora train configs/e2e-random.yaml count=2 seed=1      # control: 2 random blocks
  superlora train configs/e2e-lora.yaml layers=[3,4] lora.r=8 optim.max_steps=100 output_dir=runs/try
  superlora train configs/e2e-lora.yaml --resume              # continue after a crash or kill -9
  superlora train --resume output_dir=runs/e2e-lora           # same, reusing the run's own config.yaml
  OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m superlora train configs/e2e-lora.yaml

The run directory (output_dir) gets config.yaml, checkpoints/, adapter/, log.jsonl,
tensorboard/ and summary.json. Data come from data.source, else $SUPERLORA_E2E_DIR, else the Hub."""


def load_train_config(items: list[str], resume: bool = False):
    """TrainConfig from ``[CONFIG] [key=value ...]``; with resume and no CONFIG, the run's own config."""
    from superlora.config import load_config, read_yaml
    from superlora.training.config import TrainConfig, upgrade_legacy

    paths = [item for item in items if "=" not in item]
    overrides = [item for item in items if "=" in item]
    if len(paths) > 1:
        raise SuperloraError(f"give at most one config file, got {', '.join(paths)} (overrides are key=value)")
    if resume:
        overrides.append("resume=true")
    path = paths[0] if paths else None
    if path is None and resume:
        run = Path(load_config(TrainConfig, None, overrides).output_dir)
        if (run / "config.yaml").is_file():
            path = str(run / "config.yaml")
            if "speed" not in read_yaml(path):  # written before speed: existed; resume with what it ran
                speed = upgrade_legacy(read_yaml(path))["speed"]
                overrides = [f"speed.{key}={json.dumps(value)}" for key, value in speed.items()] + overrides
    return load_config(TrainConfig, path, overrides)


def run(args: argparse.Namespace) -> int:
    from superlora.training.trainer import train

    train(load_train_config(args.items, args.resume))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="LoRA fine-tuning on E2E: all blocks, super-weight blocks, or controls; resumable",
        description="Fine-tune a causal LM on E2E data-to-text with LoRA adapters in the chosen blocks. "
        "Settings come from a YAML recipe (see configs/) and key=value overrides (dotted for sections: "
        "lora.r=8, optim.max_steps=200). Checkpoints are written atomically; --resume continues from the last.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("items", nargs="*", metavar="CONFIG|key=value", help="a recipe YAML and/or overrides")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    parser.set_defaults(func=run)
