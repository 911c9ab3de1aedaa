"""The model calls behind the tabs and the OpenAI-compatible API, free of Gradio so they can be tested and reused.

Every function validates its inputs against :class:`Limits` first (raising :class:`InputError`),
then holds the state's lock only while the model runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from superlora.app.limits import InputError
from superlora.app.state import BASE, AppState
from superlora.data.templates import ChatTemplate, CompletionTemplate
from superlora.identify.ablation import Coord, parse_coord, scaled_weights

# -----------------------------------------------------------------------------
# Limits shared by every tab


def room(state: AppState, prompt_tokens: int, wanted: int) -> int:
    """New tokens that fit the model's context after a prompt; refuses a prompt that fills it."""
    if prompt_tokens > state.limits.max_input_tokens:
        raise InputError(f"input is too long: {prompt_tokens} tokens (the limit is {state.limits.max_input_tokens})")
    if state.context_length is None:
        return wanted
    if prompt_tokens >= state.context_length:
        raise InputError(f"input is too long: {prompt_tokens} tokens fill the model's {state.context_length}")
    return min(wanted, state.context_length - prompt_tokens)


# -----------------------------------------------------------------------------
# Chat


def message_text(content: object) -> str:
    """Text of a chat message as Gradio sends it (a string, or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", "")) if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def chat_template(state: AppState, target: str = BASE) -> ChatTemplate | None:
    """How ``target`` is prompted in a chat: a chat adapter's recorded template (its system prompt included), else
    the model's own chat template; None for a model that has none."""
    recorded = state.template(target)
    if isinstance(recorded, ChatTemplate):
        return recorded
    return ChatTemplate() if getattr(state.loaded.tokenizer, "chat_template", None) else None


def render_chat(tokenizer, messages: list[dict[str, str]], template: ChatTemplate | None = None) -> list[int]:
    """Prompt ids of a conversation: the chat template, or plain 'Role: text' lines without one."""
    if template is not None:
        return template.prompt_ids(tokenizer, messages)
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
    return list(tokenizer(text)["input_ids"])


def chat_prompt(state: AppState, message: str, history: Sequence[dict], system: str, target: str = BASE) -> list[int]:
    """Prompt ids of the conversation so far plus ``message``; the oldest turns go first if too long."""
    limits = state.limits
    message = limits.text(message, "message")
    system = limits.text(system, "system prompt", required=False)
    turns = [
        {"role": m["role"], "content": message_text(m.get("content"))}
        for m in history
        if isinstance(m, dict) and m.get("role") in ("user", "assistant")
    ][-2 * limits.max_history_turns :]
    head = [{"role": "system", "content": system}] if system else []
    budget = limits.max_input_tokens
    if state.context_length:
        budget = min(budget, state.context_length - 1)
    template = chat_template(state, target)
    while True:
        ids = render_chat(state.loaded.tokenizer, [*head, *turns, {"role": "user", "content": message}], template)
        if len(ids) <= budget or not turns:
            break
        turns = turns[2:] if len(turns) > 1 else []
    if len(ids) > budget:
        raise InputError(f"message is too long: {len(ids)} tokens with the system prompt (the limit is {budget})")
    return ids


class _StopFlag:
    """A stopping criterion that ends generation when the browser stops or leaves."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


@dataclass
class Job:
    """A validated generation, ready to run: what both the chat tab and the OpenAI-compatible API stream.

    Built by :func:`chat_job` or :func:`completion_job`, which refuse bad input before any model work, so a
    caller (the API) can answer 400 before it starts streaming.
    """

    target: str
    ids: list[int]  # the templated prompt
    stop_ids: list[int] | None  # eos ids for generate(); None: the model's own
    pad_id: int | None
    new_tokens: int  # already capped by the limits and the context
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # seeds torch under the model lock, so a sampled reply can be repeated
    one_line: bool = False  # the reply ends at the first line break (a one-line completion task)


@dataclass
class Report:
    """How a streamed generation ended, filled in by :func:`stream` once the model is done."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "length": the new-token budget ran out


def _sampling(temperature: float, top_p: float) -> tuple[float, float]:
    temperature, top_p = float(temperature), float(top_p)
    if not (math.isfinite(temperature) and 0 <= temperature <= 5 and 0 < top_p <= 1):
        raise InputError("temperature must be in [0, 5] and top-p in (0, 1]")
    return temperature, top_p


def _check_target(state: AppState, target: str) -> None:
    if target not in state.targets:
        raise InputError(f"unknown model '{target}'; choose one of {', '.join(state.targets)}")


