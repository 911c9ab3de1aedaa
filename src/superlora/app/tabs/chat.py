"""Tab 2: a streaming multi-turn chat with the model's chat template, base model or any adapter."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from superlora.app.generate import chat_stream
from superlora.app.state import BASE, AppState
from superlora.app.tabs.common import guard_stream

DEFAULT_SYSTEM = ""  # empty: the template's own (SmolLM2's adds its default system turn), as in training


def prompting(state: AppState) -> str:
    """One line per target: the template its chat uses (a chat adapter's recorded one)."""
    from superlora.app.generate import chat_template

    lines = []
    for target in state.targets:
        recorded = state.template(target)
        if recorded is not None and recorded.kind == "chat":
            how = "its training chat template" + (f", system prompt {recorded.system!r}" if recorded.system else "")
        else:
            how = "the model's chat template" if chat_template(state, target) else "plain 'Role: text' lines"
            if recorded is not None:
                how += f" (trained on a {recorded.kind} task: the Completion tab prompts it as trained)"
        lines.append(f"- `{target}`: {how}")
    return "\n".join(lines)


def build(state: AppState) -> None:
    limits = state.limits
    gr.Markdown(prompting(state), elem_id="chat-prompting")

    @guard_stream
    def respond(message, history, target, system, temperature, top_p, max_new_tokens) -> Iterator[str]:
        yield from chat_stream(state, target, message, history, system, temperature, top_p, max_new_tokens)

    gr.ChatInterface(
        respond,
        chatbot=gr.Chatbot(elem_id="chat-bot", height=380, label="chat"),
        textbox=gr.Textbox(
            elem_id="chat-input",
            placeholder="Type a message and press Enter",
            submit_btn=True,
            stop_btn=True,
            show_label=False,
            max_lines=6,
        ),
        additional_inputs=[  # render=False: ChatInterface places them in its accordion
            gr.Dropdown(state.targets, value=BASE, label="model", elem_id="chat-target", render=False),
            gr.Textbox(
                DEFAULT_SYSTEM,
                label="system prompt",
                placeholder="empty: the template's default",
                elem_id="chat-system",
                max_lines=4,
                render=False,
            ),
            gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature (0 = greedy)", render=False),
            gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top-p", render=False),
            gr.Slider(
                1,
                limits.max_new_tokens,
                value=min(128, limits.max_new_tokens),
                step=1,
                label="max new tokens",
                elem_id="chat-max-tokens",
                render=False,
            ),
        ],
        additional_inputs_accordion=gr.Accordion("Model and sampling", open=True, render=False),
        api_name="chat",
        concurrency_limit=limits.concurrency,
        autofocus=False,
        fill_height=False,
    )
