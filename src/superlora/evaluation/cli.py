"""``superlora score`` and ``superlora evaluate``: official E2E metrics, SER, and decoding.

``cli.VERBS`` lists this module under both verbs, so ``register`` adds whichever of the two
sub-parsers is not there yet and may be called twice.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from superlora.errors import SuperloraError
from superlora.evaluation.evaluate import score_outputs, write_outputs
from superlora.verb import add_verb

SCORE_EPILOG = """examples:
  superlora score data/e2e/original/testset_w_refs.csv outputs.tsv
  superlora score data/e2e/original/testset_w_refs.csv outputs.txt --json
  superlora score data/e2e/original/testset_w_refs.csv outputs.tsv --python-nist   # the LoRA paper's -p mode
  superlora score data/e2e/cleaned/test-fixed.csv outputs.tsv --skip-meteor        # no Java needed

REFS is an E2E CSV (references grouped by MR, by orig_mr for the cleaned test set). HYPS is a TSV with
header MR<TAB>output (rows matched by MR) or plain text with one output per MR in the references' order."""

EVALUATE_EPILOG = """examples:
  superlora evaluate --model smollm2-135m --limit 20                # quick look at the base model
  superlora evaluate --model smollm2-135m --adapter runs/my-run      # a training run (its adapter/ folder)
  superlora evaluate --model smollm2-135m --adapter runs/my-run --variant cleaned --out evals/cleaned
  superlora evaluate --model smollm2-135m --beams 4 --threads 1   # faster; not the paper protocol

Writes outputs.tsv (MR<TAB>output), scores.json, slot_errors.tsv and summary.md to --out."""


def _fmt(value: float | None, digits: int = 4) -> str:
    return "skipped" if value is None else f"{value:.{digits}f}"


def _score_lines(scores: dict, ser: dict) -> list[str]:
    lines = [f"{name:<8} {_fmt(scores[name])}" for name in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")]
    lines.append(
        f"{'SER':<8} {ser['SER'] * 100:.2f}%  (missing {ser['missing']}, wrong {ser['wrong']}, "
        f"added {ser['added']} of {ser['slots']} slots)"
    )
    return lines


def run_score(args: argparse.Namespace) -> int:
    from superlora.evaluation.inputs import load_scoring_set

    data = load_scoring_set(args.refs, args.hyps)
    result = score_outputs(data.mrs, data.refs, data.hyps, args.python_nist, args.skip_meteor)
    result.pop("_ser_examples")
    if args.json:
        print(json.dumps({"refs": str(args.refs), "hyps": str(args.hyps), **result}, indent=2, ensure_ascii=False))
        return 0
    print("\n".join(_score_lines(result["metrics"], result["ser"])))
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


# -----------------------------------------------------------------------------
# evaluate


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(text).name or text).strip("-") or "model"


def _default_out(args: argparse.Namespace) -> Path:
    suffix = f"{args.split}" + (f"-limit{args.limit}" if args.limit else "")
    if args.adapter:
        return Path(args.adapter) / f"eval-{suffix}"
    return Path("evals") / f"{_slug(args.model)}-{args.variant}-{suffix}"


