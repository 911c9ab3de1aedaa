"""The sweep's files: quantize.json (everything), table.md (perplexity by block size), a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WRITTEN_BY = "superlora quantize"


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per block size, one column per kept set, each cell the perplexity and its ratio to fp32."""
    base = result["ppl_fp32"]
    keeps = list(dict.fromkeys(r["label"] for r in result["records"]))
    blocks = sorted({r["block"] for r in result["records"]})
    cell = {(r["block"], r["label"]): r["ppl"] for r in result["records"]}
    head = ["block"] + [f"{result['method']}, {k}" for k in keeps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for block in blocks:
        values = [cell.get((block, k)) for k in keeps]
        lines.append(
            f"| {block} | " + " | ".join("-" if v is None else f"{v:.3f} ({v / base:.3f}x)" for v in values) + " |"
        )
    kept = {r["keep"]: r["kept"] for r in result["records"] if r["kept"]}
    notes = [
        f"`{result['model']}`, fp32 perplexity {base:.3f} over {result['tokens']:,} tokens "
        f"({', '.join(f'{n} {k}' for k, n in result['passages'].items())} passages of up to {result['max_tokens']} "
        f"tokens); every linear layer of the {result['num_blocks']} blocks rounded to 4 bits ({result['method']}), "
        "embeddings and head in full precision.",
    ]
    notes += [f"keep {name}: {', '.join(coords)}" for name, coords in kept.items()]
    if result.get("note"):
        notes.append(result["note"])
    return "\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label in dict.fromkeys(r["label"] for r in result["records"]):
        rows = sorted((r["block"], r["ppl"]) for r in result["records"] if r["label"] == label)
        ax.plot([b for b, _ in rows], [p for _, p in rows], marker="o", label=label)
    ax.axhline(result["ppl_fp32"], color="grey", linestyle="--", label="fp32")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("block size (values per scale)")
    ax.set_ylabel("perplexity (held-out passages)")
    ax.set_title(f"{result['model']}: 4-bit {result['method']} by block size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict[str, Any], folder: Path) -> None:
    """Fill ``folder`` (a staging folder renamed into place by the caller)."""
    (folder / "quantize.json").write_text(json.dumps({"written_by": WRITTEN_BY, **result}, indent=1) + "\n")
    (folder / "table.md").write_text(table(result), encoding="utf-8")
    plot(result, folder / "ppl_vs_block.png")


def is_own_output(folder: Path) -> bool:
    try:
        return json.loads((folder / "quantize.json").read_text(encoding="utf-8")).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False
