"""The E2E NLG restaurant data: meaning representations (MRs), references and prompts.

Each example pairs an MR such as ``name[The Vaults], eatType[pub], near[Café Adriatic]``
with one human reference sentence; several rows share one MR. Two variants exist:

* ``original``: the 2017 challenge release (Novikova et al.), columns ``mr, ref``.
* ``cleaned``: the re-annotated release (Dušek et al. 2019), columns
  ``mr, ref, fixed, orig_mr``. Its MRs describe what each reference really says, so a
  slot may repeat (``eatType[pub], eatType[restaurant]``) and ``name`` may be missing.
  ``parse_mr_pairs`` accepts that; ``parse_mr`` (a dict) rejects repeated slots.

Data come from a local folder holding ``original/`` and ``cleaned/`` or, as a fallback,
from the Hugging Face Hub (see ``load_split``).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from superlora.data.shapes import Completion
from superlora.data.templates import CompletionTemplate
from superlora.data.tokenize import tokenize_completion
from superlora.errors import SuperloraError, quote

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SLOTS: tuple[str, ...] = (
    "name",
    "eatType",
    "food",
    "priceRange",
    "customer rating",
    "area",
    "familyFriendly",
    "near",
)
SPLITS: tuple[str, ...] = ("train", "validation", "test")
VARIANTS: tuple[str, ...] = ("original", "cleaned")
E2E_DIR_ENV = "SUPERLORA_E2E_DIR"

# Where each split lives inside a local data folder.
SPLIT_FILES: dict[str, dict[str, str]] = {
    "original": {
        "train": "original/trainset.csv",
        "validation": "original/devset.csv",
        "test": "original/testset_w_refs.csv",
    },
    "cleaned": {
        "train": "cleaned/train-fixed.no-ol.csv",
        "validation": "cleaned/devel-fixed.no-ol.csv",
        "test": "cleaned/test-fixed.csv",
    },
}
# The Hub copies (fields meaning_representation, human_reference). "tuetschek/e2e_nlg"
# is the original release (42,061 / 4,672 / 4,693 rows); the cleaned one is separate
# and has no orig_mr column.
HUB_DATASETS: dict[str, str] = {
    "original": "tuetschek/e2e_nlg",
    "cleaned": "tuetschek/e2e_nlg_cleaned",
}

PROMPT_TEMPLATE = "Meaning representation: {mr}\nDescription:"

# One "slot[value]" and the comma or end that follows it; spaces around parts are allowed.
_PAIR = re.compile(r"\s*([^\[\],]*?)\s*\[([^\[\]]*)\]\s*(,|\Z)")


# -----------------------------------------------------------------------------
# Meaning representations


def _quote(text: str) -> str:
    return quote(text)


def _brackets_balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch == "[":
            if depth:
                return False
            depth = 1
        elif ch == "]":
            if not depth:
                return False
            depth = 0
    return depth == 0


def parse_mr_pairs(text: str) -> list[tuple[str, str]]:
    """Split an MR into (slot, value) pairs in order, allowing a slot to repeat.

    The cleaned data repeat a slot when a reference mentions two values, so loading
    validates with this. Anything else malformed raises ValueError with a reason.
    """
    if not text.strip():
        raise ValueError("empty MR")
    pairs = []
    pos = 0
    while True:
        m = _PAIR.match(text, pos)
        if m is None:
            if not _brackets_balanced(text):
                raise ValueError(f"unbalanced brackets in MR {_quote(text)}")
            raise ValueError(f"malformed MR {_quote(text)}, expected 'slot[value], ...'")
        slot, value = m.group(1), m.group(2).strip()
        if slot not in SLOTS:
            what = f"unknown slot {_quote(slot)}" if slot else "missing slot name"
            raise ValueError(f"{what} in MR {_quote(text)}")
        if not value:
            raise ValueError(f"empty value for slot {_quote(slot)} in MR {_quote(text)}")
        pairs.append((slot, value))
        pos = m.end()
        if m.group(3) != ",":  # reached the end of the text
            return pairs


def parse_mr(text: str) -> dict[str, str]:
    """Parse an MR into an ordered slot -> value dict (ValueError if a slot repeats)."""
    slots: dict[str, str] = {}
    for slot, value in parse_mr_pairs(text):
        if slot in slots:
            raise ValueError(f"duplicate slot {_quote(slot)} in MR {_quote(text)}")
        slots[slot] = value
    return slots


def format_mr(slots: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Write slots back as ``slot[value], slot[value]`` in the given order.

    Inverse of ``parse_mr`` / ``parse_mr_pairs``: every MR in the E2E files round-trips.
    """
    pairs = slots.items() if isinstance(slots, Mapping) else slots
    return ", ".join(f"{slot}[{value}]" for slot, value in pairs)


