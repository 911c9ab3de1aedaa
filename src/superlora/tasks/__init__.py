"""Tasks, registered by name: a recipe's ``task: {name: ...}`` section chooses one (did-you-mean included).

A new task is one module with a config dataclass (whose ``name`` field is its registry key) and a Task
class, plus a line in ``TASKS`` and in ``TaskSection``.
"""

from __future__ import annotations

import difflib
import importlib

from superlora.errors import SuperloraError
from superlora.tasks.chat import ChatConfig
from superlora.tasks.dialogsum import DialogSumConfig
from superlora.tasks.e2e.config import E2EConfig
from superlora.tasks.sst2 import Sst2Config

# name -> "module:Task class"; imported on use so a config check stays light
TASKS: dict[str, str] = {
    "e2e": "superlora.tasks.e2e.task:E2ETask",
    "chat": "superlora.tasks.chat:ChatTask",
    "dialogsum": "superlora.tasks.dialogsum:DialogSumTask",
    "sst2": "superlora.tasks.sst2:Sst2Task",
}
TaskSection = E2EConfig | ChatConfig | DialogSumConfig | Sst2Config  # the recipe's ``task:``; the first is the default
DefaultTask = E2EConfig  # what a recipe without ``task:`` trains (superlora's first task)


def get_task(cfg: TaskSection):
    """The Task object for a config section."""
    name = cfg.name
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SuperloraError(f"unknown task {name!r}{hint}; choose from {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


def task_from_record(record: dict | None):
    """The task a run recorded in run.json (runs from before the task layer are E2E runs)."""
    from superlora.config import section

    return get_task(section(TaskSection, dict(record or {"name": "e2e"}), "run.json", "task"))
