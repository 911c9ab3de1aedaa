"""The run directory: what a training run leaves behind, and how it survives ``kill -9``.

Layout of ``RUN/``::

    config.yaml        the resolved recipe (what was actually trained)
    run.json           base-model fingerprint, blocks, adapted modules, task, template, head, speed choices
    checkpoints/       checkpoint-N/ (adapter, optimiser, scheduler, RNG, trainer state)
    adapter/           the final adapter (peft, safetensors)
    log.jsonl          one line per logging step: loss, lr, tokens/s
    eval.jsonl         held-out loss and perplexity (tasks with held-out samples)
    tensorboard/       the same curves as TensorBoard events
    summary.json       wall time, tokens/s, peak RSS, trainable params

Everything is created by writing into a hidden sibling and renaming (atomic on one
filesystem), so a crash leaves either the old state or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from superlora.errors import SuperloraError

CHECKPOINTS = "checkpoints"
EVAL_LOG = "eval.jsonl"  # held-out loss and perplexity, one line per evaluation
STAGING = ".staging"  # inside checkpoints/: where a checkpoint is written before it is renamed into place
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def base_fingerprint(model: nn.Module) -> str:
    """A short hash of the base model's parameter names, shapes and a strided sample of values.

    Cheap (a few ms for 135M parameters), yet an adapter trained on one base is never
    silently merged into or resumed on another. A classification head that loading added is left out: the
    adapter carries its own trained copy.
    """
    h = hashlib.sha256()
    head = ()
    if getattr(model, "_superlora_head", None) == "classifier":  # a new head is not part of the base
        from superlora.models.loading import head_module_names

        head = tuple(f"{name}." for name in head_module_names(model))
    for name, param in model.named_parameters():
        if head and name.startswith(head):
            continue
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].to(torch.float64)
        h.update(f"{name}:{tuple(param.shape)}:".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def write_atomic(path: Path, writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_dir)`` then rename ``tmp_dir`` to ``path`` (replacing an old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the run should look like any folder
    try:
        writer(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` to ``dst``; an existing ``dst`` is moved aside first, then deleted."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def create_run_dir(run: Path, config: dict, meta: dict) -> None:
    """Create ``run`` with its config.yaml and run.json in one rename."""

    def fill(tmp: Path) -> None:
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        write_json(tmp / "run.json", meta)

    write_atomic(run, fill)


@dataclass
class RunFolder:
    """What a run folder holds, read in one place (``open_run``) for every verb and the app.

    ``config``/``meta`` are None only when read tolerantly (a run still being created, or a broken one).
    """

    path: Path
    config: dict | None
    meta: dict | None
    summary: dict | None
    log: list[dict]
    config_text: str = ""

    @property
    def adapter(self) -> Path | None:
        folder = self.path / "adapter"
        return folder if (folder / "adapter_config.json").is_file() else None

    def task_record(self) -> dict:
        """The run's task section (runs from before the task layer are E2E runs, their data keys in config)."""
        return (self.meta or {}).get("task") or _task_from_old_config(self.config or {})

    def task(self):
        """The task the run trained."""
        from superlora.tasks import task_from_record

        return task_from_record(self.task_record())

    def template(self):
        """The template the run trained with: recorded in run.json, else the task's."""
        from superlora.data.templates import from_record

        record = (self.meta or {}).get("template")
        return from_record(record) if record else self.task().template()


def _task_from_old_config(config: dict) -> dict:
    data = config.get("data") or {}
    return {"name": "e2e", **{k: data[k] for k in ("source", "variant", "split") if k in data}}


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def open_run(run: Path, strict: bool = True) -> RunFolder:
    """Read a run folder. Strict: a SuperloraError unless config.yaml and run.json are there and valid;
    tolerant (the app's runs table): whatever can be read, None for the rest."""
    run = Path(run)
    config_path, meta_path = run / "config.yaml", run / "run.json"
    if strict:
        if not run.is_dir():
            raise SuperloraError(f"run directory not found: {run}")
        if not config_path.is_file() or not meta_path.is_file():
            raise SuperloraError(f"{run} is not a superlora run directory (no config.yaml/run.json)")
    try:
        config_text = config_path.read_text(encoding="utf-8")
        config = yaml.safe_load(config_text)
    except (OSError, yaml.YAMLError) as exc:
        if strict:
            raise SuperloraError(f"{config_path}: cannot read it ({exc})") from None
        config_text, config = f"# cannot read config.yaml: {exc}", None
    meta = _read_json(meta_path)
    if strict and meta is None:
        raise SuperloraError(f"{meta_path}: not a readable run.json")
    return RunFolder(
        path=run,
        config=config if isinstance(config, dict) else None,
        meta=meta,
        summary=_read_json(run / "summary.json"),
        log=read_log(run / "log.jsonl"),
        config_text=config_text,
    )