# -----------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class E2EExample:
    """One (MR, reference) row.

    ``orig_mr`` is the MR the reference was collected for (equal to ``mr`` in the
    original data); multi-reference scoring groups by it.
    """

    mr: str
    ref: str
    orig_mr: str


def load_split(split: str, variant: str = "cleaned", source: str | Path | None = None) -> list[E2EExample]:
    """Load one split, validating every row so bad data fail early with file and line.

    ``source`` is a folder holding ``original/`` and ``cleaned/``; if None, the folder in
    $SUPERLORA_E2E_DIR is used, and failing that the Hugging Face Hub.
    """
    if split not in SPLITS:
        raise SuperloraError(f"unknown E2E split {split!r}; choose one of {', '.join(SPLITS)}")
    if variant not in VARIANTS:
        raise SuperloraError(f"unknown E2E variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if source is not None:
        return _load_local(Path(source), split, variant, origin="")
    if os.environ.get(E2E_DIR_ENV):
        return _load_local(Path(os.environ[E2E_DIR_ENV]), split, variant, origin=f" (from {E2E_DIR_ENV})")
    return _load_hub(split, variant)


def _load_local(root: Path, split: str, variant: str, origin: str) -> list[E2EExample]:
    root = root.expanduser()
    if not root.is_dir():
        raise SuperloraError(f"E2E data folder not found: {root}{origin}; it should hold original/ and cleaned/")
    path = root / SPLIT_FILES[variant][split]
    if not path.is_file():
        raise SuperloraError(f"E2E {variant} {split} file not found: {path}")
    return _read_csv(path, with_orig_mr=variant == "cleaned")


def _read_csv(path: Path, with_orig_mr: bool) -> list[E2EExample]:
    """Read an E2E csv; errors name the physical line where the bad record starts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuperloraError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SuperloraError(f"{path} line {line}: not valid UTF-8") from None

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise SuperloraError(f"{path}: file is empty")
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        needed = ["mr", "ref"] + (["orig_mr"] if with_orig_mr else [])
        missing = [name for name in needed if name not in columns]
        if missing:
            raise SuperloraError(
                f"{path} line 1: missing column {', '.join(missing)} (header is {_quote(','.join(header))})"
            )
        i_mr, i_ref = columns["mr"], columns["ref"]
        i_orig = columns["orig_mr"] if with_orig_mr else i_mr

        examples = []
        checked: set[str] = set()  # MRs repeat across rows; parse each once
        last_line = reader.line_num
        for row in reader:
            # A quoted reference may span lines: the record starts after the last one.
            line, last_line = last_line + 1, reader.line_num
            if not row:  # blank line
                continue
            where = f"{path} line {line}"
            if len(row) != len(header):
                raise SuperloraError(f"{where}: expected {len(header)} fields, got {len(row)}")
            examples.append(_make_example(row[i_mr], row[i_ref], row[i_orig], where, checked))
    except csv.Error as exc:
        raise SuperloraError(f"{path} line {reader.line_num}: bad CSV: {exc}") from None
    return examples


def _make_example(mr: str, ref: str, orig_mr: str, where: str, checked: set[str]) -> E2EExample:
    for column, text in (("mr", mr), ("orig_mr", orig_mr)):
        if text in checked:
            continue
        try:
            parse_mr_pairs(text)
        except ValueError as exc:
            suffix = " (orig_mr column)" if column == "orig_mr" else ""
            raise SuperloraError(f"{where}: {exc}{suffix}") from None
        checked.add(text)
    if not ref.strip():
        raise SuperloraError(f"{where}: empty reference")
    return E2EExample(mr=mr, ref=ref, orig_mr=orig_mr)


def _hub_rows(repo: str, split: str) -> list[tuple[str, str]]:
    """(MR, reference) rows of one Hub split, or a SuperloraError pointing to local data."""
    import datasets  # slow to import, and only this fallback needs it

    error: Exception | None = None
    # datasets >= 4 refuses repos that still hold a loading script; the Hub's automatic
    # parquet export of such a repo is the way to read them, hence the second try.
    for revision in (None, "refs/convert/parquet"):
        try:
            ds = datasets.load_dataset(repo, split=split, revision=revision)
            break
        except Exception as exc:  # offline, unreachable, or unloadable: all mean "use local"
            error = exc
    else:
        raise SuperloraError(
            f"cannot load {repo} ({split}) from the Hugging Face Hub "
            f"({type(error).__name__}); pass --data /path/to/e2e or set {E2E_DIR_ENV} "
            "to a folder holding original/ and cleaned/"
        ) from error
    fields = ("meaning_representation", "human_reference")
    if any(field not in ds.column_names for field in fields):
        raise SuperloraError(f"{repo} ({split}) on the Hub has columns {ds.column_names}, expected {', '.join(fields)}")
    return list(zip(ds[fields[0]], ds[fields[1]], strict=True))


def _load_hub(split: str, variant: str) -> list[E2EExample]:
    repo = HUB_DATASETS[variant]
    rows = _hub_rows(repo, split)
    orig_mrs = [mr for mr, _ in rows]
    if variant == "cleaned" and split == "test":
        # The Hub's cleaned test set lacks orig_mr, which scoring groups by. Its rows are
        # the original test rows in the same order (same references, re-annotated MRs),
        # so take orig_mr from there after checking that the references line up.
        original = _hub_rows(HUB_DATASETS["original"], "test")
        if len(original) != len(rows) or any(
            ref != orig_ref for (_, ref), (_, orig_ref) in zip(rows, original, strict=False)
        ):
            raise SuperloraError(
                f"the Hub's cleaned and original E2E test sets do not line up, so orig_mr "
                f"cannot be recovered; pass --data /path/to/e2e or set {E2E_DIR_ENV}"
            )
        orig_mrs = [mr for mr, _ in original]
    # For cleaned train/validation the Hub has no orig_mr; mr stands in (grouping only).
    checked: set[str] = set()
    return [
        _make_example(mr, ref, orig_mr, f"{repo} ({split}) row {i}", checked)
        for i, ((mr, ref), orig_mr) in enumerate(zip(rows, orig_mrs, strict=True), start=1)
    ]


# -----------------------------------------------------------------------------
# Views used for evaluation


def group_references(examples: Iterable[E2EExample]) -> list[tuple[str, list[str]]]:
    """(MR, all its references) in first-appearance order, one entry per scored output.

    Groups by ``orig_mr``: in the cleaned test set references of one original MR carry
    different cleaned MRs, yet the official scoring treats them as one multi-reference item.
    """
    groups: dict[str, list[str]] = {}
    for ex in examples:
        groups.setdefault(ex.orig_mr, []).append(ex.ref)
    return list(groups.items())


def slot_values(examples: Iterable[E2EExample]) -> dict[str, list[str]]:
    """Sorted distinct values of each slot seen in the examples' MRs, slots in SLOTS order."""
    seen: dict[str, set[str]] = {}
    for mr in {ex.mr for ex in examples}:
        for slot, value in parse_mr_pairs(mr):
            seen.setdefault(slot, set()).add(value)
    return {slot: sorted(seen[slot]) for slot in SLOTS if slot in seen}


# -----------------------------------------------------------------------------
# Prompts and tokenization for a causal LM: a completion template (the same prompt as before the task layer)

TEMPLATE = CompletionTemplate(
    prompt_format=PROMPT_TEMPLATE.replace("{mr}", "{prompt}"), target_prefix=" ", one_line=True
)


def build_prompt(mr: str) -> str:
    """The text the model is conditioned on; it continues with the reference."""
    return TEMPLATE.prompt_text(mr)


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, mr: str) -> list[int]:
    """Prompt ids exactly as training sees them; generation must start from the same ids."""
    return TEMPLATE.prompt_ids(tokenizer, mr)


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, mr: str, ref: str, max_length: int = 256
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels for one example, with loss on the reference (and eos) only."""
    return tokenize_completion(tokenizer, TEMPLATE, Completion(mr, ref), max_length)
