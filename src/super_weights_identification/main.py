"""``python -m super_weights_identification.main --path_to_model M --path_to_tokenizer T``.

The original project's command, with its defaults (GPT-2), running superlora's identifier.
"""

from __future__ import annotations

import argparse
import sys

from superlora.cli import main as superlora_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m super_weights_identification.main",
        description="Identify super weights (same engine as `superlora identify`).",
        epilog="example:\n  python -m super_weights_identification.main --path_to_model smollm2-135m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--path_to_model", default="openai-community/gpt2", help="model reference")
    parser.add_argument("--path_to_tokenizer", default=None, help="tokenizer reference (default: the model's)")
    args, rest = parser.parse_known_args(argv)
    forwarded = ["identify", "--model", args.path_to_model, *rest]
    if args.path_to_tokenizer and args.path_to_tokenizer != args.path_to_model:
        forwarded += ["--tokenizer", args.path_to_tokenizer]
    return superlora_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
