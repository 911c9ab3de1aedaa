"""Reading what ``superlora score`` compares: an E2E reference CSV and a system's outputs.

Outputs come as the challenge's TSV (header ``MR<TAB>output``, any row order, matched to the
references by MR; a comma-separated file with such a header works too, as in the official scorer)
or as plain text, one output per line in the references' MR order. Like the
official scorer, TSV/CSV text is repaired for the common mojibake of "£" and "é".
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from superlora.errors import SuperloraError, quote

# Column names the official scorer recognises (regexes from its documentation, matched at the start).
_MR_HEADER = re.compile(r"(mr|src|source|meaning(?:[_ .-]rep(?:resentation)?)?|da|dial(?:ogue)?[_ .-]act)s?$", re.I)
_OUT_HEADER = re.compile(r"(out(?:put)?|ref(?:erence)?|sys(?:tem)?(?:[_ .-](?:out(?:put)?|ref(?:erence)?))?)s?$", re.I)
_MOJIBAKE = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))


def fix_mojibake(text: str) -> str:
    """Undo the encoding accidents the official scorer repairs in TSV/CSV input."""
    for bad, good in _MOJIBAKE:
        text = text.replace(bad, good)
    return text


@dataclass
class ScoringSet:
    """Outputs paired with their references, in the order outputs are scored."""

    mrs: list[str]
    refs: list[list[str]]
    hyps: list[str]


def _quote(text: str) -> str:
    return quote(text)


def read_references(path: str | Path) -> list[tuple[str, list[str]]]:
    """(MR, references) groups of an E2E CSV; grouped by ``orig_mr`` when the file has that column."""
    from superlora.tasks.e2e.data import _read_csv, group_references

    path = Path(path)
    if not path.is_file():
        raise SuperloraError(f"reference file not found: {path}")
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise SuperloraError(f"cannot read reference file {path}: {exc}") from None
    with_orig = "orig_mr" in {name.strip().lower() for name in header}
    groups = group_references(_read_csv(path, with_orig_mr=with_orig))
    return [(fix_mojibake(mr), [fix_mojibake(r) for r in refs]) for mr, refs in groups]


@dataclass
class Outputs:
    """System outputs; ``mrs`` is None for plain text (then order gives the pairing)."""

    texts: list[str]
    mrs: list[str] | None
    lines: list[int]  # physical line of each output, for error messages


def read_outputs(path: str | Path) -> Outputs:
    """Read a challenge TSV (header ``MR<TAB>output``; a CSV with such a header too) or plain text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SuperloraError(f"output file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise SuperloraError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise SuperloraError(f"cannot read output file {path}: {exc.strerror}") from None
    lines = text.splitlines()
    if not lines:
        raise SuperloraError(f"{path}: file is empty")
    # Like the official scorer: tab-separated if the first line has a tab, else comma-separated.
    delimiter = "\t" if "\t" in lines[0] else ","
    header = next(csv.reader([lines[0]], delimiter=delimiter))
    mr_cols = [i for i, name in enumerate(header) if _MR_HEADER.match(name.strip())]
    out_cols = [i for i, name in enumerate(header) if _OUT_HEADER.match(name.strip())]
    if len(mr_cols) == 1 and len(out_cols) == 1:
        return _read_table(path, lines, delimiter, header, mr_cols[0], out_cols[0])
    if delimiter == "\t":
        raise SuperloraError(
            f"{path} line 1: a TSV needs a header with one MR column and one output column "
            f"(e.g. 'MR<TAB>output'), got {_quote(lines[0])}"
        )
    # Plain text: every line is an output, blank lines included (an empty output is valid).
    return Outputs([line.strip() for line in lines], None, list(range(1, len(lines) + 1)))


def _read_table(path: Path, lines: list[str], delimiter: str, header: list[str], i_mr: int, i_out: int) -> Outputs:
    texts, mrs, numbers = [], [], []
    # Parse as one stream so quoted fields behave as in any TSV; blank lines are skipped.
    body = "\n".join(fix_mojibake(line) for line in lines[1:])
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    try:
        last = reader.line_num
        for row in reader:
            number, last = last + 2, reader.line_num  # +1 for the header, +1 for 1-based
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise SuperloraError(
                    f"{path} line {number}: expected {len(header)} tab-separated fields, got {len(row)}"
                )
            mrs.append(row[i_mr].strip())
            texts.append(row[i_out].strip())
            numbers.append(number)
    except csv.Error as exc:
        raise SuperloraError(f"{path} line {reader.line_num + 1}: bad table row: {exc}") from None
    return Outputs(texts, mrs, numbers)


def pair_outputs(groups: list[tuple[str, list[str]]], outputs: Outputs, where: str) -> ScoringSet:
    """Match outputs to reference groups: by MR for a TSV, by position for plain text."""
    if len(outputs.texts) != len(groups):
        raise SuperloraError(
            f"{where} has {len(outputs.texts)} outputs but the references have {len(groups)} MRs; "
            "give exactly one output per MR"
        )
    if outputs.mrs is None:
        return ScoringSet([mr for mr, _ in groups], [refs for _, refs in groups], list(outputs.texts))
    by_mr = dict(groups)
    seen: dict[str, int] = {}
    for mr, line in zip(outputs.mrs, outputs.lines, strict=True):
        if mr not in by_mr:
            raise SuperloraError(f"{where} line {line}: MR not in the references: {_quote(mr)}")
        if mr in seen:
            raise SuperloraError(f"{where} line {line}: MR already given on line {seen[mr]}: {_quote(mr)}")
        seen[mr] = line
    return ScoringSet(list(outputs.mrs), [by_mr[mr] for mr in outputs.mrs], list(outputs.texts))


def load_scoring_set(refs_path: str | Path, outputs_path: str | Path) -> ScoringSet:
    """References and outputs from files, checked and paired."""
    groups = read_references(refs_path)
    if not groups:
        raise SuperloraError(f"{refs_path}: no references to score against")
    return pair_outputs(groups, read_outputs(outputs_path), str(outputs_path))
