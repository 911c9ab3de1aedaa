"""``superlora data check``: load and validate a task's data, every row, and print what is there."""

from __future__ import annotations

import argparse

from superlora.verb import add_recipe_argument, add_verb

EPILOG = """examples:
  superlora data check --data E2E_DIR                        # E2E: every split of both variants
  superlora data check --data E2E_DIR --variant cleaned --split test
  superlora data check configs/chat/gsm8k-lora.yaml           # the chat recipe's sources and test set
  superlora data check task.name=chat task.sources='[{path: my.jsonl, format: messages}]'
  SUPERLORA_E2E_DIR=E2E_DIR superlora data check             # the E2E folder from the environment
  superlora data check task.name=sst2 --data ../shared/data/sst2            # SST-2: rows and labels per split
  superlora data check task.name=dialogsum --data ../shared/data/dialogsum --split test

E2E_DIR is a folder holding the E2E release (original/ and cleaned/). A malformed row stops the check
with one line naming the file and line number."""


def check(args: argparse.Namespace) -> int:
    from superlora.config import load_config, split_recipe
    from superlora.tasks import get_task
    from superlora.training.config import TrainConfig

    path, overrides = split_recipe(args.items)
    if args.data:
        overrides.append(f"task.source={args.data}")
    task = get_task(load_config(TrainConfig, path, overrides).task)
    task.check()
    filters = {k: v for k, v in (("variant", args.variant), ("split", args.split)) if v}
    print("\n".join(task.describe_data(**filters)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "data",
        help="validate a task's data (E2E by default) and count what is there",
        description="Load every row of the task's data with the checks training applies. E2E data come from "
        "--data DIR (a folder with original/ and cleaned/), else $SUPERLORA_E2E_DIR, else the Hugging Face Hub.",
        epilog=EPILOG,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "check",
        help="load every row, validate it, print counts",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_argument(p, help="a training recipe (for its task) and/or key=value overrides")
    p.add_argument("--data", help="the task's data folder (same as task.source=DIR; E2E: original/ and cleaned/)")
    p.add_argument("--variant", choices=["original", "cleaned"], help="E2E: only this variant")
    p.add_argument("--split", choices=["train", "validation", "test"], help="E2E, DialogSum: only this split")
    p.set_defaults(func=check)
