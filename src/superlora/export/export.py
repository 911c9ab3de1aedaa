"""What ``superlora export`` does, in order: every check that can fail before any work, then one atomic write.

1. The run: it exists, has a final adapter; the output folder is new or empty; the format/dtype pair makes
   sense; with ``--push-to-hub`` the Hub is reachable. For GGUF, the base model's architecture is read from
   its config (no weights) and refused unless the writer supports it. For a Space, the run's template and
   task are read and the packages its requirements.txt pins are found.
2. The merge, in memory and in fp32, into the base (a QLoRA run's dequantised: ``training.merge.merged_model``).
3. The output folder is filled in a hidden sibling and renamed into place (``rundir.write_atomic``): a
   failure or a kill leaves no half-written file. GGUF exports read their tokenizer back from the file before
   the rename, so a tokenizer that would cut text differently is an error, not a file.
4. The upload, when asked (to a Space repository for ``--format space``).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superlora.errors import SuperloraError
from superlora.training import rundir

FORMATS = ("safetensors", "gguf", "adapter", "space")
DTYPES = ("f32", "f16", "bf16", "q8_0")
DEFAULT_DTYPE = {"gguf": "f16", "safetensors": None, "adapter": None, "space": None}  # None: the base's dtype
# what the GGUF's tokenizer must reproduce, id for id: words, digits, punctuation, spaces, line breaks, non-ASCII
PROBE_TEXT = (
    "name[The Eagle], eatType[coffee shop], priceRange[£20-25], near[Burger King]\n"
    "  The Eagle is a 3-star coffee shop near Burger King; it's moderately priced. Café: 1234567, ok?!  "
)


@dataclass
class Export:
    """A resolved export: where from, what, where to."""

    run: Path
    folder: rundir.RunFolder
    fmt: str
    dtype: str | None
    out: Path
    base: str  # the base model reference


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def plan(
    run: str | Path, fmt: str, dtype: str | None = None, out: str | Path | None = None, model: str | None = None
) -> Export:
    """Every check that needs no model: a SuperloraError before anything is loaded or written."""
    from superlora.training.merge import base_model_ref, check_mergeable, check_new_out

    run = Path(run)
    if fmt not in FORMATS:
        raise SuperloraError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = check_mergeable(run)
    if dtype is not None and dtype not in DTYPES:
        raise SuperloraError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if fmt in ("safetensors", "space") and dtype == "q8_0":
        what = "safetensors exports are" if fmt == "safetensors" else "a Space's merged model is"
        raise SuperloraError(f"q8_0 is a GGUF block format; {what} f32, f16 or bf16")
    if fmt == "adapter" and dtype is not None:
        raise SuperloraError("--dtype does not apply to --format adapter (the adapter is exported as trained)")
    dtype = dtype or DEFAULT_DTYPE[fmt]
    default = f"export-{fmt}" + (f"-{dtype}" if fmt == "gguf" else "")
    out = Path(out) if out is not None else run / default
    check_new_out(out)
    if fmt == "gguf" and (folder.meta or {}).get("head") == "classifier":
        raise SuperloraError(
            "GGUF holds causal language models (llama.cpp); this run trained a classification head: "
            "export --format safetensors instead"
        )
    if fmt == "space":
        from superlora.export import space

        space.check(folder)
    return Export(run=run, folder=folder, fmt=fmt, dtype=dtype, out=out, base=model or base_model_ref(folder.config))


def base_config(ref: str, meta: dict | None) -> Any | None:
    """The base model's transformers config, read from a local config.json only (no weights, no download);
    None when none is at hand (a Hub id not cached yet): the check then runs once the model is loaded."""
    from transformers import AutoConfig

    from superlora.models.aliases import ALIASES

    candidates = []
    if ref in ALIASES:
        candidates.append(Path(ALIASES[ref].cache_dir))
    candidates.append(Path(ref).expanduser())
    if (meta or {}).get("base_source"):
        candidates.append(Path(meta["base_source"]))
    for folder in candidates:
        if (folder / "config.json").is_file():
            try:
                return AutoConfig.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError):
                return None
    return None


def check_gguf_architecture(plan_: Export) -> None:
    from superlora.export.gguf_file import check_supported

    config = base_config(plan_.base, plan_.folder.meta)
    if config is not None:
        check_supported(config)


def verify_gguf_tokenizer(folder: Path, name: str, tokenizer: Any, extra: list[str]) -> None:
    """Read the tokenizer back from the GGUF file (as transformers does) and compare ids on probe texts."""
    from transformers import AutoTokenizer

    try:
        back = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    except Exception as exc:  # whatever the reader trips on, the file is not usable
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")[:200]
        raise SuperloraError(
            f"GGUF export: the written tokenizer cannot be read back ({type(exc).__name__}: {first})"
        ) from None
    for text in [PROBE_TEXT, *extra]:
        ours, theirs = tokenizer(text)["input_ids"], back(text)["input_ids"]
        if list(ours) != list(theirs):
            pairs = enumerate(zip(ours, theirs, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
            raise SuperloraError(
                f"GGUF export: the file's tokenizer splits text differently from the model's (first difference at "
                f"token {at} of a probe text); nothing was written"
            )


def _chat_probe(template: Any, tokenizer: Any) -> list[str]:
    """A rendered conversation, so special tokens are checked too (chat runs)."""
    from superlora.data.templates import ChatTemplate

    if not isinstance(template, ChatTemplate):
        return []
    messages = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]
    return [template.render(tokenizer, template.with_system(messages))]


def write(plan_: Export, merged: Any, loaded: Any, base_dtype: Any) -> Path:
    """Fill ``plan_.out`` atomically with the export of the merged model (or the adapter)."""
    import torch

    from superlora.export import space
    from superlora.export.card import model_card

    tokenizer = loaded.tokenizer if loaded is not None else None

    def save_merged(folder: Path) -> None:
        """The merged model in safetensors, in the export's dtype, with its tokenizer."""
        target = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}.get(plan_.dtype, base_dtype)
        merged.to(target)
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    def fill(tmp: Path) -> None:
        if plan_.fmt == "adapter":
            for item in sorted((plan_.run / "adapter").iterdir()):
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
        elif plan_.fmt == "safetensors":
            save_merged(tmp)
        elif plan_.fmt == "space":
            space.fill(tmp, plan_.folder, tokenizer, plan_.base, save_merged)
        else:
            _fill_gguf(plan_, merged, tokenizer, tmp)
        files = sorted(p.name for p in tmp.iterdir())
        if plan_.fmt == "space":
            card = space.readme(plan_.folder, plan_.dtype, files, plan_.base)
        else:
            card = model_card(plan_.folder, plan_.fmt, plan_.dtype, files, plan_.base)
        (tmp / "README.md").write_text(card, encoding="utf-8")

    rundir.write_atomic(plan_.out, fill)
    return plan_.out