def chat_job(
    state: AppState,
    target: str,
    message: str,
    history: Sequence[dict],
    system: str = "",
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int | None = 128,
    seed: int | None = None,
) -> Job:
    """The chat tab's prompt (:func:`chat_prompt`) and sampling settings, checked against the limits."""
    _check_target(state, target)
    ids = chat_prompt(state, message, history, system, target)
    template = chat_template(state, target)
    new_tokens = room(state, len(ids), state.limits.new_tokens(max_new_tokens))
    temperature, top_p = _sampling(temperature, top_p)
    tokenizer = state.loaded.tokenizer
    return Job(
        target,
        ids,
        template.stop_ids(tokenizer) if template else None,
        template.pad_id(tokenizer) if template else tokenizer.pad_token_id,
        new_tokens,
        temperature,
        top_p,
        seed,
    )


def completion_template(state: AppState, target: str) -> CompletionTemplate:
    """How ``target`` continues a prompt: a completion adapter's recorded template, else the text as it is."""
    recorded = state.template(target)
    return recorded if isinstance(recorded, CompletionTemplate) else CompletionTemplate()


def completion_job(
    state: AppState,
    target: str,
    prompt: str,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int | None = 64,
    seed: int | None = None,
) -> Job:
    """``prompt`` inside ``target``'s completion template (as the Completion tab prompts it), stopping where the
    template says."""
    _check_target(state, target)
    prompt = state.limits.text(prompt, "prompt")
    template = completion_template(state, target)
    tokenizer = state.loaded.tokenizer
    ids = template.prompt_ids(tokenizer, prompt)
    new_tokens = room(state, len(ids), state.limits.new_tokens(max_new_tokens))
    temperature, top_p = _sampling(temperature, top_p)
    return Job(
        target,
        ids,
        template.stop_ids(tokenizer),
        template.pad_id(tokenizer),
        new_tokens,
        temperature,
        top_p,
        seed,
        template.one_line,
    )


def stream(state: AppState, job: Job, report: Report | None = None) -> Iterator[str]:
    """Yield the new text piece by piece (TextIteratorStreamer) while the model runs under the state's lock.

    Closing the iterator early (a stop button, a client that hung up, a stop string) ends the generation at
    the next token and frees the model. ``report`` gets the token counts and the finish reason at the end.
    """
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    tokenizer = state.loaded.tokenizer
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = _StopFlag()
    failure: list[BaseException] = []
    report = report if report is not None else Report()
    report.prompt_tokens = len(job.ids)
    sampling = {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p} if job.temperature > 0 else {}
    kwargs = {
        "input_ids": torch.tensor([job.ids]),
        "attention_mask": torch.ones(1, len(job.ids), dtype=torch.long),
        "max_new_tokens": job.new_tokens,
        "do_sample": False,
        "pad_token_id": job.pad_id,
        **({"eos_token_id": job.stop_ids} if job.stop_ids else {}),
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([stop]),
        **sampling,
    }
    ends = set(job.stop_ids or [tokenizer.eos_token_id])

    def work() -> None:
        try:
            with state.use(job.target) as model, torch.inference_mode():
                if job.seed is not None:  # under the lock: no other request draws from the generator in between
                    torch.manual_seed(job.seed)
                out = model.generate(**kwargs)
            new = out[0, len(job.ids) :].tolist()
            report.completion_tokens = len(new)
            ran_out = len(new) >= job.new_tokens and (not new or new[-1] not in ends)
            report.finish_reason = "length" if ran_out else "stop"
        except BaseException as exc:  # re-raised to the consumer below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="generate", daemon=True)
    thread.start()
    line_ended = False
    try:
        for piece in streamer:
            if line_ended:  # a line-end token is a stop id, so nothing follows it but its own text
                continue
            if job.one_line and "\n" in piece:
                piece, line_ended = piece.split("\n", 1)[0], True
            if piece:
                yield piece
    finally:
        stop.event.set()  # the consumer is gone (done, stopped or disconnected): free the model
    thread.join()
    if failure:
        raise failure[0]


def chat_stream(
    state: AppState,
    target: str,
    message: str,
    history: Sequence[dict],
    system: str = "",
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 128,
) -> Iterator[str]:
    """Yield the reply as it grows; temperature 0 means greedy."""
    job = chat_job(state, target, message, history, system, temperature, top_p, max_new_tokens)
    reply, pieces = "", stream(state, job)
    try:
        for piece in pieces:
            reply += piece
            yield reply
    finally:
        pieces.close()  # a stop button or a closed page ends the generation now, not at garbage collection
    if not reply.strip():
        yield "(the model returned an empty reply)"


# -----------------------------------------------------------------------------
# Completion (any completion task: the prompt goes through each adapter's recorded template)


@dataclass
class Completed:
    target: str
    prompt_format: str
    output: str
    seconds: float


