"""Server-side caps on what a request may ask for.

The browser's sliders stop at these values, but the API can be called directly, so every handler
checks again here: an over-long input is refused with a message, and token counts are clamped.
"""

from __future__ import annotations

from dataclasses import dataclass

from superlora.errors import SuperloraError


class InputError(SuperloraError):
    """A request the app refuses; the message is shown in the page as it is."""


@dataclass(frozen=True)
class Limits:
    """Caps on one request. Defaults keep a 135M model on 2 CPU cores answering within seconds."""

    max_input_chars: int = 2000  # a chat message, a system prompt, an explorer prompt
    max_value_chars: int = 80  # one E2E slot value
    max_input_tokens: int = 1024  # the whole templated conversation
    max_new_tokens: int = 256  # chat and explorer
    max_e2e_new_tokens: int = 128  # one E2E description
    max_beams: int = 8
    max_history_turns: int = 20  # older chat turns are dropped first
    concurrency: int = 1  # model requests run at once (they share one lock anyway)
    queue_size: int = 64  # waiting requests beyond this are turned away

    def text(self, value: str | None, what: str, required: bool = True) -> str:
        """``value`` stripped; refused when empty (if required) or longer than the cap."""
        value = (value or "").strip()
        if required and not value:
            raise InputError(f"{what} is empty")
        if len(value) > self.max_input_chars:
            raise InputError(f"{what} is too long: {len(value)} characters (the limit is {self.max_input_chars})")
        return value

    def new_tokens(self, requested: float | int | None, cap: int | None = None) -> int:
        """Requested new tokens clamped to [1, cap]; the API may send anything."""
        cap = cap or self.max_new_tokens
        try:
            value = int(requested) if requested is not None else cap
        except (TypeError, ValueError):
            raise InputError(f"max new tokens must be a number, got {requested!r}") from None
        return max(1, min(value, cap))

    def beams(self, requested: float | int | None) -> int:
        try:
            value = int(requested) if requested is not None else 1
        except (TypeError, ValueError):
            raise InputError(f"beam size must be a number, got {requested!r}") from None
        return max(1, min(value, self.max_beams))
