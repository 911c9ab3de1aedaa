"""The bench's arms: the reference recipe, superlora with every switch off, each switch alone, the recipe,
the recipe without each switch, and its thread-count and compile variants."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


SWITCHES = {
    "bf16": "bf16",
    "target_only_logits": "target-only",
    "group_by_length": "grouping",
    "fast_dropout": "16-bit dropout",
    "attention": "attn",
}
ARM_KEYS = {
    "bf16": "bf16",
    "target_only_logits": "target",
    "group_by_length": "group",
    "fast_dropout": "drop16",
    "attention": "attn",
}


@dataclass(frozen=True)
class Arm:
    """One configuration. ``speed`` None is the reference recipe, else the SpeedConfig fields to use;
    ``quantize`` a QLoRA base (``nf4``, ``int8``) under the same LoRA."""

    key: str
    name: str
    speed: dict[str, Any] | None
    quantize: str | None = None


QLORA_METHODS = ("nf4", "int8")


def qlora_arms(decided: dict[str, Any]) -> list[Arm]:
    """The recipe on a 4-bit and an 8-bit frozen base: what QLoRA costs or saves in speed and memory here."""
    return [Arm(method, f"recipe, QLoRA {method} base", decided, quantize=method) for method in QLORA_METHODS]


def standard_arms(recipe: dict[str, Any], decided: dict[str, Any], forced_bf16: bool) -> list[Arm]:
    """The reference, superlora with all switches off, each switch alone, and the recipe (plus variants).

    ``recipe`` is the recipe's speed section as written (``auto`` included: the recipe arm decides as a run
    would), ``decided`` the same with every ``auto`` decided on this machine. ``forced_bf16``: include the arm that
    forces bf16 (by default only where bf16 pays: on a CPU that emulates it, one such step takes minutes).
    """
    off = {"bf16": False, "target_only_logits": False, "group_by_length": False, "fast_dropout": False}
    off |= {"attention": "model"}
    off |= {"threads": None, "compile": False}
    arms = [Arm("ref", "reference: plain Trainer, fp32", None), Arm("off", "superlora, all switches off", off)]
    if forced_bf16:
        arms.append(Arm("bf16", "+ bf16 only", off | {"bf16": True}))
    arms += [
        Arm("target", "+ target-only logits only", off | {"target_only_logits": True}),
        Arm("group", "+ group_by_length only", off | {"group_by_length": True}),
        Arm("drop16", "+ 16-bit dropout only", off | {"fast_dropout": True}),
        Arm("eager", "+ eager attention only", off | {"attention": "eager"}),
        Arm("recipe", "superlora recipe (defaults)", recipe),
    ]
    for key, name in SWITCHES.items():  # leave one out: what each switch buys on top of the others
        if decided[key] != off[key]:
            label = f"recipe without {name}" if key != "attention" else f"recipe without {decided[key]} attention"
            arms.append(Arm(f"no-{ARM_KEYS[key]}", label, decided | {key: off[key]}))
    other = 1 if decided["threads"] > 1 else 2
    if other <= (os.cpu_count() or 1):
        arms.append(Arm("threads", f"recipe, threads={other}", decided | {"threads": other}))
    if not decided["compile"]:
        arms.append(Arm("compile", "recipe + torch.compile", decided | {"compile": True}))
    return arms
