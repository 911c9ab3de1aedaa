"""The model card (``README.md``) written into every export: what it is, what it came from, how it scored.

The Hub reads its YAML front matter (base model, library, tags, datasets); the text repeats what a reader
needs without the run folder: base model, task and data, the adapter's blocks and rank, and the metrics of
every ``superlora evaluate`` report found in the run (``RUN/eval-*/scores.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from superlora.training.rundir import RunFolder

# datasets on the Hub for the tasks' built-in data (front matter `datasets:`)
TASK_DATASETS = {"e2e": {"original": "tuetschek/e2e_nlg", "cleaned": "tuetschek/e2e_nlg_cleaned"}}
HUB_BASES = {  # the Hub ids of the built-in aliases' models
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
}


def run_scores(run: Path) -> dict[str, dict[str, Any]]:
    """report folder name -> its metrics, for every evaluate report inside the run."""
    found = {}
    for path in sorted(Path(run).glob("eval-*/scores.json")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8")).get("metrics")
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict) and metrics:
            found[path.parent.name] = metrics
    return found


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# licences of the built-in aliases' models, for a Space's header (`license:`); other bases: none claimed
HUB_LICENSES = {"smollm2-135m": "apache-2.0", "gemma3-270m": "gemma", "qwen2.5-1.5b": "apache-2.0"}


def hub_base(base: str) -> str | None:
    """The Hub id of base model ``base``: a built-in alias's, or ``base`` itself when it looks like one."""
    return HUB_BASES.get(base, base if "/" in base and not Path(base).exists() else None)


def task_dataset(folder: RunFolder) -> str | None:
    task = folder.task_record()
    return TASK_DATASETS.get(task.get("name", "?"), {}).get(task.get("variant", "cleaned"))


def front_matter(folder: RunFolder, fmt: str, base: str) -> dict[str, Any]:
    """The model card's YAML header: what the Hub indexes the export by."""
    task_name = folder.task_record().get("name", "?")
    library = {"adapter": "peft", "gguf": "gguf"}.get(fmt, "transformers")
    front: dict[str, Any] = {"library_name": library, "tags": ["superlora", "lora", task_name]}
    if hub_base(base):
        front["base_model"] = hub_base(base)
    if task_dataset(folder):
        front["datasets"] = [task_dataset(folder)]
    return front


def model_card(folder: RunFolder, fmt: str, dtype: str | None, files: list[str], base: str) -> str:
    """The README.md text of an export of run ``folder`` in format ``fmt``."""
    front = yaml.safe_dump(front_matter(folder, fmt, base), sort_keys=False).strip()
    return "\n".join(["---", front, "---", ""]) + "\n" + card_body(folder, fmt, dtype, files, base)


def card_body(folder: RunFolder, fmt: str, dtype: str | None, files: list[str], base: str) -> str:
    """The card's text below its header (a Space's README puts the Spaces header above it instead)."""
    meta, config = folder.meta or {}, folder.config or {}
    task = folder.task_record()
    task_name = task.get("name", "?")
    hub = hub_base(base)
    lora = config.get("lora") or {}
    blocks = meta.get("blocks") or []
    targets = ", ".join(lora.get("targets") or ["query/value"])
    data = " ".join(str(task[k]) for k in ("variant", "split") if task.get(k)) if task_name == "e2e" else ""
    what = {
        "safetensors": "the base model with the LoRA adapter merged in (safetensors; loads with transformers alone)",
        "gguf": f"the base model with the LoRA adapter merged in, as GGUF ({dtype}) for llama.cpp / Ollama",
        "adapter": "the LoRA adapter (peft; load it on the base model)",
        "space": "a Gradio app (app.py) serving the base model with the LoRA adapter merged in (model/, "
        "safetensors), prompted as the run was trained (prompt.json)",
    }[fmt]
    lines = [
        f"# {folder.path.name}",
        "",
        f"Exported by `superlora export --format {fmt}`: {what}.",
        "",
        f"- base model: `{base}`" + (f" ({hub})" if hub and hub != base else ""),
        f"- task: {task_name}" + (f", data: {data}" if data else ""),
        f"- LoRA: r={lora.get('r', '?')}, alpha={lora.get('alpha', '?')} on {targets} in {len(blocks)} block(s)"
        + (f" ({', '.join(map(str, blocks))})" if 0 < len(blocks) <= 8 else ""),
        f"- files: {', '.join(files)}",
    ]
    if folder.summary:
        steps = folder.summary.get("steps")
        if steps:
            lines.append(f"- trained for {steps} steps")
    scores = run_scores(folder.path)
    lines += ["", "## Scores", ""]
    if scores:
        for report, metrics in scores.items():
            lines.append(f"`{report}`: " + ", ".join(f"{k} {_number(v)}" for k, v in metrics.items()))
            lines.append("")
    else:
        lines += ["Not evaluated yet (`superlora evaluate --adapter RUN` writes the scores this card shows).", ""]
    if fmt == "gguf":
        lines += ["## Use", "", "```bash", "ollama create my-model -f Modelfile && ollama run my-model", "```", ""]
    if fmt == "space":
        lines += [
            "## Use",
            "",
            "```bash",
            "pip install -r requirements.txt && python app.py  # http://127.0.0.1:7860",
            "```",
            "",
            "Its API: `/generate` for a completion task (text in, text out), `/chat` for a chat run, e.g. "
            '`gradio_client.Client("http://127.0.0.1:7860/").predict(TEXT, api_name="/generate")`.',
            "",
        ]
    return "\n".join(lines)
