"""Turning failures into messages in the page, so one bad request never takes the server down."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from superlora.errors import SuperloraError

log = logging.getLogger("superlora.app")


def _message(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, SuperloraError):  # refused input, bad coordinate: the user can fix it
        return gr.Error(str(exc), title="Refused")
    log.exception("request failed")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return gr.Error(f"generation failed: {detail}", title="Error", duration=None)  # stays until closed


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler; any exception becomes a gr.Error shown in the page (and the app keeps serving)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _message(exc) from None

    return wrapped


def guard_stream(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """``guard`` for a streaming (generator) handler."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from fn(*args, **kwargs)
        except Exception as exc:
            raise _message(exc) from None

    return wrapped
