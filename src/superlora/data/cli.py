"""``superlora data check``: load and validate E2E splits, print what is there."""

from __future__ import annotations

import argparse

from superlora.verb import add_verb

EPILOG = """examples:
  superlora data check --data ../shared/data/e2e              # every split of both variants
  superlora data check --data ../shared/data/e2e --variant cleaned --split test
  SUPERLORA_E2E_DIR=../shared/data/e2e superlora data check   # the folder from the environment
  superlora data check                                         # the Hugging Face Hub (needs internet)

A malformed row stops the check with one line naming the file and line number."""


def check(args: argparse.Namespace) -> int:
    from superlora.data.e2e import SPLITS, VARIANTS, group_references, load_split

    print(f"{'variant':<9} {'split':<11} {'rows':>7} {'MRs':>6} {'ref groups':>11}")
    for variant in [args.variant] if args.variant else VARIANTS:
        for split in [args.split] if args.split else SPLITS:
            examples = load_split(split, variant, args.data)
            mrs = len({ex.mr for ex in examples})
            print(f"{variant:<9} {split:<11} {len(examples):>7,} {mrs:>6,} {len(group_references(examples)):>11,}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "data",
        help="validate the E2E data and count rows, MRs and reference groups",
        description="E2E data comes from --data DIR (a folder with original/ and cleaned/), "
        "else $SUPERLORA_E2E_DIR, else the Hugging Face Hub.",
        epilog=EPILOG,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "check",
        help="load every row, validate it, print counts",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="folder holding original/ and cleaned/ (default: $SUPERLORA_E2E_DIR or the Hub)")
    p.add_argument("--variant", choices=["original", "cleaned"], help="only this variant")
    p.add_argument("--split", choices=["train", "validation", "test"], help="only this split")
    p.set_defaults(func=check)
