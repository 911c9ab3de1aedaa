"""``superlora quantize``: perplexity of a model rounded to 4 bits, against block size, with and without its super
weights kept in full precision."""

from __future__ import annotations

import argparse
from pathlib import Path

from superlora.errors import SuperloraError
from superlora.verb import add_verb

EPILOG = """examples:
  superlora quantize smollm2-135m --keep-superweights            # rtn, blocks 64 ... 16384, -> results/quantize/
  superlora quantize smollm2-135m --keep-superweights --clip 6    # the paper's recipe: clip outliers, keep the SWs
  superlora quantize smollm2-135m --method nf4 --block 64,256,1024,4096 --keep-superweights
  superlora quantize qwen2.5-1.5b --keep 2:408:8300 --passages 4  # keep a weight identify did not prove
  superlora quantize ./my-model --data ../shared/data --out /tmp/q

Every linear layer of the transformer blocks is rounded block-wise to 4 bits and put back in fp32 (a
simulation: the perplexity is what a 4-bit kernel would compute; nothing is faster). rtn: min-max round to
nearest, one scale and zero point per block; nf4: bitsandbytes' NF4 (absmax per block, at most 4096).
--keep-superweights holds the proven super weights of results/identify/MODEL/superweights.json (or
--superweights FILE) out of their blocks' scales and restores them exactly. Min-max RTN keeps each block's
extremes exact, so a super weight survives plain RTN; --clip Z clips every tensor to Z standard deviations
before rounding (finer scales everywhere), which clips the super weights too unless they are kept. The
held-out text is the first --passages test items of E2E, GSM8K and DialogSum under --data."""


def parse_blocks(text: str) -> list[int]:
    try:
        blocks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SuperloraError(f"--block: expected sizes like 64,256,1024, got {text!r}") from None
    if not blocks or blocks[0] < 2:
        raise SuperloraError(f"--block: sizes must be >= 2, got {text!r}")
    return blocks


def proven_superweights(path: Path) -> list[str]:
    if not path.is_file():
        raise SuperloraError(f"--keep-superweights: no identify report at {path} (run `superlora identify` first)")
    from superlora.identify.records import proven_coordinates

    return list(proven_coordinates(path))


def run(args: argparse.Namespace) -> int:
    import torch

    from superlora.identify.ablation import parse_coord, parse_coord_text
    from superlora.machine import cpu_info
    from superlora.models import load_model
    from superlora.quantization import report
    from superlora.quantization.passages import passages
    from superlora.quantization.sweep import Setting, run_sweep
    from superlora.training.rundir import write_atomic

    blocks = parse_blocks(args.block)
    if args.method == "nf4" and blocks[-1] > 4096:
        raise SuperloraError(f"--method nf4: bitsandbytes takes blocks of 64 ... 4096, not {blocks[-1]}")
    if args.clip is not None and args.clip <= 0:
        raise SuperloraError(f"--clip must be > 0 standard deviations, got {args.clip}")
    if args.passages < 1 or args.max_tokens < 8:
        raise SuperloraError("--passages must be >= 1 and --max-tokens >= 8")
    extra = [parse_coord_text(c) for c in args.keep]  # syntax now, shapes once the model is loaded
    name = Path(args.model).name if Path(args.model).exists() else args.model
    out = Path(args.out or f"results/quantize/{name}-{args.method}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not report.is_own_output(out))):
        raise SuperloraError(f"--out {out} exists and was not written by `superlora quantize`; choose another --out")
    sw_path = Path(args.superweights or f"results/identify/{name}/superweights.json")
    proven = proven_superweights(sw_path) if args.keep_superweights else []
    texts = passages(args.data, args.passages)

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, trust_remote_code=args.trust_remote_code)
    loaded.model.float()
    arch = loaded.arch
    kept_sets = {"none": ()}
    if args.keep_superweights:
        kept_sets["superweights"] = tuple(parse_coord(c, arch) for c in proven)
    if extra:
        kept_sets["coords"] = tuple(parse_coord(str(c), arch) for c in extra)
    note = None
    if args.keep_superweights and not proven:
        note = f"{sw_path} proves no super weight for this model: keeping them keeps nothing (the columns agree)."
    rows = []
    for source in texts.values():
        for text in source:
            ids = loaded.tokenizer(text, return_tensors="pt").input_ids[0][: args.max_tokens]
            rows.append(ids)
    clips = [None, *([args.clip] if args.clip is not None else [])]
    settings = [Setting(b, k, c, clip) for b in blocks for clip in clips for k, c in kept_sets.items()]
    print(f"{args.model}: {len(rows)} passages, {sum(r.numel() for r in rows):,} tokens; {len(settings)} settings")
    base, records = run_sweep(loaded.model, arch, rows, args.method, settings)
    result = {
        "model": args.model,
        "method": args.method,
        "bits": 4,
        "num_blocks": arch.num_blocks,
        "blocks": blocks,
        "superweights_report": str(sw_path) if args.keep_superweights else None,
        "passages": {k: len(v) for k, v in texts.items()},
        "max_tokens": args.max_tokens,
        "tokens": sum(r.numel() for r in rows),
        "ppl_fp32": base,
        "records": records,
        "machine": cpu_info().label(),
        "note": note,
    }
    write_atomic(out, lambda tmp: report.write(result, tmp))
    print("\n" + report.table(result))
    print(f"wrote {out}/quantize.json, table.md, ppl_vs_block.png")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "quantize",
        help="perplexity of a model rounded to 4 bits by block size, with and without its super weights kept",
        description="Round the block weights of MODEL to 4 bits (simulated), block size by block size, and measure "
        "perplexity on held-out text: plain, and with the super weights held in full precision.",
        epilog=EPILOG,
    )
    parser.add_argument("model", help="model reference: a built-in alias, a Hugging Face folder or id, a .gguf file")
    parser.add_argument("--method", choices=["rtn", "nf4"], default="rtn", help="rounding scheme (default: rtn)")
    parser.add_argument("--block", default="64,256,1024,4096,16384", help="block sizes (default: 64,...,16384)")
    parser.add_argument("--keep-superweights", action="store_true", help="also measure with the super weights kept")
    parser.add_argument("--superweights", metavar="FILE", help="identify report (default: results/identify/MODEL/)")
    parser.add_argument("--keep", nargs="+", default=[], metavar="B:OUT:IN", help="also measure keeping these weights")
    parser.add_argument(
        "--clip", type=float, metavar="Z", help="also measure with outliers clipped to Z standard deviations first"
    )
    parser.add_argument("--data", default="../shared/data", help="folder with e2e/, gsm8k/, dialogsum/")
    parser.add_argument("--passages", type=int, default=8, help="test passages per source (default 8)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per passage at most (default 256)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a model's own code (off by default)")
    parser.add_argument("--out", help="output folder (default: results/quantize/MODEL-METHOD)")
    parser.set_defaults(func=run)