def complete(
    state: AppState, prompt: str, targets: Sequence[str] | None = None, num_beams: int = 1, max_new_tokens: int = 64
) -> list[Completed]:
    """Continue ``prompt`` with each target. A completion adapter gets the prompt inside its training template
    and stops where training taught it to (eos; a line break for one-line tasks); the base model continues the
    text as it is."""
    from superlora.evaluation.decode import DecodeConfig, generate

    targets = list(targets) if targets else state.targets
    unknown = [t for t in targets if t not in state.targets]
    if unknown:
        raise InputError(f"unknown model {unknown[0]!r}; choose from {', '.join(state.targets)}")
    prompt = state.limits.text(prompt, "prompt")
    tokenizer, results = state.loaded.tokenizer, []
    for target in targets:
        template = completion_template(state, target)
        new_tokens = room(state, len(template.prompt_ids(tokenizer, prompt)), state.limits.new_tokens(max_new_tokens))
        config = DecodeConfig(state.limits.beams(num_beams), 1.0, 0, new_tokens, 1)
        started = time.perf_counter()
        with state.use(target) as model:
            output = generate(model, tokenizer, [prompt], config, template)[0]
        results.append(Completed(target, template.prompt_format, output, time.perf_counter() - started))
    return results


# -----------------------------------------------------------------------------
# Super-weight explorer


@dataclass
class Exploration:
    """A greedy generation with one weight scaled, and the per-block activations with and without it."""

    text: str
    coord: Coord | None
    scale: float
    value: float | None  # the weight's stored value
    restored_exactly: bool
    max_out: list[float] = field(default_factory=list)  # per block, model as is
    residual: list[float] = field(default_factory=list)  # after embeddings and each block, as is
    max_out_scaled: list[float] = field(default_factory=list)
    residual_scaled: list[float] = field(default_factory=list)
    seconds: float = 0.0


def parse_weight(state: AppState, text: str | None) -> Coord | None:
    """``BLOCK:OUT:IN`` (validated against the model's shapes), or None for 'no weight chosen'."""
    from superlora.errors import SuperloraError

    text = (text or "").strip()
    if not text:
        return None
    try:
        return parse_coord(text, state.loaded.arch)
    except SuperloraError as exc:
        raise InputError(str(exc)) from None


def _activations(model, state: AppState, ids: torch.Tensor) -> tuple[list[float], list[float]]:
    from superlora.identify.detect import block_spikes, residual_maxima

    spikes = block_spikes(model, state.loaded.arch, ids)
    return [s.max_out for s in spikes], [r["max_abs"] for r in residual_maxima(model, ids)]


def explore(
    state: AppState,
    prompt: str,
    weight: str | None,
    scale: float,
    max_new_tokens: int = 32,
    target: str = BASE,
) -> Exploration:
    """Generate greedily from ``prompt`` with ``weight`` multiplied by ``scale``, then restore it exactly.

    Also records per-block activations as is and scaled, so the page can show the super activation
    vanish. The weight's whole tensor is compared bit for bit before and after.
    """
    prompt = state.limits.text(prompt, "prompt")
    coord = parse_weight(state, weight)
    scale = float(scale)
    if not math.isfinite(scale) or abs(scale) > 100:
        raise InputError("scale must be a finite number between -100 and 100")
    tokenizer, arch = state.loaded.tokenizer, state.loaded.arch
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    new_tokens = room(state, ids.shape[1], state.limits.new_tokens(max_new_tokens))
    coords = [coord] if coord is not None and scale != 1.0 else []
    started = time.perf_counter()
    with state.use(target) as model, torch.inference_mode():
        value = None
        before = None
        if coord is not None:
            if getattr(model, "_superlora_quantized", None):  # a QLoRA adapter's base: its weights are 4/8-bit codes
                raise InputError(
                    f"the base model is quantised ({model._superlora_quantized}, for a QLoRA adapter): its weights "
                    "cannot be edited one by one here; serve the model without QLoRA adapters to explore them"
                )
            tensor = arch.mlp_out(model, coord.block).weight
            value = float(tensor[arch.stored_index(coord.out_channel, coord.in_channel)])
            before = tensor.detach().clone()
        max_out, residual = _activations(model, state, ids)
        with scaled_weights(model, arch, coords, scale):
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            scaled = _activations(model, state, ids) if coords else (max_out, residual)
        restored = before is None or torch.equal(before, arch.mlp_out(model, coord.block).weight)
    text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
    return Exploration(
        text=text,
        coord=coord,
        scale=scale if coords else 1.0,
        value=value,
        restored_exactly=restored,
        max_out=max_out,
        residual=residual,
        max_out_scaled=scaled[0],
        residual_scaled=scaled[1],
        seconds=time.perf_counter() - started,
    )
