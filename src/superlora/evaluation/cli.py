"""``superlora score`` (the official E2E metrics and SER of a system output) and ``superlora evaluate``.

``cli.VERBS`` lists this module under both verbs, so ``register`` adds whichever of the two
sub-parsers is not there yet and may be called twice.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from superlora.evaluation.decode import DecodeConfig
from superlora.verb import add_recipe_argument, add_verb

SCORE_EPILOG = """examples:
  superlora score data/e2e/original/testset_w_refs.csv outputs.tsv
  superlora score data/e2e/original/testset_w_refs.csv outputs.txt --json
  superlora score data/e2e/original/testset_w_refs.csv outputs.tsv --python-nist   # the LoRA paper's -p mode
  superlora score data/e2e/cleaned/test-fixed.csv outputs.tsv --skip-meteor        # no Java needed

REFS is an E2E CSV (references grouped by MR, by orig_mr for the cleaned test set). HYPS is a TSV with
header MR<TAB>output (rows matched by MR) or plain text with one output per MR in the references' order."""

EVALUATE_EPILOG = """examples:
  superlora evaluate limit=20                                        # quick look at the default base model (E2E)
  superlora evaluate --adapter runs/my-run                           # a run: its model, task and template
  superlora evaluate --adapter runs/my-run task.source=E2E_DIR decode.num_beams=4 limit=100
  superlora evaluate configs/chat/gsm8k-lora.yaml --adapter runs/gsm8k-lora limit=200   # a chat run
  superlora evaluate model=smollm2-135m task.eval_variant=cleaned out=evals/cleaned

Settings are the keys of the evaluate recipe (model, adapter, task.*, split, limit, decode.*, threads, out,
skip_meteor, python_nist); a training recipe can be given for its model and task. Unset decode.* keys take
the task's protocol (E2E: beam 10, length penalty 0.9, no repeated 4-grams; chat: greedy).
Writes the task's outputs (E2E: outputs.tsv, slot_errors.tsv), scores.json and summary.md to out."""


def run_score(args: argparse.Namespace) -> int:
    from superlora.evaluation.inputs import load_scoring_set
    from superlora.tasks.e2e.score import score_lines, score_outputs

    data = load_scoring_set(args.refs, args.hyps)
    result = score_outputs(data.mrs, data.refs, data.hyps, args.python_nist, args.skip_meteor)
    result.pop("_ser_examples")
    if args.json:
        print(json.dumps({"refs": str(args.refs), "hyps": str(args.hyps), **result}, indent=2, ensure_ascii=False))
        return 0
    print("\n".join(score_lines(result["metrics"], result["ser"])))
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


# -----------------------------------------------------------------------------
# evaluate


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(text).name or text).strip("-") or "model"


def _default_out(cfg) -> Path:
    suffix = f"{cfg.split}" + (f"-limit{cfg.limit}" if cfg.limit else "")
    if cfg.adapter:
        return Path(cfg.adapter) / f"eval-{suffix}"
    what = cfg.task.eval_variant if cfg.task.name == "e2e" else cfg.task.name
    return Path("evals") / f"{_slug(cfg.model)}-{what}-{suffix}"


def _summary(cfg, task, report: dict, items: list, outputs: list[str]) -> str:
    decode = report["decode"]
    values = task.values(report)
    described = task.describe_evaluation(report["count"], cfg.split, DecodeConfig(**decode))
    if task.head == "classifier":  # nothing is generated: no decoding settings to report
        protocol = [f"{described}.", f"Classifying took {report['decode_seconds']:.0f} s."]
    else:
        settings = {"no-repeat n-gram": decode["no_repeat_ngram_size"]}
        if decode["num_beams"] > 1:
            settings = {"length penalty": decode["length_penalty"], **settings}
        # the task's phrase names the search and the token budget (E2E's more); the settings it leaves out here
        rest = "".join(f", {name} {value:g}" for name, value in settings.items() if name not in described)
        protocol = [
            f"{described}{rest}.",
            f"Decoding took {report['decode_seconds']:.0f} s "
            f"({report['decode_seconds'] / max(report['count'], 1):.2f} s/item).",
        ]
    lines = [
        f"# {task.name} evaluation: {cfg.model}" + (f" + {cfg.adapter}" if cfg.adapter else ""),
        "",
        *protocol,
        "",
        "| metric | score |",
        "|---|---|",
    ]
    lines += [f"| {m.name} | {m.format(values.get(m.name))} |" for m in task.metrics]
    if "confusion" in report:  # rows: gold label, columns: predicted
        labels = report.get("labels", [])
        lines += [
            "",
            "Confusion (rows: gold, columns: predicted):",
            "",
            "| gold \\ predicted | " + " | ".join(labels) + " |",
        ]
        lines += ["|---|" + "---|" * len(labels)]
        lines += [
            f"| {g} | " + " | ".join(f"{n:,}" for n in row) + " |"
            for g, row in zip(labels, report["confusion"], strict=True)
        ]
    lines += ["", "First outputs:", ""]
    lines += [
        f"- `{item.key[:200]}`  \n  {out[:400] or '(empty)'}"
        for item, out in list(zip(items, outputs, strict=True))[:3]
    ]
    return "\n".join(lines) + "\n"


