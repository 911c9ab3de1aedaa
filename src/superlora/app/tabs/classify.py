"""Classification tab: a text in, each model's label and class probabilities out (base vs each adapter).

The base model's head is the untrained one loading added (seeded, so the same on every load): its answer is
what the adapters improved on, roughly chance. Texts are cut at the adapters' ``data.max_length`` as in training.
"""

from __future__ import annotations

import html
import time

import gradio as gr

from superlora.app.state import AppState
from superlora.app.tabs.common import guard
from superlora.data.templates import LabelTemplate

MAX_LENGTH = 512  # BERT-class encoders' positions; longer texts are cut (as training cut them)


def classify_all(state: AppState, text: str, targets: list[str]) -> list[dict]:
    """One result per target: label, probabilities and seconds."""
    from superlora.evaluation.classify import classify

    text = state.limits.text(text, "text")  # empty or over-long: refused with a message
    template = LabelTemplate(state.labels)
    results = []
    for target in targets or state.targets:
        started = time.perf_counter()
        with state.use(target) as model:
            labels, probabilities = classify(model, state.loaded.tokenizer, [text], template, 1, MAX_LENGTH)
        results.append(
            {
                "target": target,
                "label": labels[0],
                "probabilities": dict(zip(state.labels, probabilities[0], strict=True)),
                "seconds": time.perf_counter() - started,
            }
        )
    return results


def cards(results: list[dict]) -> str:
    parts = []
    for r in results:
        bars = "".join(
            f"<div>{html.escape(label)}: <b>{p:.1%}</b></div>" for label, p in sorted(r["probabilities"].items())
        )
        parts.append(
            f'<div class="sl-card"><div class="sl-card-head"><b>{html.escape(r["target"])}</b> · '
            f'{r["seconds"]:.2f} s</div><div class="sl-output">{html.escape(r["label"])}</div>{bars}</div>'
        )
    return '<div class="sl-cards">' + "".join(parts) + "</div>"


def build(state: AppState) -> None:
    gr.Markdown(
        f"Labels: {', '.join(f'`{label}`' for label in state.labels)}. `base` is the model with its new, untrained "
        "head (about chance); each adapter brings its trained head."
    )
    with gr.Row():
        text = gr.Textbox(label="text", lines=3, elem_id="classify-text", scale=3)
        targets = gr.CheckboxGroup(
            state.targets, value=state.targets, label="models", elem_id="classify-targets", scale=1
        )
    run = gr.Button("Classify", variant="primary", elem_id="classify-run")
    out = gr.HTML(elem_id="classify-out")

    @guard
    def on_classify(text: str, chosen: list[str]) -> str:
        return cards(classify_all(state, text, chosen))

    run.click(on_classify, [text, targets], out, api_name="classify")
