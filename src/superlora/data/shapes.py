"""The three shapes a training sample can take; every task's rows become one of them.

The shape decides the loss mask (TRL's rule): a completion trains on its completion, a conversation on
its assistant turns, a labeled text on its label. ``data/`` knows no dataset; ``tasks/`` fills these.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Completion:
    """A prompt and the continuation the model learns (E2E: MR -> description)."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str


@dataclass(frozen=True)
class Conversation:
    """Turns in order: an optional system message, then user and assistant turns, ending with the assistant."""

    messages: tuple[Message, ...]

    def as_dicts(self) -> list[dict[str, str]]:
        """The form ``tokenizer.apply_chat_template`` takes."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True)
class Labeled:
    """A text and its class label (classification tasks)."""

    text: str
    label: int


Sample = Completion | Conversation | Labeled
