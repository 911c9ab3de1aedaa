"""Tab 1: fill the eight E2E slots, generate with the base model and every adapter side by side,
and see which slots each output dropped, got wrong or invented."""

from __future__ import annotations

import html

import gradio as gr

from superlora.app.e2e_form import E2EOutput, build_mr, e2e_generate
from superlora.app.state import AppState
from superlora.app.tabs.common import guard
from superlora.tasks.e2e.data import SLOTS, parse_mr_pairs

# A typical MR of the E2E test set, used where its values exist in the choices.
EXAMPLE = {"name": "The Vaults", "eatType": "pub", "priceRange": "more than £30", "customer rating": "5 out of 5"}
NONE_LABEL = "(not in MR)"


def slot_id(slot: str) -> str:
    """Element id of a slot's dropdown ("customer rating" -> "e2e-customer-rating")."""
    return "e2e-" + slot.replace(" ", "-")


def _chip(text: str, kind: str, title: str) -> str:
    return f'<span class="sl-chip sl-{kind}" title="{title}">{html.escape(text)}</span>'


def result_card(mr: str, result: E2EOutput) -> str:
    """One model's output with the MR's slots as chips: expressed, missing, wrong, and added ones."""
    chips = []
    for slot, value in parse_mr_pairs(mr):
        key = f"{slot}[{value}]"
        wrong = next((w for w in result.wrong if w.startswith(key + " ->")), None)
        if key in result.missing:
            chips.append(_chip(key, "missing", "missing: the output never says it"))
        elif wrong:
            chips.append(_chip(wrong, "wrong", "wrong: said with another value"))
        else:
            chips.append(_chip(key, "ok", "expressed"))
    chips += [_chip(added, "added", "added: not in the MR") for added in result.added]
    errors = len(result.missing) + len(result.wrong) + len(result.added)
    verdict = "all slots expressed, nothing added" if not errors else f"{errors} slot error{'s' * (errors > 1)}"
    output = html.escape(result.output) if result.output else "<em>(empty output)</em>"
    return (
        f'<div class="sl-card" data-target="{html.escape(result.target)}">'
        f'<div class="sl-card-head"><b>{html.escape(result.target)}</b> · {result.seconds:.2f} s · {verdict}</div>'
        f'<p class="sl-output">{output}</p><div class="sl-chips">{"".join(chips)}</div></div>'
    )


def results_html(mr: str, results: list[E2EOutput]) -> str:
    legend = " ".join(
        _chip(label, kind, label)
        for kind, label in (("ok", "expressed"), ("missing", "missing"), ("wrong", "wrong"), ("added", "added"))
    )
    cards = "".join(result_card(mr, r) for r in results)
    return f'<div class="sl-legend">slot check: {legend}</div><div class="sl-cards">{cards}</div>'


def build(state: AppState) -> None:
    limits = state.limits
    gr.Markdown(
        "Choose slot values, then generate a restaurant description from the base model and from each "
        "adapter. The chips under each output show the slot-error check: slots **missing** from the "
        "output, said with a **wrong** value, or **added** though not in the MR."
    )
    dropdowns = []
    for row_slots in (SLOTS[:4], SLOTS[4:]):
        with gr.Row():
            for slot in row_slots:
                values = state.slot_values.get(slot, [])
                default = EXAMPLE.get(slot, "")
                if default not in values:
                    default = values[0] if slot == "name" and values else ""
                dropdowns.append(
                    gr.Dropdown(
                        choices=[(NONE_LABEL, ""), *values],
                        value=default,
                        label=slot,
                        allow_custom_value=True,
                        elem_id=slot_id(slot),
                    )
                )
    with gr.Accordion("Models and decoding", open=True), gr.Row():
        models = gr.CheckboxGroup(state.targets, value=state.targets, label="models", elem_id="e2e-models")
        beams = gr.Slider(
            1, limits.max_beams, value=min(4, limits.max_beams), step=1, label="beam size", elem_id="e2e-beams"
        )
        penalty = gr.Slider(0.1, 3.0, value=0.9, step=0.1, label="length penalty", elem_id="e2e-penalty")
        max_tokens = gr.Slider(
            4,
            limits.max_e2e_new_tokens,
            value=min(64, limits.max_e2e_new_tokens),
            step=1,
            label="max new tokens",
            elem_id="e2e-max-tokens",
        )
    button = gr.Button("Generate", variant="primary", elem_id="e2e-generate")
    mr_box = gr.Textbox(label="meaning representation (MR)", interactive=False, elem_id="e2e-mr")
    cards = gr.HTML(elem_id="e2e-results")
    with gr.Accordion("raw results (JSON)", open=False):
        raw = gr.JSON(elem_id="e2e-json")

    @guard
    def generate(*args):
        *values, chosen, num_beams, length_penalty, new_tokens = args
        mr = build_mr(dict(zip(SLOTS, values, strict=True)), state)
        if not chosen:
            raise gr.Error("choose at least one model", title="Refused")
        results = e2e_generate(state, mr, chosen, num_beams, length_penalty, new_tokens)
        settings = {"num_beams": limits.beams(num_beams), "length_penalty": float(length_penalty)}
        settings["max_new_tokens"] = limits.new_tokens(new_tokens, limits.max_e2e_new_tokens)
        data = {"mr": mr, "settings": settings, "outputs": {r.target: r.to_dict() for r in results}}
        return mr, results_html(mr, results), data

    button.click(
        generate,
        inputs=[*dropdowns, models, beams, penalty, max_tokens],
        outputs=[mr_box, cards, raw],
        api_name="generate",
        concurrency_id="model",
        concurrency_limit=limits.concurrency,
    )
