"""Tab 2: a streaming multi-turn chat with the model's chat template, base model or any adapter."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from superlora.app.generate import chat_stream
from superlora.app.state import BASE, AppState
from superlora.app.tabs.common import guard_stream

DEFAULT_SYSTEM = "You are a helpful assistant."


def build(state: AppState) -> None:
    limits = state.limits

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
            gr.Textbox(DEFAULT_SYSTEM, label="system prompt", elem_id="chat-system", max_lines=4, render=False),
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
