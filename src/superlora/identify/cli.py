"""``superlora identify``: find, prove and report the super weights of a causal LM."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from superlora.verb import add_recipe_argument, add_verb

EPILOG = """examples:
  superlora identify                                   # the default offline model, smollm2-135m
  superlora identify --model gemma3-270m --out runs/identify/gemma
  superlora identify configs/identify.yaml max_count=5 median_ratio=500
  superlora identify --model ./my-hf-folder --prompt "Hello world" --prompt "2 + 2 = 4"
  superlora identify --ablate 11:507:1229 --scale 0   # save a copy with one weight zeroed
  superlora identify --ablate 11:507:1229 --scale 3   # the paper's scaling experiment

Coordinates are BLOCK:OUT:IN in Llama layout W[out, in] (GPT-2's Conv1D stores W[in, out];
the report gives the stored index too). Writes superweights.json, table.txt and PNG plots."""


def default_out(kind: str, model: str) -> Path:
    return Path("runs") / kind / re.sub(r"[^\w.-]+", "_", Path(model).name if Path(model).exists() else model)


def run(args: argparse.Namespace) -> int:
    from superlora.config import load_config, split_recipe
    from superlora.identify.config import IdentifyConfig

    recipe, overrides = split_recipe(args.items)
    flags = [f"model={args.model}"] if args.model else []
    flags += [f"tokenizer={args.tokenizer}"] if args.tokenizer else []
    flags += [f"out={args.out}"] if args.out else []
    flags += ["plots=false"] if args.no_plots else []
    cfg = load_config(IdentifyConfig, recipe, overrides + flags)
    if args.prompt is not None:
        cfg = _with_prompts(cfg, args.prompt)
    if args.ablate:
        return _ablate(cfg, args.ablate, args.scale)
    return _identify(cfg)


def _with_prompts(cfg, prompts: list[str]):
    from dataclasses import replace

    from superlora.errors import SuperloraError

    try:
        return replace(cfg, prompts=prompts)
    except ValueError as exc:
        raise SuperloraError(str(exc)) from None


def _identify(cfg) -> int:
    from superlora.identify.pipeline import identify, write_outputs
    from superlora.identify.report import format_table
    from superlora.models.loading import load_model

    print(f"superlora: loading {cfg.model}", file=sys.stderr)
    loaded = load_model(cfg.model, cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)
    print(
        f"superlora: scanning {loaded.arch.num_blocks} blocks ({loaded.arch.mlp_out_name}) "
        f"over {len(cfg.prompts)} prompts",
        file=sys.stderr,
    )
    result = identify(loaded, cfg)
    out_dir = Path(cfg.out) if cfg.out else default_out("identify", cfg.model)
    report = write_outputs(loaded, cfg, result, out_dir)
    print(format_table(report))
    print(f"\n{len(result.proven)} super weight(s), {len(result.candidates)} candidate(s) in {result.seconds:.1f} s")
    print(f"report: {out_dir / 'superweights.json'}" + "".join(f"\nplot:   {out_dir / p}" for p in report["plots"]))
    return 0


def _ablate(cfg, coord_text: str, scale: float) -> int:
    from superlora.identify.ablation import parse_coord, parse_coord_text, scaled_weights
    from superlora.identify.prove import perplexity
    from superlora.identify.saved import check_ablate_target, save_ablated
    from superlora.models.arch import encode
    from superlora.models.loading import load_model

    out_dir = _ablate_out(cfg, parse_coord_text(coord_text), scale)
    check_ablate_target(out_dir)  # before the model loads: a refusal should not cost a load
    loaded = load_model(cfg.model, cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)
    coord = parse_coord(coord_text, loaded.arch)
    ids = encode(loaded.tokenizer, loaded.model, cfg.passage)
    before = perplexity(loaded.model, ids)
    with scaled_weights(loaded.model, loaded.arch, [coord], scale):
        after = perplexity(loaded.model, ids)
        meta = {
            "source": loaded.source,
            "coordinate": str(coord),
            "scale": scale,
            "ppl_before": before,
            "ppl_after": after,
        }
        save_ablated(loaded.model, loaded.tokenizer, out_dir, meta)
    stored = list(loaded.arch.stored_index(coord.out_channel, coord.in_channel))
    where = f"{loaded.arch.mlp_out_param_name(coord.block)}{stored}"
    print(f"{where} x {scale:g}: perplexity {before:.2f} -> {after:.2f} (x{after / before:.2f})")
    print(f"saved: {out_dir}")
    return 0


def _ablate_out(cfg, coord, scale: float) -> Path:
    """``--out``, else runs/ablated/MODEL-COORD-xSCALE (known before the model loads)."""
    return Path(cfg.out) if cfg.out else default_out("ablated", f"{cfg.model}-{coord}-x{scale:g}".replace(":", "_"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "identify",
        help="find the super weights of a causal LM and prove each by ablation",
        description="Detect super weights from MLP-projection activation spikes (arXiv 2411.07191), "
        "zeroing and re-running to unmask smaller ones, then prove each by perplexity against "
        "random-weight and same-row controls.",
        epilog=EPILOG,
    )
    add_recipe_argument(parser, "optional YAML recipe and overrides (e.g. max_count=5)")
    parser.add_argument("--model", help="alias, local folder, .gguf file or Hub id (default smollm2-135m)")
    parser.add_argument("--tokenizer", help="tokenizer reference if not the model's own")
    parser.add_argument("--prompt", action="append", help="detection prompt (repeatable; replaces the defaults)")
    parser.add_argument("--out", help="report folder (default runs/identify/MODEL)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--ablate", metavar="BLOCK:OUT:IN", help="save a copy of the model with this weight scaled")
    parser.add_argument("--scale", type=float, default=0.0, help="factor for --ablate (0 zeroes it; default 0)")
    parser.set_defaults(func=run)
