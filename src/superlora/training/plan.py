"""Validation of a training run: everything that can be wrong is found before the run directory exists.

``plan_run`` checks the recipe against the model, the task's data and the run directory (a resume must
match the run's config and base model) and returns what training needs, already built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from superlora.config import load_config, to_dict
from superlora.data.collate import TokenizedRows
from superlora.errors import SuperloraError
from superlora.tasks import get_task
from superlora.training import rundir
from superlora.training.config import TrainConfig
from superlora.training.layers import default_targets, select_blocks, superweight_coordinates, target_module_names

if TYPE_CHECKING:
    from superlora.data.templates import Template
    from superlora.models import LoadedModel
    from superlora.tasks.base import Task

# Keys that may change when resuming: they do not affect what is computed (beyond float rounding).
RESUMABLE_CHANGES = {
    "resume",
    "output_dir",
    "log_every",
    "checkpoint.every",
    "checkpoint.keep",
    "speed.target_only_logits",
    "speed.attention",
    "speed.threads",
    "speed.compile",
}


def resolve_device(setting: str) -> str:
    """``device``: auto is CUDA when a GPU is visible, else the CPU; asking for CUDA without one is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise SuperloraError("device=cuda, but torch sees no CUDA GPU (use device=auto or device=cpu)")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def build_dataset(cfg: TrainConfig, tokenizer: Any, task: Task | None = None) -> TokenizedRows:
    """The task's training samples, tokenized with its template and loss mask."""
    task = task or get_task(cfg.task)
    rows, dropped = task.tokenize_all(
        tokenizer, task.template(), task.train_samples(cfg.data.limit), cfg.data.max_length
    )
    return TokenizedRows(rows, dropped)


@dataclass
class Plan:
    """A validated run: the resolved config and everything built from it."""

    cfg: TrainConfig
    run: Path
    loaded: LoadedModel
    fingerprint: str
    blocks: list[int]
    targets: list[str]
    dataset: TokenizedRows
    resume_from: Path | None
    task: Task
    template: Template
    heldout: list = dataclasses.field(default_factory=list)  # tokenized rows for the validation loss
    probe: dict | None = None  # layers: probe: its steps and every block's score (recorded in run.json)
    protected: tuple[str, ...] = ()  # keep_superweights: the super weights the quantised base holds exactly


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def plan_run(cfg: TrainConfig) -> Plan:
    """Validate ``cfg`` against the model, data and run directory; raise SuperloraError on any problem."""
    from superlora.models import load_model

    run = Path(cfg.output_dir)
    stored: tuple[dict, dict] | None = None
    if cfg.resume:
        if not run.exists():
            raise SuperloraError(f"nothing to resume: run directory {run} does not exist (drop --resume to start it)")
        stored = rundir.read_run(run)
    elif run.exists() and any(run.iterdir()):
        raise SuperloraError(
            f"run directory {run} already exists; pass --resume (resume=true) to continue it, "
            "or choose another output_dir=..."
        )
    task = get_task(cfg.task)
    task.check()
    if cfg.layers == "none" and task.head != "classifier":
        raise SuperloraError(
            f"layers: none trains only a classification head, and task {task.name} has none; choose blocks to adapt"
        )
    if cfg.superweights is not None and not Path(cfg.superweights).is_file():
        raise SuperloraError(f"superweights: file not found: {cfg.superweights}")
    resolve_device(cfg.device)

    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, **task.model_kwargs())
    positions = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(
        loaded.model.config, "n_positions", None
    )
    if positions and cfg.data.max_length > positions:
        raise SuperloraError(
            f"data.max_length={cfg.data.max_length} exceeds the {positions} positions of {cfg.model}; "
            f"set data.max_length={positions} or less"
        )
    fingerprint = rundir.base_fingerprint(loaded.model)
    if stored is not None:
        old_cfg, meta = stored
        if old_cfg.get("model") != cfg.model:
            raise SuperloraError(
                f"the adapter in {run} was trained on base model '{old_cfg.get('model')}', "
                f"but the config now says model={cfg.model}"
            )
        rundir.check_same_base(meta, fingerprint, cfg.model, run)
        blocks, count = meta["blocks"], old_cfg.get("count")  # not re-identified: the run's own choice
    else:
        blocks, count = select_blocks(cfg, loaded)
    targets = cfg.lora.targets or default_targets(loaded.arch)
    cfg = dataclasses.replace(cfg, count=count, lora=dataclasses.replace(cfg.lora, targets=targets))
    if stored is not None:  # the stored recipe with today's defaults for keys added since it was written
        old = to_dict(load_config(TrainConfig, None, None, defaults=stored[0]))
        changed = [k for k in config_changes(old, to_dict(cfg)) if k not in RESUMABLE_CHANGES]
        if changed:
            raise SuperloraError(
                f"cannot resume {run}: the config differs from the run's config.yaml in {', '.join(changed)}"
            )
    template = task.template()
    dataset = build_dataset(cfg, loaded.tokenizer, task)
    if len(dataset) == 0:
        raise SuperloraError(
            "the training data is empty"
            + (
                f" ({dataset.dropped} samples had no target token within data.max_length={cfg.data.max_length})"
                if dataset.dropped
                else ""
            )
        )
    probe = None
    if stored is None and cfg.layers == "probe":
        from superlora.training.probe import probe_blocks

        pad = template.pad_id(loaded.tokenizer)
        blocks, scores = probe_blocks(cfg, loaded, dataset.rows, pad, count, targets)
        probe = {"steps": cfg.probe_steps, "scores": scores}
    module_names = target_module_names(loaded.model, loaded.arch, blocks, targets) if blocks else []
    protected = superweight_coordinates(cfg, loaded) if cfg.keep_superweights else ()
    heldout, _ = task.tokenize_all(loaded.tokenizer, template, task.heldout_samples(), cfg.data.max_length)
    resume_from = rundir.latest_checkpoint(run) if cfg.resume else None
    if resume_from is not None:
        rundir.check_checkpoint(resume_from)
    return Plan(
        cfg,
        run,
        loaded,
        fingerprint,
        blocks,
        module_names,
        dataset,
        resume_from,
        task,
        template,
        heldout,
        probe=probe,
        protected=protected,
    )


def batch_rows(plan: Plan) -> int:
    """Tokens in a typical batch (batch size x median example length): the rows of the step's matmuls."""
    lengths = sorted(len(row["input_ids"]) for row in plan.dataset.rows[:2000])
    return plan.cfg.optim.batch_size * lengths[len(lengths) // 2]