def evaluate_config(args: argparse.Namespace):
    """The EvaluateConfig of ``[RECIPE] [key=value ...]`` and the flags, and the adapter's run (a RunFolder, or None).

    Defaults, each refined by the next: the adapter run's model and task (run.json), the recipe (an evaluate
    recipe, or a training recipe of which the model and task are taken), the overrides and flags.
    """
    import dataclasses

    from superlora.config import _merge, load_config, parse_overrides, read_recipe, split_recipe
    from superlora.evaluation.config import EvaluateConfig
    from superlora.evaluation.decode import resolve_adapter
    from superlora.training import rundir
    from superlora.training.config import TrainConfig

    path, overrides = split_recipe(args.items)
    overrides += [
        f"{flag}={getattr(args, flag)}"
        for flag in ("model", "adapter", "limit", "out")
        if getattr(args, flag) is not None
    ]
    overrides += [f"{flag}=true" for flag in ("skip_meteor", "python_nist") if getattr(args, flag)]
    overrides += [
        f"decode.{key}={getattr(args, flag)}"
        for flag, key in (("beams", "num_beams"), ("batch_size", "batch_size"))
        if getattr(args, flag, None) is not None
    ]
    recipe = read_recipe(path) if path else {}
    own = {f.name for f in dataclasses.fields(EvaluateConfig)}
    if set(recipe) & ({f.name for f in dataclasses.fields(TrainConfig)} - own):  # a training recipe: its model, task
        recipe = TrainConfig.migrate(recipe)
        recipe = {k: recipe[k] for k in ("model", "task", "trust_remote_code") if k in recipe}
    given = _merge(recipe, parse_overrides(overrides))
    run_dir = rundir.run_of_adapter(resolve_adapter(given["adapter"])) if given.get("adapter") else None
    run = rundir.open_run(run_dir) if run_dir is not None else None
    defaults: dict = {}
    if run is not None:
        task = run.task_record()
        wanted = given.get("task", {}).get("name") if isinstance(given.get("task"), dict) else None
        defaults = {"model": run.config.get("model")} | ({"task": task} if wanted in (None, task.get("name")) else {})
    cfg = load_config(EvaluateConfig, None, overrides, defaults=_merge(defaults, recipe))
    if cfg.model is None:
        from superlora.models.aliases import DEFAULT_MODEL

        cfg = dataclasses.replace(cfg, model=DEFAULT_MODEL)
    return cfg, run


def run_evaluate(args: argparse.Namespace) -> int:
    from superlora.evaluation import coco
    from superlora.evaluation.decode import attach_adapter, resolve_adapter, set_decode_threads
    from superlora.evaluation.evaluate import check_out, evaluate, write_report
    from superlora.models import load_model
    from superlora.tasks import get_task
    from superlora.tasks.base import ScoreOptions

    cfg, run = evaluate_config(args)
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    check_out(out)  # before the data and the model load
    task = get_task(cfg.task)
    task.check()
    if task.name == "e2e" and not cfg.skip_meteor:
        coco.require_java("METEOR")  # fail before a long decode, not after
    items = task.eval_items(cfg.split, cfg.limit)
    template = run.template() if run is not None else task.template()
    decode = cfg.decode.resolved(task.decode_defaults())

    threads = set_decode_threads(cfg.threads)
    print(
        f"classifying {len(items)} {cfg.split} items of task {task.name} (fp32, {threads})"
        if task.head == "classifier"
        else f"decoding {len(items)} {cfg.split} items of task {task.name} (beam {decode.num_beams}, fp32, {threads})",
        flush=True,
    )
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, **task.model_kwargs())
    model = attach_adapter(loaded.model, cfg.adapter, cfg.model) if cfg.adapter else loaded.model
    report, outputs = evaluate(
        task,
        model,
        loaded.tokenizer,
        items,
        decode,
        template,
        ScoreOptions(cfg.python_nist, cfg.skip_meteor),
        cfg.max_length,
        show_progress=not args.quiet,
    )
    report = {
        "model": cfg.model,
        "model_source": loaded.source,
        "adapter": str(resolve_adapter(cfg.adapter)) if cfg.adapter else None,
        "task": task.name,
        "split": cfg.split,
        **({"variant": cfg.task.eval_variant} if task.name == "e2e" else {}),
        "threads": threads,
        **report,
    }
    public = write_report(
        task, out, items, outputs, report, lambda public: {"summary.md": _summary(cfg, task, public, items, outputs)}
    )
    print("\n".join(task.score_lines(public)))
    verb = "classified" if task.head == "classifier" else "decoded"
    print(f"{verb} {len(items)} items in {report['decode_seconds']:.1f} s; wrote {out}/scores.json, summary.md")
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
        p = add_verb(
            subparsers,
            "evaluate",
            help="decode a task's test items with the base model or a run's adapter, then score them",
            description="Generate one output per evaluation item of the task (E2E: each test MR, beam search by the "
            "LoRA paper's protocol; chat: the last user turn of each test conversation, greedy), write them and "
            "score them with the task's metrics. An adapter run brings its model, task and prompt template.",
            epilog=EVALUATE_EPILOG,
        )
        add_recipe_argument(p, help="an evaluate or training recipe and/or key=value overrides")
        p.add_argument("--adapter", help="LoRA adapter: a training run folder (with adapter/) or the adapter folder")
        p.add_argument("--model", help="alias, folder, .gguf or Hub id (default: the run's, else smollm2-135m)")
        p.add_argument("--limit", type=int, help="decode only the first N items (same as limit=N)")
        p.add_argument("--beams", type=int, metavar="N", help="beam width (same as decode.num_beams=N)")
        p.add_argument("--batch-size", type=int, metavar="N", help="prompts decoded at once (decode.batch_size=N)")
        p.add_argument("--out", help="output folder (default: RUN/eval-SPLIT with an adapter run, else evals/...)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_scoring_flags(p)
        p.set_defaults(func=run_evaluate)
