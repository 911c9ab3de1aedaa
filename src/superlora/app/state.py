"""What the app loads once and shares between requests: one base model, its adapters, one lock.

Adapters are attached to the single base model with peft's multi-adapter support rather than as
separate model copies: measured on SmolLM2-135M, two extra adapters add under 1 MB of RSS, two
copies add ~750 MB each. The price is that the adapter in use and the super-weight ablation are
both global state of that one model, so every model call holds ``lock`` for its whole duration
(on 2 CPU cores generations would not run faster in parallel anyway).

Model calls use ``threads`` torch threads (default 1), set in each calling thread: with another
process busy on a 2-core machine, 24 greedy tokens of SmolLM2 took 2.0 s on 1 thread and 10 s on 2
(OpenMP threads spin-waiting on a shared core).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from superlora.app.limits import InputError, Limits
from superlora.data.templates import Template
from superlora.errors import SuperloraError
from superlora.models.loading import LoadedModel

BASE = "base"
log = logging.getLogger("superlora.app")


@dataclass
class Adapter:
    """A LoRA adapter attached to the base model under ``name``."""

    name: str
    folder: Path  # the peft adapter folder
    run: Path | None  # the training run it came from, if any
    task: str | None = None  # the task it was trained on (from run.json)
    template: Template | None = None  # how it was prompted in training (run.json); None: unknown
    head: str = "lm"  # "classifier": a sequence-classification adapter (its head is in the adapter)
    labels: tuple[str, ...] = ()  # a classifier's class names


@dataclass
class SuperWeights:
    """The table the explorer shows: rows of a superweights.json report, or of an in-app identify."""

    rows: list[dict] = field(default_factory=list)
    source: str = ""

    @property
    def coordinates(self) -> list[str]:
        return [row["coordinate"] for row in self.rows]


class AppState:
    """The loaded model, its adapters and everything the tabs read; built once by :meth:`load`."""

    def __init__(
        self,
        loaded: LoadedModel,
        adapters: list[Adapter],
        peft_model: nn.Module | None,
        slot_values: dict[str, list[str]],
        runs_dir: Path | None,
        superweights: SuperWeights,
        limits: Limits,
        threads: int = 1,
    ) -> None:
        self.loaded = loaded
        self.adapters = adapters
        self.peft_model = peft_model
        self.slot_values = slot_values
        self.runs_dir = runs_dir
        self.superweights = superweights
        self.limits = limits
        self.threads = threads
        self.lock = threading.Lock()
        config = getattr(loaded.model, "config", None)
        self.context_length: int | None = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )

    @property
    def classifier(self) -> bool:
        """The base carries a classification head: the app classifies instead of generating."""
        return self.loaded.head == "classifier"

    @property
    def labels(self) -> tuple[str, ...]:
        return next((a.labels for a in self.adapters if a.labels), ()) or tuple(
            f"label {i}" for i in range(getattr(self.loaded.model.config, "num_labels", 2))
        )

    def template(self, target: str) -> Template | None:
        """The template ``target`` was trained with (None for the base model and bare adapter folders)."""
        return next((a.template for a in self.adapters if a.name == target), None)

    @property
    def targets(self) -> list[str]:
        """What a request can generate with: the base model, then each adapter."""
        return [BASE, *(a.name for a in self.adapters)]

    @classmethod
    def load(
        cls,
        model: str,
        adapters: list[str] | None = None,
        runs_dir: str | Path | None = None,
        superweights: str | Path | None = None,
        data: str | Path | None = None,
        limits: Limits | None = None,
        threads: int = 1,
    ) -> AppState:
        """Load the model and adapters (once, for the life of the server) and the side data."""
        from superlora.app.e2e_form import e2e_slot_values
        from superlora.models import load_model

        runs = Path(runs_dir).expanduser() if runs_dir else None
        if runs is not None and not runs.is_dir():
            raise SuperloraError(f"--runs: folder not found: {runs}")
        if superweights and not Path(superweights).expanduser().is_file():
            raise SuperloraError(f"--superweights: file not found: {superweights}")
        wanted = [_describe_adapter(path) for path in adapters or []]  # fail fast, before the model loads
        _unique_names(wanted)
        loaded = load_model(model, **_head_for(wanted))
        peft_model = _attach(loaded, wanted) if wanted else None
        state = cls(
            loaded,
            wanted,
            peft_model,
            e2e_slot_values(data),  # the E2E form's dropdowns
            runs,
            read_superweights(superweights, loaded),
            limits or Limits(),
            threads,
        )
        state.warm_up()
        return state

    def warm_up(self) -> None:
        """Pay the one-off costs (line-end token scan, first forward) before the first request."""
        from superlora.evaluation.decode import line_end_ids

        if not self.classifier:
            line_end_ids(self.loaded.tokenizer)
        ids = torch.tensor([self.loaded.tokenizer("Hello")["input_ids"]])
        with self.use(BASE) as model, torch.inference_mode():
            model(input_ids=ids)

    @contextmanager
    def use(self, target: str) -> Iterator[nn.Module]:
        """Hold the lock and yield the model (a plain transformers model) with ``target`` active."""
        if target not in self.targets:
            raise InputError(f"unknown model '{target}'; choose one of {', '.join(self.targets)}")
        with self.lock:
            if torch.get_num_threads() != self.threads:  # per calling thread (OpenMP settings are)
                torch.set_num_threads(self.threads)
            if self.peft_model is None:
                yield self.loaded.model
            elif target == BASE:
                with self.peft_model.disable_adapter():
                    yield self.loaded.model
            else:
                self.peft_model.set_adapter(target)
                yield self.loaded.model

    def identify_now(self) -> SuperWeights:
        """Run super-weight identification on the base model (held under the lock) and keep the table."""
        from superlora.identify import IdentifyConfig, identify
        from superlora.identify.report import weight_record

        cfg = IdentifyConfig(model=self.loaded.name, plots=False)
        with self.use(BASE) as model:
            loaded = LoadedModel(model, self.loaded.tokenizer, self.loaded.arch, self.loaded.name, self.loaded.source)
            result = identify(loaded, cfg)
        rows = [_row(weight_record(sw), bool(sw.proof.get("proven"))) for sw in result.candidates]
        self.superweights = SuperWeights(rows, f"identified in the app in {result.seconds:.1f} s")
        return self.superweights


# -----------------------------------------------------------------------------
# Adapters


def _describe_adapter(path: str | Path) -> Adapter:
    from superlora.evaluation.decode import resolve_adapter

    folder = resolve_adapter(path)
    from superlora.training.rundir import open_run, run_of_adapter

    run = run_of_adapter(folder)
    name = re.sub(r"[^\w.-]+", "_", (run or folder).resolve().name) or "adapter"
    task = template = None
    head, labels = "lm", ()
    if run is not None and (run / "run.json").is_file():
        found = open_run(run)
        task, template = found.task().name, found.template()
        head, labels = (found.meta or {}).get("head", "lm"), tuple((found.meta or {}).get("labels", ()))
    return Adapter(name=name, folder=folder, run=run, task=task, template=template, head=head, labels=labels)


def _head_for(adapters: list[Adapter]) -> dict:
    """How to load the base for these adapters: with a classification head when they are classifiers."""
    heads = {a.head for a in adapters}
    if len(heads) > 1:
        raise SuperloraError(
            "these adapters mix classification and generation runs; serve them separately (one base model each)"
        )
    if heads == {"classifier"}:
        counts = {len(a.labels) for a in adapters if a.labels}
        if len(counts) > 1:
            raise SuperloraError("these classification adapters have different label counts; serve them separately")
        return {"head": "classifier", "num_labels": counts.pop() if counts else 2}
    return {}


def _unique_names(adapters: list[Adapter]) -> None:
    """Adapter names label outputs and select the adapter, so they must differ (and not be 'base')."""
    seen = {BASE}
    for adapter in adapters:
        name, n = adapter.name, 2
        while name in seen:
            name, n = f"{adapter.name}-{n}", n + 1
        adapter.name = name
        seen.add(name)


def _attach(loaded: LoadedModel, adapters: list[Adapter]) -> nn.Module:
    """Wrap the base model with every adapter under its name (peft multi-adapter), each checked against the base
    it was trained on (``training.adapters``: the same check as evaluate and merge)."""
    from superlora.training.adapters import load_adapter
    from superlora.training.rundir import base_fingerprint

    fingerprint = base_fingerprint(loaded.model)
    peft_model = None
    for adapter in adapters:
        peft_model = load_adapter(loaded.model, adapter.folder, loaded.name, fingerprint, adapter.name, peft_model)
    peft_model.eval()
    return peft_model


# -----------------------------------------------------------------------------
# Super-weight reports


def _row(record: dict, proven: bool) -> dict:
    return {
        "coordinate": record["coordinate"],
        "block": record["block"],
        "out": record["out_channel"],
        "in": record["in_channel"],
        "value": round(float(record["value"]), 4),
        "ppl x": round(float(record.get("ppl_ratio", float("nan"))), 3),
        "proven": proven,
    }


def default_report_paths(model: str) -> list[Path]:
    """Where ``superlora identify`` writes a model's report (committed results first)."""
    safe = re.sub(r"[^\w.-]+", "_", Path(model).name if Path(model).exists() else model)
    return [Path(top) / "identify" / safe / "superweights.json" for top in ("results", "runs")]


def read_superweights(path: str | Path | None, loaded: LoadedModel) -> SuperWeights:
    """The report given, or the model's report found in results/ or runs/; empty if none fits."""
    from superlora.identify.ablation import parse_coord

    candidates = [Path(path).expanduser()] if path else default_report_paths(loaded.name)
    for candidate in candidates:
        if not candidate.is_file():
            if path:
                raise SuperloraError(f"--superweights: file not found: {candidate}")
            continue
        try:
            report = json.loads(candidate.read_text(encoding="utf-8"))
            records = [(r, True) for r in report.get("super_weights", [])]
            records += [(r, False) for r in report.get("rejected_candidates", [])]
            for record, _ in records:
                parse_coord(record["coordinate"], loaded.arch)  # shapes must fit this model
        except (OSError, ValueError, KeyError, TypeError, SuperloraError) as exc:
            if path:
                raise SuperloraError(f"--superweights {candidate}: not a report for this model ({exc})") from None
            log.warning("ignoring %s: %s", candidate, exc)
            continue
        return SuperWeights([_row(r, proven) for r, proven in records], str(candidate))
    return SuperWeights([], "")
