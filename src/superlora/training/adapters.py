"""Loading a LoRA adapter onto a base model: the one place every verb (evaluate, merge, serve, study) does it.

An adapter only means something on the base it was trained on. ``superlora train`` writes that base's
fingerprint into the adapter folder itself (``superlora.json``) as well as into the run's ``run.json``, so an
adapter folder copied away from its run is still checked. Whatever goes wrong while reading the user's files
(a damaged safetensors file, shapes of another model) is one line that names the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superlora.errors import SuperloraError

BASE_RECORD = "superlora.json"  # inside the adapter folder: which base model it was trained on
_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, "
    r"the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)


def write_base_record(folder: Path, model: str, fingerprint: str, quantized: dict | None = None) -> None:
    """Record the base model next to the adapter's weights (called inside the adapter's atomic write).

    ``quantized`` (a QLoRA run's ``Quantized.to_dict()``) says how the base was quantised while the adapter
    learnt: whoever loads the adapter rebuilds that base, since the adapter corrects that base's rounding.
    """
    record = {"model": model, "base_fingerprint": fingerprint, **({"quantized": quantized} if quantized else {})}
    (Path(folder) / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def base_record(folder: Path) -> tuple[dict | None, Path]:
    """What the adapter says about its base: its own record, else its run's run.json (older runs); and where."""
    from superlora.training import rundir

    folder = Path(folder)
    own = folder / BASE_RECORD
    if own.is_file():
        try:
            return json.loads(own.read_text(encoding="utf-8")), own
        except ValueError:
            raise SuperloraError(f"{own}: not valid JSON (a damaged adapter folder?)") from None
    run = rundir.run_of_adapter(folder)
    if run is not None and (run / "run.json").is_file():
        return rundir.open_run(run).meta, run / "run.json"
    return None, own


def check_base(folder: Path, fingerprint: str, model_ref: str) -> bool:
    """Refuse an adapter trained on another base (``fingerprint``: ``rundir.base_fingerprint`` of the bare model);
    True when the base was checked, False when the adapter records none (a folder from another tool)."""
    record, where = base_record(folder)
    if not record or not record.get("base_fingerprint"):
        return False
    if record["base_fingerprint"] != fingerprint:
        raise SuperloraError(
            f"the adapter {folder} was trained on base model '{record.get('model')}' "
            f"(fingerprint {record['base_fingerprint']}, in {where}), but '{model_ref}' is a different model "
            f"(fingerprint {fingerprint})"
        )
    return True


def load_error(folder: Path, model_ref: str, exc: BaseException) -> SuperloraError:
    """The one line for an adapter that cannot be read or does not fit the model."""
    text = str(exc)
    sizes = _SIZE_MISMATCH.search(text)
    if sizes:
        name, theirs, ours = sizes.groups()
        return SuperloraError(
            f"the adapter {folder} does not fit '{model_ref}': {name} is {theirs} in the adapter but "
            f"{ours} in the model (it was trained on another base)"
        )
    if "Error(s) in loading state_dict" in text:
        return SuperloraError(f"the adapter {folder} does not fit '{model_ref}' (its weights name other layers)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return SuperloraError(f"cannot load adapter {folder} ({type(exc).__name__}: {first[:300]})")


def load_adapter(
    model: nn.Module,
    folder: Path,
    model_ref: str,
    fingerprint: str | None = None,
    name: str = "default",
    into: Any = None,
):
    """``folder``'s adapter on the bare ``model`` (or added to the PeftModel ``into`` under ``name``), its base
    checked first; ``fingerprint`` of the bare model saves hashing it again (it must be given with ``into``).

    A QLoRA adapter quantises the bare ``model`` in place as its run did (``quantize_like``) before attaching.
    """
    from peft import PeftModel

    from superlora.models.quantize import quantize_like
    from superlora.training import rundir

    folder = Path(folder)
    if fingerprint is None:
        if into is not None:
            raise ValueError("load_adapter(into=...) needs the bare base model's fingerprint")
        fingerprint = rundir.base_fingerprint(model)
    check_base(folder, fingerprint, model_ref)
    record = (base_record(folder)[0] or {}).get("quantized")
    current = getattr(model, "_superlora_quantized", None)
    if into is not None and (record or {}).get("method") != current:
        raise SuperloraError(
            f"the adapter {folder} was trained on a {(record or {}).get('method', 'full-precision')} base, the "
            f"others here on a {current or 'full-precision'} one; serve them separately"
        )
    quantize_like(model, record)
    try:
        if into is None:
            wrapped = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
        else:
            into.load_adapter(str(folder), adapter_name=name)
            wrapped = into
    except Exception as exc:  # a user's file: safetensors, JSON, shapes, missing keys all end here
        raise load_error(folder, model_ref, exc) from None
    check_finite_adapter(wrapped, name, folder)
    return wrapped


def check_finite_adapter(model: nn.Module, name: str, folder: Path) -> None:
    """Refuse an adapter with NaN or inf weights (a diverged run of an older superlora, or another tool's)."""
    for param_name, param in model.named_parameters():
        if f".{name}." in f"{param_name}." and "lora_" in param_name and not torch.isfinite(param).all():
            raise SuperloraError(f"the adapter {folder} has non-finite weights ({param_name}); it cannot be used")