def run_of_adapter(folder: Path) -> Path | None:
    """The training run an adapter folder belongs to (``RUN/adapter``), or None for a bare adapter folder."""
    folder = Path(folder)
    parent = folder.parent
    return parent if folder.name == "adapter" and (parent / "config.yaml").is_file() else None


def read_run(run: Path) -> tuple[dict, dict]:
    """(config, meta) of an existing run, or a SuperloraError saying what is missing."""
    folder = open_run(run)
    return folder.config, folder.meta


def check_same_base(meta: dict, fingerprint: str, model_ref: str, run: Path) -> None:
    if meta.get("base_fingerprint") != fingerprint:
        raise SuperloraError(
            f"the adapter in {run} was trained on base model '{meta.get('model')}' "
            f"(fingerprint {meta.get('base_fingerprint')}), but '{model_ref}' is a different model "
            f"(fingerprint {fingerprint})"
        )


def latest_checkpoint(run: Path) -> Path | None:
    """The complete checkpoint with the highest step (staging leftovers are never candidates)."""
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def check_checkpoint(checkpoint: Path) -> None:
    """Read every file a resume will load, so a damaged or tampered checkpoint is one line before training starts.

    (A kill never leaves one: checkpoints appear by rename. A disk error or a hand edit can.)
    """
    from safetensors import safe_open
    from transformers.trainer_pt_utils import safe_globals  # what the Trainer allows in rng_state.pth

    earlier = sorted(
        (int(m.group(1)), p.name)
        for p in checkpoint.parent.iterdir()
        if (m := CHECKPOINT_RE.match(p.name)) and p != checkpoint
    )
    hint = f"delete it to resume from {earlier[-1][1]}" if earlier else "start the run again"
    current = checkpoint / "trainer_state.json"
    try:
        json.loads(current.read_text(encoding="utf-8"))["global_step"]
        for current in sorted(checkpoint.glob("*.safetensors")):
            with safe_open(str(current), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    f.get_tensor(key)
        for current in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
            with safe_globals():
                torch.load(current, map_location="cpu", weights_only=True)
    except Exception as exc:  # JSON, safetensors, pickle and OS errors of a user's file all end here
        detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:200]
        raise SuperloraError(f"checkpoint {checkpoint} is damaged: {current.name}: {detail}; {hint}") from None


def clean_staging(run: Path) -> None:
    """Delete what a killed run was writing when it died."""
    shutil.rmtree(run / CHECKPOINTS / STAGING, ignore_errors=True)
    for leftover in run.glob(".*.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def truncate_log(path: Path, step: int) -> None:
    """Keep only log lines up to ``step``: the resumed run writes the later ones again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a line cut by the kill: everything after it is suspect too
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def read_log(path: Path) -> list[dict]:
    """The records of log.jsonl (or eval.jsonl); a line cut short by a running or killed trainer ends them."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def lock_path(run: Path) -> Path:
    """The run's lock file: beside the folder, so it exists before the folder does (a new run is created by rename)."""
    run = Path(run)
    return run.parent / f".{run.name}.lock"


@contextlib.contextmanager
def locked(run: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run`` for one training process; a second one gets a SuperloraError.

    ``flock`` is released by the kernel when its holder dies, so the lock of a killed run is stale by
    construction: the next process takes it (the pid in the file only serves the message).
    """
    path = lock_path(run)
    made_parent = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise SuperloraError(
                f"run directory {run} is in use by {holder}; wait for it to finish or choose another output_dir=..."
            ) from None
        try:  # the holder before us may have unlinked the file it locked: lock the one at the path
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"superlora train (pid {os.getpid()} on {socket.gethostname()})".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        if made_parent:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only if the failed run left it empty
