"""Completion tab: any completion task. A prompt, continued by the base model and by each adapter, each adapter
through the template it was trained with (run.json) and stopping where training taught it to."""

from __future__ import annotations

import html

import gradio as gr

from superlora.app.generate import complete
from superlora.app.state import AppState
from superlora.app.tabs.common import guard


def cards(results) -> str:
    parts = []
    for r in results:
        shape = html.escape(r.prompt_format.replace("\n", "\\n"))
        parts.append(
            f'<div class="sl-card"><div class="sl-card-head"><b>{html.escape(r.target)}</b> · template '
            f"<code>{shape}</code> · {r.seconds:.1f} s</div>"
            f'<div class="sl-output">{html.escape(r.output) or "(empty)"}</div></div>'
        )
    return '<div class="sl-cards">' + "".join(parts) + "</div>"


def build(state: AppState) -> None:
    limits = state.limits
    with gr.Row():
        prompt = gr.Textbox(label="prompt", lines=4, elem_id="complete-prompt", scale=3)
        with gr.Column(scale=1):
            targets = gr.CheckboxGroup(state.targets, value=state.targets, label="models", elem_id="complete-targets")
            beams = gr.Slider(1, limits.max_beams, value=1, step=1, label="beams (1 = greedy)")
            new_tokens = gr.Slider(
                1, limits.max_new_tokens, value=min(64, limits.max_new_tokens), step=1, label="max new tokens"
            )
    run = gr.Button("Complete", variant="primary", elem_id="complete-run")
    out = gr.HTML(elem_id="complete-out")

    @guard
    def go(text, chosen, num_beams, max_new):
        return cards(complete(state, text, chosen, int(num_beams), int(max_new)))

    run.click(go, [prompt, targets, beams, new_tokens], out, api_name="complete")
