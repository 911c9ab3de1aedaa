"""``superlora study``: the whole comparison on E2E, arm by arm, resumable."""

from __future__ import annotations

import argparse

from superlora.verb import add_recipe_argument, add_verb

EPILOG = """examples:
  superlora study configs/study.yaml                          # the committed study (writes results/study-oneseed)
  superlora study configs/study.yaml train.optim.max_steps=50 eval.limit=20 out=/tmp/s runs_dir=/tmp/r
  superlora study configs/study.yaml arms='[base, superweights]'

Arms: base (no fine-tuning), all (every block), superweights (the super-weight blocks) and the
controls random / first / last (same number of blocks as superweights). Every arm shares the
`train:` recipe except `layers`. Re-running the same command skips finished arms and resumes a
half-trained one from its last checkpoint."""


def run(args: argparse.Namespace) -> int:
    from superlora.config import load_config, split_recipe
    from superlora.study.config import StudyConfig
    from superlora.study.runner import run_study

    recipe, overrides = split_recipe(args.items)
    run_study(load_config(StudyConfig, recipe, overrides))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "study",
        help="base vs all-layer vs super-weight-layer LoRA vs controls on E2E, with tables and plots",
        description="Train every arm with the same data, steps and seed, evaluate each on the E2E test set "
        "(five metrics + slot error rate), and write results/ plus the README's results section.",
        epilog=EPILOG,
    )
    add_recipe_argument(parser, "the study recipe YAML and/or overrides (dotted: train.optim.max_steps=50)")
    parser.set_defaults(func=run)
