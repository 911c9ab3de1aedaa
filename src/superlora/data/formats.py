"""Row formats -> conversations, and the files they come in; every bad row is one line with file and line.

Formats (the three shapes instruction data ship in):

* ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}`` (FineTome, GSM8K here)
* ``messages``: ``{"messages": [{"role": "user"|"assistant"|"system", "content": ...}]}`` (OpenAI)
* ``alpaca``: ``{"instruction", "input", "output"}`` (one user turn, instruction and input joined by a blank line)

Files: ``.jsonl``, ``.json`` (an array of rows), ``.csv`` (sharegpt/messages columns hold JSON text), ``.parquet``;
or a Hugging Face Hub dataset id when no such file exists (read with ``datasets``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from superlora.data.shapes import Conversation, Message
from superlora.errors import SuperloraError

RowFormat = Literal["auto", "sharegpt", "messages", "alpaca"]
FORMATS: tuple[str, ...] = ("sharegpt", "messages", "alpaca")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
OPENAI_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def detect_format(row: dict[str, Any]) -> str:
    """The format a row is in, by its keys."""
    if "conversations" in row:
        return "sharegpt"
    if "messages" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise ValueError(
        f"cannot tell the row format from its keys {sorted(row)} (expected conversations, messages "
        "or instruction/output)"
    )


def _turns(value: Any, key: str) -> list:
    if isinstance(value, str):  # CSV cells hold JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"'{key}' is not a JSON list of turns") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{key}' must be a non-empty list of turns")
    return value


def _conversation(messages: list[Message]) -> Conversation:
    roles = [m.role for m in messages]
    if "system" in roles[1:]:
        raise ValueError(f"a system turn may only come first (turn {roles.index('system', 1) + 1})")
    if "assistant" not in roles:
        raise ValueError("the conversation has no assistant turn")
    if roles[-1] != "assistant":
        raise ValueError(f"the conversation ends with a {roles[-1]} turn, not the assistant")
    return Conversation(tuple(messages))


def _message(turn: Any, n: int, role_key: str, text_key: str, roles: dict[str, str]) -> Message:
    if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
        raise ValueError(f"turn {n} must be an object with '{role_key}' and '{text_key}'")
    role = roles.get(str(turn[role_key]).strip().lower())
    if role is None:
        raise ValueError(f"turn {n}: unknown role {turn[role_key]!r} (expected one of {', '.join(sorted(roles))})")
    text = turn[text_key]
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"turn {n} ({role}) is empty")
    return Message(role, text)


def to_conversation(row: dict[str, Any], fmt: str) -> Conversation:
    """One row as a Conversation; ValueError with the reason when it is malformed."""
    if not isinstance(row, dict):
        raise ValueError("a row must be an object")
    if fmt == "auto":
        fmt = detect_format(row)
    if fmt == "sharegpt":
        turns = _turns(row.get("conversations"), "conversations")
        return _conversation([_message(t, n, "from", "value", SHAREGPT_ROLES) for n, t in enumerate(turns, 1)])
    if fmt == "messages":
        turns = _turns(row.get("messages"), "messages")
        return _conversation([_message(t, n, "role", "content", OPENAI_ROLES) for n, t in enumerate(turns, 1)])
    if fmt == "alpaca":
        instruction, extra, output = (row.get(k) for k in ("instruction", "input", "output"))
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("empty 'instruction'")
        if not isinstance(output, str) or not output.strip():
            raise ValueError("empty 'output'")
        prompt = instruction if not isinstance(extra, str) or not extra.strip() else f"{instruction}\n\n{extra}"
        return Conversation((Message("user", prompt), Message("assistant", output)))
    raise ValueError(f"unknown format {fmt!r} (choose from auto, {', '.join(FORMATS)})")


# -----------------------------------------------------------------------------
# Files: (where, row) pairs, ``where`` naming file and line for error messages


def _json_array(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise SuperloraError(f"{path} line 1: a .json file must hold an array of rows (or use .jsonl)")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise SuperloraError(f"{path}: the JSON array is not closed")
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            row, pos = decoder.raw_decode(text, pos)
        except ValueError as exc:
            raise SuperloraError(f"{path} line {line}: invalid JSON ({exc.msg})") from None
        yield f"{path} line {line}", row


def read_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """The rows of a local file, each with where it is (file and line, or row for parquet)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path} row {i}", row
        return
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise SuperloraError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SuperloraError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    if suffix == ".jsonl":
        # split on "\n" only: str.splitlines also breaks at U+2028 and other separators inside JSON strings
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield f"{path} line {n}", json.loads(line)
            except ValueError as exc:
                raise SuperloraError(f"{path} line {n}: invalid JSON ({exc.msg})") from None
    elif suffix == ".json":
        yield from _json_array(text, path)
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        last = 1
        try:
            for row in reader:
                yield f"{path} line {last + 1}", row
                last = reader.line_num
        except csv.Error as exc:
            raise SuperloraError(f"{path} line {reader.line_num}: bad CSV: {exc}") from None
    else:
        raise SuperloraError(f"{path}: unknown file type {suffix!r} (use {', '.join(SUFFIXES)})")


def hub_rows(repo: str, split: str) -> Iterator[tuple[str, Any]]:
    """Rows of a Hub dataset split; offline or unknown, one line saying so."""
    import datasets

    try:
        ds = datasets.load_dataset(repo, split=split)
    except Exception as exc:  # offline, unreachable, unknown: the user's fix is the same
        raise SuperloraError(
            f"{repo}: no such local file, and the Hugging Face Hub dataset cannot be loaded "
            f"({type(exc).__name__}); give a .jsonl/.json/.csv/.parquet path"
        ) from None
    for i, row in enumerate(ds, start=1):
        yield f"{repo} ({split}) row {i}", row


def load_conversations(source: str, fmt: str = "auto", split: str = "train") -> list[Conversation]:
    """Every row of ``source`` (a file, or a Hub dataset id) as a Conversation, validated row by row."""
    path = Path(source).expanduser()
    if path.is_file():
        rows = read_rows(path)
    elif path.suffix.lower() in SUFFIXES or path.exists() or source.startswith((".", "/", "~")):
        raise SuperloraError(f"chat data file not found: {source}")
    else:
        rows = hub_rows(source, split)
    conversations = []
    for where, row in rows:
        try:
            conversations.append(to_conversation(row, fmt))
        except ValueError as exc:
            raise SuperloraError(f"{where}: {exc}") from None
    if not conversations:
        raise SuperloraError(f"{source}: no rows")
    return conversations
