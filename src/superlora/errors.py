"""The one exception type users see as a single line instead of a traceback."""


class SuperloraError(Exception):
    """A problem the user can fix (bad input, missing file, offline Hub).

    The CLI catches it, prints ``superlora: error: <message>`` on one line and exits with
    status 2, so messages must be self-contained: say what was wrong and where.
    """
