"""``--format space``: a Hugging Face Space folder that serves the run's task on CPU, without superlora.

    app.py            the Gradio app: ``space_app.py`` of this package, copied (never imported here)
    prompt.json       how the run is prompted: template kind, prompt format or system prompt, stop strings,
                      pad id, and the task's decoding settings (``Task.decode_defaults``)
    requirements.txt  torch, transformers, gradio, safetensors: the release series installed here
    README.md         the Spaces header (sdk, sdk_version, app_file, ...) above the model card
    model/            the merged model (safetensors) and its tokenizer, carrying the run's chat template

The Space renders prompts itself, so everything superlora knows about the run's prompt is written down here:
a chat run's template goes into the saved tokenizer (``apply_chat_template`` then renders what training did),
and the stop strings are the Modelfile's (``modelfile.stop_strings``).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from superlora.data.templates import ChatTemplate, CompletionTemplate, Template
from superlora.errors import SuperloraError
from superlora.export.card import HUB_LICENSES, card_body, hub_base, task_dataset
from superlora.training.rundir import RunFolder

APP = Path(__file__).with_name("space_app.py")
REQUIREMENTS = ("torch", "transformers", "gradio", "safetensors")
# example inputs the app offers, by task (chat runs: none, the user types)
EXAMPLES = {"e2e": ["name[The Eagle], eatType[coffee shop], food[French], priceRange[moderate], near[Burger King]"]}


def installed(package: str) -> str:
    """The installed version without a local label (torch's ``+cpu``), or a one-line error."""
    try:
        return importlib.metadata.version(package).split("+", 1)[0]
    except importlib.metadata.PackageNotFoundError:
        raise SuperloraError(f"--format space pins the installed {package}, but {package} is not installed") from None


def requirements() -> str:
    """requirements.txt: each package in the release series installed here (``~=X.Y.Z``: X.Y.Z up to X.Y.*)."""
    return "".join(f"{name}~={installed(name)}\n" for name in REQUIREMENTS)


def check(folder: RunFolder) -> None:
    """What a space export needs beyond the merge, before any work: a run that generates text (a completion or
    chat template on a causal LM), its task's decoding, the versions to pin."""
    task, template = folder.task(), folder.template()
    if getattr(task, "head", "lm") != "lm" or not isinstance(template, (CompletionTemplate, ChatTemplate)):
        raise SuperloraError(
            f"--format space serves text generation; task {task.name} does not generate "
            f"({getattr(task, 'head', 'lm')} head, {template.kind} template): export --format safetensors instead"
        )
    task.decode_defaults()
    for name in REQUIREMENTS:
        installed(name)


def prompt_settings(folder: RunFolder, template: Template, tokenizer: Any, base: str) -> dict[str, Any]:
    """prompt.json: what the app needs to prompt, stop and decode as ``superlora evaluate`` does."""
    from superlora.export.modelfile import stop_strings

    task = folder.task_record().get("name", "?")
    decode = folder.task().decode_defaults()
    shown_base = hub_base(base) or Path(base).name  # a public Space need not show this machine's paths
    settings: dict[str, Any] = {"task": task, "kind": template.kind}
    if isinstance(template, CompletionTemplate):
        # the prompt alone: the target prefix (E2E's " ") begins the completion's first trained token
        settings["prompt_format"] = template.prompt_format
    else:
        settings["system"] = template.system
    return settings | {
        "stop_strings": stop_strings(template, tokenizer),
        "pad_token_id": template.pad_id(tokenizer),
        "decode": {
            "num_beams": decode.num_beams,
            "length_penalty": decode.length_penalty,
            "no_repeat_ngram_size": decode.no_repeat_ngram_size,
            "max_new_tokens": decode.max_new_tokens,
        },
        "title": folder.path.name,
        "description": f"superlora run {folder.path.name}: {task}, a LoRA merged into {shown_base}",
        "examples": EXAMPLES.get(task, []) if template.kind == "completion" else [],
    }


def header(folder: RunFolder, base: str) -> dict[str, Any]:
    """The Spaces configuration block (README front matter)."""
    task = folder.task_record().get("name", "?")
    front: dict[str, Any] = {
        "title": folder.path.name,
        "emoji": "🦙",
        "colorFrom": "indigo",
        "colorTo": "purple",
        "sdk": "gradio",
        "sdk_version": installed("gradio"),
        "app_file": "app.py",
        "pinned": False,
        "short_description": f"{task}: a superlora LoRA fine-tune"[:60],  # the Hub's limit
        "tags": ["superlora", "lora", task],
    }
    if base in HUB_LICENSES:
        front["license"] = HUB_LICENSES[base]
    if hub_base(base):
        front["models"] = [hub_base(base)]
    if task_dataset(folder):
        front["datasets"] = [task_dataset(folder)]
    return front


def readme(folder: RunFolder, dtype: str | None, files: list[str], base: str) -> str:
    front = yaml.safe_dump(header(folder, base), sort_keys=False, allow_unicode=True).strip()
    return "\n".join(["---", front, "---", ""]) + "\n" + card_body(folder, "space", dtype, files, base)


def fill(tmp: Path, folder: RunFolder, tokenizer: Any, base: str, save_model: Callable[[Path], None]) -> None:
    """Write the Space into ``tmp`` (all but README.md); ``save_model(dir)`` saves the merged model and
    ``tokenizer`` there."""
    template = folder.template()
    if isinstance(template, ChatTemplate):
        tokenizer.chat_template = template.jinja(tokenizer)  # the run's own (``chatml``, a recipe's), not the base's
    save_model(tmp / "model")
    settings = prompt_settings(folder, template, tokenizer, base)
    (tmp / "prompt.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "requirements.txt").write_text(requirements(), encoding="utf-8")
    shutil.copyfile(APP, tmp / "app.py")
