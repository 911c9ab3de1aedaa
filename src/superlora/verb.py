"""What every verb module needs to register its sub-command: argparse only, so `--help` stays instant."""

from __future__ import annotations

import argparse

RECIPE_METAVAR = "[RECIPE.yaml] [key=value ...]"


def add_verb(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str, epilog: str):
    """A sub-command whose epilog (examples) keeps its line breaks."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_recipe_argument(parser: argparse.ArgumentParser, help: str = "a recipe YAML and/or overrides") -> None:
    """The positional ``[RECIPE.yaml] [key=value ...]`` shared by identify, train, bench and study."""
    parser.add_argument("items", nargs="*", metavar=RECIPE_METAVAR, help=help)
