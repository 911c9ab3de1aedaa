"""Environment for a local, offline server; must run before Gradio or the Hugging Face libraries
are imported, because they read these switches at import time."""

from __future__ import annotations

import os
from pathlib import Path


def offline_environment() -> None:
    """No analytics, no Hub calls, private temp folders (setdefault: the caller may have chosen).

    The cache folder is superlora's (``$SUPERLORA_CACHE`` or ``~/.cache/superlora``), computed here
    rather than imported, since importing ``superlora.models`` would load transformers first.
    """
    cache_root = Path(os.environ.get("SUPERLORA_CACHE") or Path.home() / ".cache" / "superlora")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_TEMP_DIR", str(cache_root / "gradio"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache_root / "matplotlib"))
