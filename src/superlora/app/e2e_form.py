"""The E2E form's logic (free of Gradio): an MR from slot values, its descriptions, their slot check.

The one place of the app that knows the E2E task; the generic tabs ask the task of a run instead.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from superlora.app.generate import room
from superlora.app.limits import InputError
from superlora.app.state import AppState
from superlora.errors import SuperloraError
from superlora.tasks.e2e.data import SLOTS, TEMPLATE, format_mr, tokenize_prompt

log = logging.getLogger("superlora.app")

# Used when no E2E data folder is given: the values of the E2E data, a few venues per name slot.
FALLBACK_VALUES: dict[str, list[str]] = {
    "name": ["Alimentum", "Aromi", "Blue Spice", "Cotto", "Fitzbillies", "Giraffe", "The Eagle", "The Vaults", "Zizzi"],
    "eatType": ["coffee shop", "pub", "restaurant"],
    "food": ["Chinese", "English", "Fast food", "French", "Indian", "Italian", "Japanese"],
    "priceRange": ["cheap", "less than £20", "moderate", "£20-25", "high", "more than £30"],
    "customer rating": ["low", "1 out of 5", "average", "3 out of 5", "high", "5 out of 5"],
    "area": ["city centre", "riverside"],
    "familyFriendly": ["yes", "no"],
    "near": ["Burger King", "Café Adriatic", "Café Rouge", "Clare Hall", "Raja Indian Cuisine", "The Portland Arms"],
}


def e2e_slot_values(data: str | Path | None) -> dict[str, list[str]]:
    """Slot values of the E2E training data (``data`` or $SUPERLORA_E2E_DIR), else a built-in list.

    Never falls back to the Hub: the app must start offline without waiting on the network.
    """
    from superlora.tasks.e2e.data import E2E_DIR_ENV, load_split, slot_values

    source = data or os.environ.get(E2E_DIR_ENV)
    if not source:
        return {slot: list(values) for slot, values in FALLBACK_VALUES.items()}
    started = time.perf_counter()
    try:
        values = slot_values(load_split("train", "cleaned", source))
    except SuperloraError as exc:
        if data:  # asked for explicitly: say so
            raise
        log.warning("E2E data unavailable (%s); using the built-in slot values", exc)
        return {slot: list(values) for slot, values in FALLBACK_VALUES.items()}
    log.info("E2E slot values from %s in %.1f s", source, time.perf_counter() - started)
    return {slot: values.get(slot, FALLBACK_VALUES[slot]) for slot in FALLBACK_VALUES}


@dataclass
class E2EOutput:
    """One model's description of an MR and its slot-error check."""

    target: str
    output: str
    missing: list[str]
    wrong: list[str]
    added: list[str]
    seconds: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("output", "missing", "wrong", "added")} | {
            "seconds": round(self.seconds, 3)
        }


def build_mr(values: Mapping[str, str | None], state: AppState) -> str:
    """The MR string of the filled slots, in the E2E slot order; empty slots are left out."""
    pairs = []
    for slot in SLOTS:
        value = (values.get(slot) or "").strip()
        if not value:
            continue
        if len(value) > state.limits.max_value_chars:
            raise InputError(
                f"value of {slot} is too long: {len(value)} characters (the limit is {state.limits.max_value_chars})"
            )
        if any(ch in value for ch in "[],\n"):
            raise InputError(f"value of {slot} may not contain '[', ']', ',' or a line break: {value!r}")
        pairs.append((slot, value))
    if not pairs:
        raise InputError("fill at least one slot")
    return format_mr(pairs)


def e2e_generate(
    state: AppState,
    mr: str,
    targets: Sequence[str] | None = None,
    num_beams: int = 4,
    length_penalty: float = 0.9,
    max_new_tokens: int = 64,
) -> list[E2EOutput]:
    """Beam-search a description of ``mr`` with each target (the base model and adapters), then check slots."""
    from superlora.evaluation.decode import DecodeConfig, generate
    from superlora.tasks.e2e.ser import check_output

    targets = list(targets) if targets else state.targets
    unknown = [t for t in targets if t not in state.targets]
    if unknown:
        raise InputError(f"unknown model {unknown[0]!r}; choose from {', '.join(state.targets)}")
    if not math.isfinite(float(length_penalty)):
        raise InputError("length penalty must be a finite number")
    limits = state.limits
    prompt_tokens = len(tokenize_prompt(state.loaded.tokenizer, mr))
    new_tokens = room(state, prompt_tokens, limits.new_tokens(max_new_tokens, limits.max_e2e_new_tokens))
    config = DecodeConfig(
        num_beams=limits.beams(num_beams),
        length_penalty=float(length_penalty),
        max_new_tokens=new_tokens,
        batch_size=1,
    )
    results = []
    for target in targets:
        started = time.perf_counter()
        with state.use(target) as model:
            output = generate(model, state.loaded.tokenizer, [mr], config, TEMPLATE)[0]
        check = check_output(mr, output)
        results.append(
            E2EOutput(target, output, check.missing, check.wrong, check.added, time.perf_counter() - started)
        )
    return results
