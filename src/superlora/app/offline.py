"""Environment for a local, offline server; must run before Gradio or the Hugging Face libraries
are imported, because they read these switches at import time."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = "SUPERLORA_GRADIO_TEMP"  # the private Gradio folder a superlora process made (children inherit it)
_private_temp: str | None = None  # the one this process made and removes at exit


def offline_environment() -> None:
    """No analytics, no Hub calls, a private Gradio temp folder (setdefault: the caller may have chosen).

    The cache folder is superlora's (``$SUPERLORA_CACHE`` or ``~/.cache/superlora``), computed here
    rather than imported, since importing ``superlora.models`` would load transformers first.
    """
    cache_root = Path(os.environ.get("SUPERLORA_CACHE") or Path.home() / ".cache" / "superlora")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MPLCONFIGDIR", str(cache_root / "matplotlib"))
    private_gradio_temp()


def private_gradio_temp() -> str:
    """Point Gradio's upload and cache folder at a fresh folder only this user can read, removed at exit.

    Gradio's default (``/tmp/gradio``) is shared and outlives the server. A folder the user chose in
    ``$GRADIO_TEMP_DIR`` is kept and never removed; one inherited from a parent superlora process is
    replaced, since the parent removes it when it exits. Removal runs at interpreter exit, which Ctrl+C
    and (while serving) SIGTERM reach; see ``ui.launch``.
    """
    global _private_temp
    chosen = os.environ.get("GRADIO_TEMP_DIR")
    if _private_temp is None and (not chosen or chosen == os.environ.get(TEMP_MARK)):
        _private_temp = tempfile.mkdtemp(prefix="superlora-gradio-")  # mode 0700
        os.environ["GRADIO_TEMP_DIR"] = os.environ[TEMP_MARK] = _private_temp
        atexit.register(remove_private_temp)
    return os.environ["GRADIO_TEMP_DIR"]


def remove_private_temp() -> None:
    """Delete the folder ``private_gradio_temp`` made, with whatever was uploaded or cached in it."""
    if _private_temp is not None:
        shutil.rmtree(_private_temp, ignore_errors=True)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt in the main thread, where Gradio's wait loop (or uvicorn, for
    ``serve --api-only``) stops the server cleanly; without it the process dies on the spot and exit
    handlers (the temp folder's removal) never run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
