"""A Gradio app serving a LoRA fine-tune that superlora merged into its base model (``./model``), on CPU.

It prompts the model exactly as the run was trained, as ``prompt.json`` says: a completion task's prompt
format (E2E: a meaning representation in, a description out), or for a chat run the chat template saved with
the tokenizer and the run's system prompt; the stop strings that end a reply; the task's decoding settings
(those ``superlora evaluate`` scored the run with). It needs only requirements.txt, not superlora.

Run it locally with ``python app.py`` (http://127.0.0.1:7860; GRADIO_SERVER_NAME and GRADIO_SERVER_PORT change
that, and Spaces sets them). From code: ``gradio_client.Client(URL).predict(TEXT, api_name="/generate")``, or
``api_name="/chat"`` for a chat run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
SETTINGS = json.loads((HERE / "prompt.json").read_text(encoding="utf-8"))
STOPS: list[str] = SETTINGS["stop_strings"]
tokenizer = AutoTokenizer.from_pretrained(HERE / "model")
# float32 whatever the stored dtype: 16-bit matmuls are slow (or emulated) on many CPUs and change outputs
model = AutoModelForCausalLM.from_pretrained(HERE / "model", dtype=torch.float32).eval()
CONTEXT: int | None = getattr(model.config, "max_position_embeddings", None)


def stop_token_ids() -> list[int]:
    """Every token whose text holds a stop string ends generation (eos, end of turn, a line break)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [i for i, text in enumerate(texts) if any(stop in text for stop in STOPS)]


STOP_IDS = stop_token_ids()


def reply(ids: list[int]) -> str:
    """What the model writes after the prompt ``ids``, with the task's settings, up to the first stop string."""
    decode = SETTINGS["decode"]
    room = decode["max_new_tokens"] if CONTEXT is None else min(decode["max_new_tokens"], CONTEXT - len(ids))
    if room < 1:
        raise gr.Error(f"the input is too long: {len(ids)} tokens fill the model's context of {CONTEXT}")
    beams = {"num_beams": decode["num_beams"]}
    if decode["num_beams"] > 1:
        beams |= {"length_penalty": decode["length_penalty"], "early_stopping": True}
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=room,
            do_sample=False,
            no_repeat_ngram_size=decode["no_repeat_ngram_size"],
            eos_token_id=STOP_IDS,
            pad_token_id=SETTINGS["pad_token_id"],
            **beams,
        )
    text = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    for stop in STOPS:
        text = text.split(stop, 1)[0]
    return text.strip()


def generate(text: str) -> str:
    """A completion task: the text inside the training prompt format (with the tokenizer's BOS, as in training)."""
    return reply(tokenizer(SETTINGS["prompt_format"].format(prompt=text))["input_ids"])


def message_text(content: object) -> str:
    """A chat message's text: Gradio sends a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", "")) if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def chat(message: str, history: list[dict]) -> str:
    """A chat run: the conversation through the chat template, the run's system prompt first, as in training.
    The oldest turns are left out when the conversation no longer fits the context."""
    head = [{"role": "system", "content": SETTINGS["system"]}] if SETTINGS.get("system") else []
    turns = [
        {"role": m["role"], "content": message_text(m.get("content"))}
        for m in history
        if m.get("role") in ("user", "assistant")
    ]
    while True:
        messages = [*head, *turns, {"role": "user", "content": message_text(message)}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes its special tokens
        if not turns or CONTEXT is None or len(ids) + SETTINGS["decode"]["max_new_tokens"] <= CONTEXT:
            return reply(ids)
        turns = turns[2:]


if SETTINGS["kind"] == "chat":
    demo = gr.ChatInterface(chat, title=SETTINGS["title"], description=SETTINGS["description"], api_name="chat")
else:
    demo = gr.Interface(
        generate,
        gr.Textbox(label="input", lines=3, placeholder=(SETTINGS["examples"] or [""])[0]),
        gr.Textbox(label="output"),
        title=SETTINGS["title"],
        description=SETTINGS["description"],
        examples=SETTINGS["examples"] or None,
        cache_examples=False,
        flagging_mode="never",
        api_name="generate",
    )

if __name__ == "__main__":
    port = os.environ.get("GRADIO_SERVER_PORT")
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=int(port) if port else None)