def _summary(args, report: dict, outputs: list[str], mrs: list[str]) -> str:
    decode = report["decode"]
    lines = [
        f"# E2E evaluation: {args.model}" + (f" + {args.adapter}" if args.adapter else ""),
        "",
        f"{report['count']} MRs of the {args.variant} {args.split} split; beam {decode['num_beams']}, "
        f"length penalty {decode['length_penalty']}, no-repeat n-gram {decode['no_repeat_ngram_size']}, "
        f"max {decode['max_new_tokens']} new tokens.",
        f"Decoding took {report['decode_seconds']:.0f} s "
        f"({report['decode_seconds'] / max(report['count'], 1):.2f} s/MR), "
        f"scoring {report['scoring_seconds']:.0f} s.",
        "",
        "| metric | score |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in report["metrics"].items()]
    ser = report["ser"]
    lines.append(
        f"| SER | {ser['SER'] * 100:.2f}% ({ser['missing']} missing, {ser['wrong']} wrong, {ser['added']} added) |"
    )
    lines += ["", "Metrics follow the official e2e-metrics scorer; SER is rule-based (see slot_errors.tsv).", ""]
    lines += ["First outputs:", ""]
    lines += [f"- `{mr}`  \n  {out or '(empty)'}" for mr, out in list(zip(mrs, outputs, strict=True))[:3]]
    return "\n".join(lines) + "\n"


def run_evaluate(args: argparse.Namespace) -> int:
    from superlora.data.e2e import group_references, load_split
    from superlora.evaluation import coco
    from superlora.evaluation.decode import DecodeConfig, attach_adapter, resolve_adapter, timed_generate

    if args.limit is not None and args.limit < 1:
        raise SuperloraError("--limit must be at least 1")
    if not args.skip_meteor:
        coco.require_java("METEOR")  # fail before a long decode, not after
    if args.adapter:
        resolve_adapter(args.adapter)
    groups = group_references(load_split(args.split, args.variant, source=args.data))
    if args.limit:
        groups = groups[: args.limit]
    mrs = [mr for mr, _ in groups]
    refs = [r for _, r in groups]
    config = DecodeConfig(
        num_beams=args.beams,
        length_penalty=args.length_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    out = Path(args.out) if args.out else _default_out(args)
    out.mkdir(parents=True, exist_ok=True)

    from superlora.evaluation.decode import set_decode_threads
    from superlora.models import load_model

    threads = set_decode_threads(args.threads or "auto")
    print(f"decoding {len(mrs)} MRs (beam {config.num_beams}, fp32, {threads})", flush=True)
    loaded = load_model(args.model)
    model = attach_adapter(loaded.model, args.adapter) if args.adapter else loaded.model
    outputs, seconds = timed_generate(model, loaded.tokenizer, mrs, config, show_progress=not args.quiet)

    result = score_outputs(mrs, refs, outputs, args.python_nist, args.skip_meteor)
    write_outputs(out, mrs, outputs, result.pop("_ser_examples"))
    report = {
        "model": args.model,
        "model_source": loaded.source,
        "adapter": str(resolve_adapter(args.adapter)) if args.adapter else None,
        "split": args.split,
        "variant": args.variant,
        "count": len(mrs),
        "decode": config.to_dict(),
        "threads": threads,
        "decode_seconds": round(seconds, 2),
        **result,
    }
    (out / "scores.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_summary(args, report, outputs, mrs), encoding="utf-8")
    print("\n".join(_score_lines(report["metrics"], report["ser"])))
    print(f"decoded {len(mrs)} MRs in {seconds:.1f} s; wrote {out}/outputs.tsv, scores.json, summary.md")
    return 0


# -----------------------------------------------------------------------------
# parsers


def _add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--python-nist",
        action="store_true",
        help="BLEU and NIST as the official scorer's -p (Python) mode computes them, as in the LoRA paper",
    )
    parser.add_argument("--skip-meteor", action="store_true", help="skip METEOR (the only metric that needs Java)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from superlora.data.e2e import SPLITS, VARIANTS

    if "score" not in subparsers.choices:
        p = add_verb(
            subparsers,
            "score",
            help="BLEU, NIST, METEOR, ROUGE_L, CIDEr (official E2E scorer semantics) and slot error rate",
            description="Score system outputs against E2E references exactly as the challenge's official "
            "scorer (e2e-metrics) does, plus a rule-based slot error rate.",
            epilog=SCORE_EPILOG,
        )
        p.add_argument("refs", type=Path, help="E2E CSV with mr,ref columns (and orig_mr for the cleaned data)")
        p.add_argument("hyps", type=Path, help="outputs: TSV with header MR<TAB>output, or one output per line")
        p.add_argument("--json", action="store_true", help="print all scores as JSON")
        _add_scoring_flags(p)
        p.set_defaults(func=run_score)
    if "evaluate" not in subparsers.choices:
        from superlora.models.aliases import DEFAULT_MODEL

        p = add_verb(
            subparsers,
            "evaluate",
            help="decode E2E MRs with beam search, then score the outputs (official metrics + SER)",
            description="Generate one description per E2E MR with batched beam search (LoRA paper protocol by "
            "default), write them as a challenge TSV and score them. With --variant cleaned the inputs are the "
            "original MRs (orig_mr), since that is how the cleaned test references are grouped for scoring.",
            epilog=EVALUATE_EPILOG,
        )
        p.add_argument(
            "--model", default=DEFAULT_MODEL, help=f"alias, folder, .gguf or Hub id (default {DEFAULT_MODEL})"
        )
        p.add_argument("--adapter", help="LoRA adapter: a training run folder (with adapter/) or the adapter folder")
        p.add_argument("--split", default="test", choices=SPLITS, help="E2E split to decode (default test)")
        p.add_argument("--variant", default="original", choices=VARIANTS, help="E2E release (default original)")
        p.add_argument("--data", help="local E2E folder with original/ and cleaned/ (default: $SUPERLORA_E2E_DIR)")
        p.add_argument("--limit", type=int, help="decode only the first N MRs")
        p.add_argument("--out", help="output folder (default: RUN/eval-SPLIT with --adapter, else evals/...)")
        p.add_argument("--beams", type=int, default=10, help="beam size (default 10)")
        p.add_argument("--length-penalty", type=float, default=0.9, help="beam length penalty (default 0.9)")
        p.add_argument("--no-repeat-ngram-size", type=int, default=4, help="forbid repeated n-grams (default 4)")
        p.add_argument("--max-new-tokens", type=int, default=64, help="longest output in tokens (default 64)")
        p.add_argument("--batch-size", type=int, default=8, help="MRs decoded together (default 8)")
        p.add_argument("--threads", type=int, help="torch CPU threads (default: the cores no other job keeps busy)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_scoring_flags(p)
        p.set_defaults(func=run_evaluate)
