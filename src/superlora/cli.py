"""The ``superlora`` command: one verb per module, each registering its own sub-parser.

Verb modules keep heavy imports (torch, transformers) inside their ``run`` functions so
``superlora --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from superlora import __version__
from superlora.errors import SuperloraError

# verb -> module that defines ``register(subparsers)``
VERBS = {
    "data": "superlora.data.cli",
    "identify": "superlora.identify.cli",
    "models": "superlora.models.cli",
    "train": "superlora.training.cli",
    "merge": "superlora.training.merge",
    "quantize": "superlora.quantization.cli",
    "export": "superlora.export.cli",
    "bench": "superlora.bench.cli",
    "score": "superlora.evaluation.cli",
    "evaluate": "superlora.evaluation.cli",
    "serve": "superlora.app.cli",
    "study": "superlora.study.cli",
}

EPILOG = """examples:
  superlora identify                    # super weights of the default offline model (smollm2-135m)
  superlora train configs/e2e-superweight.yaml task.source=E2E_DIR optim.max_steps=200
  superlora merge runs/e2e-superweight  # a plain model with the adapter folded in
  superlora export runs/e2e-superweight --format gguf  # one GGUF file + Ollama Modelfile
  superlora models list                 # built-in offline models and whether they are cached
  superlora models pull smollm2-135m    # prepare the default model once (~30 s)
  superlora models info smollm2-135m    # blocks, attention/MLP modules, MLP output projection

Run `superlora VERB --help` for the options and examples of each verb."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superlora",
        description="Find the super weights of a causal LM and fine-tune LoRA where they live.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"superlora {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in VERBS.values():
        importlib.import_module(module).register(subparsers)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides come after flags too (argparse stops a positional list at a flag).

    ``superlora identify prompts=hello --no-plots --out x max_count=1`` means what it says: every ``key=value``
    left over joins the verb's ``[RECIPE.yaml] [key=value ...]`` items; anything else is still an error.
    """
    args, extra = parser.parse_known_args(argv)
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in overrides]
    if overrides and not hasattr(args, "items"):
        unknown = extra  # a verb that takes no overrides
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.items = [*(args.items or []), *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    try:
        return int(args.func(args) or 0)
    except SuperloraError as exc:
        print(f"superlora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("superlora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
