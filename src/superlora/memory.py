"""Resident-memory readings that mean what they say: the peak of *this* piece of work, not of the process."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
from pathlib import Path


def _status_kib(field_name: str) -> float:
    text = Path("/proc/self/status").read_text() if Path("/proc/self/status").is_file() else ""
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def rss_mb() -> float:
    """Resident memory now."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident memory since the process started or since :func:`reset_peak_rss`.

    VmHWM, not ``ru_maxrss``: ru_maxrss survives execve (a child would report its parent's peak) and cannot
    be reset (a second piece of work in the same process would report the first one's peak).
    """
    peak = _status_kib("VmHWM")
    if peak != peak:  # no /proc (not Linux): the lifetime peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak / 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next piece of work starts from a clean RSS."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
