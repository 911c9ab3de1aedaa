"""Tab 3: the per-block activations of a prompt, the table of super weights, and a control that zeroes,
scales or restores one of them and regenerates greedily, so one watches the model break and recover."""

from __future__ import annotations

import gradio as gr

from superlora.app.generate import Exploration, explore
from superlora.app.plots import activation_figure
from superlora.app.state import BASE, AppState, SuperWeights
from superlora.app.tabs.common import guard

COLUMNS = ["coordinate", "block", "out", "in", "value", "ppl x", "proven"]
DEFAULT_PROMPT = "The capital of France is Paris, and"


def table(weights: SuperWeights) -> list[list]:
    return [[row[c] for c in COLUMNS] for row in weights.rows]


def source_text(weights: SuperWeights) -> str:
    if not weights.rows:
        return "No super-weight report for this model: press **Identify now** (or type a BLOCK:OUT:IN coordinate)."
    proven = sum(row["proven"] for row in weights.rows)
    rejected = len(weights.rows) - proven
    return f"{proven} proven super weight(s), {rejected} rejected candidate(s) · from `{weights.source}`"


def default_weight(weights: SuperWeights) -> str | None:
    proven = [row["coordinate"] for row in weights.rows if row["proven"]]
    return (proven or weights.coordinates or [None])[0]


def status_text(state: AppState, result: Exploration) -> str:
    if result.coord is None:
        return f"**Model as is** (no weight chosen) · {result.seconds:.2f} s"
    arch = state.loaded.arch
    stored = list(arch.stored_index(result.coord.out_channel, result.coord.in_channel))
    where = f"`{arch.mlp_out_param_name(result.coord.block)}{stored}` ({result.coord})"
    if result.scale == 1.0:
        return f"**Original weights**: {where} = {result.value:.4g}, untouched · {result.seconds:.2f} s"
    action = "Zeroed" if result.scale == 0 else f"Scaled ×{result.scale:g}"
    restored = "bit-for-bit equal to the original ✓" if result.restored_exactly else "NOT equal to the original ✗"
    return (
        f"**{action}** {where}: {result.value:.4g} → {result.value * result.scale:.4g} for this generation "
        f"· {result.seconds:.2f} s. Restored afterwards: the weight tensor is {restored}."
    )


def build(state: AppState) -> None:
    limits = state.limits
    gr.Markdown(
        "A **super weight** is a single scalar of an early MLP down-projection that creates a huge activation "
        "the whole model depends on. Zero it (or scale it) and regenerate: the plot shows the activation "
        "collapse and the text falls apart; restore it and the original output returns exactly."
    )
    with gr.Row():
        target = gr.Dropdown(state.targets, value=BASE, label="model", elem_id="sw-target", scale=1)
        prompt = gr.Textbox(DEFAULT_PROMPT, label="prompt", elem_id="sw-prompt", scale=4)
        max_tokens = gr.Slider(
            1,
            limits.max_new_tokens,
            value=min(24, limits.max_new_tokens),
            step=1,
            label="max new tokens (greedy)",
            scale=2,
        )
    with gr.Row():
        with gr.Column(scale=3):
            weights_table = gr.Dataframe(
                table(state.superweights), headers=COLUMNS, interactive=False, elem_id="sw-table", label="super weights"
            )
            source = gr.Markdown(source_text(state.superweights), elem_id="sw-source")
            identify_button = gr.Button("Identify now", elem_id="sw-identify", size="sm")
        with gr.Column(scale=2):
            weight = gr.Dropdown(
                state.superweights.coordinates,
                value=default_weight(state.superweights),
                label="weight (BLOCK:OUT:IN)",
                allow_custom_value=True,
                elem_id="sw-weight",
            )
            scale = gr.Slider(-5, 5, value=0.0, step=0.25, label="scale", elem_id="sw-scale-value")
            with gr.Row():
                zero = gr.Button("Zero & regenerate", variant="stop", elem_id="sw-zero")
                scaled = gr.Button("Scale & regenerate", elem_id="sw-scale")
                restore = gr.Button("Restore & regenerate", variant="primary", elem_id="sw-restore")
    status = gr.Markdown(elem_id="sw-status")
    output = gr.Textbox(label="greedy output", interactive=False, lines=3, elem_id="sw-output")
    plot = gr.Plot(label="activations per block", elem_id="sw-plot")

    def run(target_name, text, coordinate, factor, new_tokens):
        result = explore(state, text, coordinate, factor, new_tokens, target_name)
        label = "zeroed" if result.scale == 0 else f"scaled ×{result.scale:g}"
        fig = activation_figure(
            result.max_out,
            result.residual,
            result.max_out_scaled,
            result.residual_scaled,
            label=f"{result.coord} {label}",
            marked_block=result.coord.block if result.coord else None,
        )
        return result.text, status_text(state, result), fig

    inputs = [target, prompt, weight, scale, max_tokens]
    outputs = [output, status, plot]
    model_events = {"concurrency_id": "model", "concurrency_limit": limits.concurrency}
    zero.click(guard(lambda t, p, w, _s, n: run(t, p, w, 0.0, n)), inputs, outputs, api_name="sw_zero", **model_events)
    scaled.click(guard(run), inputs, outputs, api_name="sw_scale", **model_events)
    restore.click(
        guard(lambda t, p, w, _s, n: run(t, p, w, 1.0, n)), inputs, outputs, api_name="sw_restore", **model_events
    )

    @guard
    def identify_now():
        found = state.identify_now()
        return table(found), source_text(found), gr.update(choices=found.coordinates, value=default_weight(found))

    identify_button.click(identify_now, None, [weights_table, source, weight], api_name="sw_identify", **model_events)