def _fill_gguf(plan_: Export, merged: Any, tokenizer: Any, tmp: Path) -> None:
    from superlora.data.templates import ChatTemplate
    from superlora.export.gguf_file import write_gguf
    from superlora.export.modelfile import modelfile_text

    template = plan_.folder.template()
    chat_template = (
        template.jinja(tokenizer) if isinstance(template, ChatTemplate) else getattr(tokenizer, "chat_template", None)
    )
    name = f"{safe_name(plan_.run.name)}-{plan_.dtype}.gguf"
    write_gguf(
        merged,
        tokenizer,
        tmp / name,
        plan_.dtype,
        name=plan_.run.name,
        description=f"superlora run {plan_.run.name}: LoRA merged into {plan_.base}",
        chat_template=chat_template,
    )
    verify_gguf_tokenizer(tmp, name, tokenizer, _chat_probe(template, tokenizer))
    text = modelfile_text(template, tokenizer, name, safe_name(plan_.run.name))
    (tmp / "Modelfile").write_text(text, encoding="utf-8")


def export(
    run: str | Path,
    fmt: str,
    dtype: str | None = None,
    out: str | Path | None = None,
    model: str | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
) -> tuple[Path, str | None]:
    """Export run ``run``; return (the output folder, the Hub commit URL or None)."""
    from superlora.export import hub

    plan_ = plan(run, fmt, dtype, out, model)
    if push_to_hub:
        hub.check_push(push_to_hub)
    merged = loaded = base_dtype = None
    if plan_.fmt == "gguf":
        check_gguf_architecture(plan_)
    if plan_.fmt != "adapter":
        from superlora.export.gguf_file import check_supported
        from superlora.training.merge import merged_model

        merged, loaded, base_dtype = merged_model(plan_.run, model)
        if plan_.fmt == "gguf":
            check_supported(merged.config)  # again: a base whose config was not at hand before loading
            from superlora.export.gguf_vocab import backend_json, pre_tokenizer_name

            pre_tokenizer_name(backend_json(loaded.tokenizer))  # a tokenizer GGUF cannot hold: before writing
    folder = write(plan_, merged, loaded, base_dtype)
    repo_type = "space" if plan_.fmt == "space" else "model"
    url = hub.push(folder, push_to_hub, private, repo_type) if push_to_hub else None
    return folder, url
