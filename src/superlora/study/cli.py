"""``superlora study``: the whole comparison on E2E, arm by arm, resumable."""

from __future__ import annotations

import argparse

from superlora.verb import add_recipe_argument, add_verb

EPILOG = """examples:
  superlora study configs/study.yaml                          # the committed study (writes results/study-oneseed)
  superlora study configs/study.yaml train.optim.max_steps=50 eval.limit=20 out=/tmp/s runs_dir=/tmp/r
  superlora study configs/study.yaml arms='[base, superweights]'
  superlora study configs/study-sst2.yaml train.task.source=../shared/data/sst2 only_seeds='[43]'  # one seed's arms

Arms (study.arms.KINDS): base (no fine-tuning), head (a classifier's head alone), all (every block), superweights
(the super-weight blocks), superweights-matched, above, avoid, probe, and the controls random / first / last (as many
blocks as superweights). Every arm shares the `train:` recipe (any task: e2e, sst2, dialogsum, chat) except where
the adapters go. Re-running the same command skips finished arms and resumes a half-trained one from its last
checkpoint; `only_seeds` splits a study over cores or machines, one process per seed."""


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
        help="base vs all-layer vs super-weight-layer LoRA vs controls on a task, with tables and plots",
        description="Train every arm with the same data, steps and seeds, evaluate each with the task's metrics "
        "(E2E: five metrics + slot error rate), test the differences, and write results/ plus the README's section.",
        epilog=EPILOG,
    )
    add_recipe_argument(parser, "the study recipe YAML and/or overrides (dotted: train.optim.max_steps=50)")
    parser.set_defaults(func=run)
