"""Matplotlib figures for the page. ``Figure`` objects, not pyplot: requests run in threads, and
pyplot's global figure registry is neither thread-safe nor freed without ``plt.close``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def activation_figure(
    max_out: list[float],
    residual: list[float],
    max_out_scaled: list[float] | None = None,
    residual_scaled: list[float] | None = None,
    label: str = "",
    marked_block: int | None = None,
) -> Figure:
    """Per block: the MLP projection's max |output| and the residual stream's max |h|, as is and scaled."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (
        (axes[0], max_out, max_out_scaled, list(range(len(max_out))), "MLP output projection: max |output|", "block"),
        (
            axes[1],
            residual,
            residual_scaled,
            list(range(len(residual))),
            "residual stream: max |h|",
            "0 = embeddings, k = after block k-1",
        ),
    )
    for ax, values, scaled, x, title, xlabel in panels:
        ax.plot(x, values, marker="o", ms=3, label="model as is")
        if scaled is not None and scaled != values:
            ax.plot(x, scaled, marker="o", ms=3, label=label or "weight scaled")
        if marked_block is not None:
            ax.axvline(marked_block + (1 if ax is axes[1] else 0), color="tab:red", ls=":", lw=1)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def loss_figure(curves: dict[str, list[dict]], title: str = "training loss", with_lr: bool = False) -> Figure:
    """Loss against step for each run's log; with ``with_lr`` (one run) the learning rate beside it."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    single = with_lr and len(curves) == 1
    axes = fig.subplots(1, 2 if single else 1)
    loss_ax = axes[0] if single else axes
    for name, records in curves.items():
        steps = [r["step"] for r in records if r.get("loss") is not None]
        loss_ax.plot(steps, [r["loss"] for r in records if r.get("loss") is not None], marker="o", ms=2, label=name)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(title, fontsize=10)
    loss_ax.grid(alpha=0.3)
    if curves:
        loss_ax.legend(fontsize=8)
    if single:
        records = next(iter(curves.values()))
        lr = [(r["step"], r["lr"]) for r in records if r.get("lr") is not None]
        axes[1].plot([s for s, _ in lr], [v for _, v in lr], color="tab:orange")
        axes[1].set_xlabel("step")
        axes[1].set_title("learning rate", fontsize=10)
        axes[1].grid(alpha=0.3)
    return fig
