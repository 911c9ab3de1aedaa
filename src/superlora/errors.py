"""The one exception type users see as a single line instead of a traceback, and how its messages quote input."""

from __future__ import annotations

import json

QUOTE_LIMIT = 80  # characters of a user's value quoted in a message: enough to recognise it, never 100 KB


class SuperloraError(Exception):
    """A problem the user can fix (bad input, missing file, offline Hub).

    The CLI catches it, prints ``superlora: error: <message>`` on one line and exits with
    status 2, so messages must be self-contained: say what was wrong and where.
    """


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` quoted for a one-line message: newlines escaped, cut after ``limit`` characters (length said)."""
    if len(text) <= limit:
        return json.dumps(text, ensure_ascii=False)
    return json.dumps(text[:limit], ensure_ascii=False)[:-1] + f'..." ({len(text):,} characters)'
