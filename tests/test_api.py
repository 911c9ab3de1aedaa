"""The OpenAI-compatible API (``superlora serve --api`` / ``--api-only``) through the real ``openai`` client.

A tiny planted model with a plain adapter run and an E2E-template run, served in this process: on Gradio's own
app with the UI (``--api``), and alone behind a login (``--api-only``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("gradio")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
gradio_client = pytest.importorskip("gradio_client")

import superlora.app.ui as ui  # noqa: E402  (sets the offline environment before Gradio loads)
from app_support import adapter_run, free_port, planted_model_dir  # noqa: E402
from superlora.app import api  # noqa: E402
from superlora.app import generate as gen  # noqa: E402
from superlora.app.limits import Limits  # noqa: E402
from superlora.app.state import AppState  # noqa: E402

LOGIN = ("alice", "s3cret:with-colon")
CAP = 12  # the server's --max-new-tokens
PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A tiny planted model, one plain adapter ('lora') and one trained on E2E with its template ('e2erun')."""
    from superlora.tasks.e2e.data import TEMPLATE

    root = tmp_path_factory.mktemp("api")
    model = planted_model_dir(root / "model")
    lora = adapter_run(model, root / "runs" / "lora")
    e2e = adapter_run(model, root / "runs" / "e2erun", seed=3)
    meta = json.loads((e2e / "run.json").read_text())
    meta |= {"task": {"name": "e2e"}, "template": TEMPLATE.record(), "head": "lm"}
    (e2e / "run.json").write_text(json.dumps(meta))
    return AppState.load(str(model), [str(lora), str(e2e)], limits=Limits(max_new_tokens=CAP))


@pytest.fixture(scope="module")
def served(state):
    """The web app with the API on the same port (``serve --api``, no login); yields the base URL."""
    demo = ui.build_app(state)
    port = free_port()
    ui.launch(demo, "127.0.0.1", port, block=False, api=api.router(state))
    yield f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(scope="module")
def guarded(state):
    """The web app and the API behind ``LOGIN``; yields the base URL."""
    demo = ui.build_app(state)
    port = free_port()
    ui.launch(demo, "127.0.0.1", port, block=False, auth=LOGIN, api=api.router(state, LOGIN))
    yield f"http://127.0.0.1:{port}"
    demo.close()


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def test_a_streamed_greedy_chat_equals_the_apps_own_chat_reply(served, state):
    """The acceptance check: the streamed deltas, joined, are generate.chat_stream's final text, token for token."""
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "the pub"}]
    for target, system in (("base", ""), ("lora", "be brief")):
        messages = [{"role": "system", "content": system}] if system else []
        messages += [*history, {"role": "user", "content": PROMPT}]
        chunks = list(
            client(served).chat.completions.create(
                model=target, messages=messages, temperature=0, max_tokens=CAP, stream=True
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        *_, own = gen.chat_stream(state, target, PROMPT, history, system, temperature=0, top_p=1, max_new_tokens=CAP)
        assert streamed.strip() and streamed == own, target
        assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 1  # streamed, not one block
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_stream_is_server_sent_events_ending_with_done(served):
    body = {"model": "base", "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{served}/v1/completions", json=body, timeout=60) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"} and chunks[-1]["choices"][0]["finish_reason"]


def test_non_streaming_chat_and_completion_answer_in_openai_shape(served, state):
    reply = client(served).chat.completions.create(
        model="lora", messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=6
    )
    assert reply.object == "chat.completion" and reply.model == "lora"
    *_, own = gen.chat_stream(state, "lora", PROMPT, [], "", temperature=0, top_p=1, max_new_tokens=6)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == own
    usage = reply.usage
    assert usage.prompt_tokens == len(gen.chat_prompt(state, PROMPT, [], "", "lora"))
    assert 0 < usage.completion_tokens <= 6 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    done = client(served).completions.create(model="base", prompt=PROMPT, temperature=0, max_tokens=6)
    assert done.object == "text_completion" and done.choices[0].text.strip()
    assert done.choices[0].finish_reason in ("stop", "length")


def test_a_completion_goes_through_the_adapters_recorded_template_as_the_completion_tab(served, state):
    """The E2E run's template (its prompt format, one line) shapes the API's completion as it shapes the tab's."""
    mr = "name[the pub], food[cheap]"
    done = client(served).completions.create(model="e2erun", prompt=mr, temperature=0, max_tokens=CAP)
    (tab,) = gen.complete(state, mr, ["e2erun"], 1, CAP)
    assert tab.prompt_format != "{prompt}" and "\n" not in done.choices[0].text
    assert done.choices[0].text.strip() == tab.output


def test_stop_strings_cut_the_reply_and_a_seed_repeats_a_sampled_one(served):
    openai_client = client(served)
    full = openai_client.completions.create(model="base", prompt=PROMPT, temperature=0, max_tokens=CAP).choices[0]
    word = full.text.split()[1]
    cut = openai_client.completions.create(model="base", prompt=PROMPT, temperature=0, max_tokens=CAP, stop=[word])
    assert cut.choices[0].text == full.text[: full.text.index(word)] and cut.choices[0].finish_reason == "stop"
    sampled = [
        openai_client.completions.create(model="lora", prompt=PROMPT, temperature=1.5, seed=7, max_tokens=8)
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


def test_models_lists_the_base_model_and_each_adapter(served, state):
    models = client(served).models.list()
    assert [m.id for m in models.data] == ["base", "lora", "e2erun"]
    assert client(served).models.retrieve("e2erun").id == "e2erun"
    assert client(served).models.retrieve(state.loaded.name).id == "base"  # the base model's own name works too


def test_an_unknown_model_is_404_with_a_did_you_mean(served):
    with pytest.raises(openai.NotFoundError, match="did you mean 'lora'") as caught:
        client(served).chat.completions.create(model="lroa", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(served).completions.create(model="gpt-4o", prompt="hi")


def test_a_required_login_refuses_requests_without_it_and_accepts_bearer_or_basic(guarded):
    messages = [{"role": "user", "content": PROMPT}]
    for key in ("unused", f"{LOGIN[0]}:wrong", LOGIN[1]):
        with pytest.raises(openai.AuthenticationError):
            client(guarded, key).chat.completions.create(model="base", messages=messages, max_tokens=2)
    assert httpx.get(f"{guarded}/v1/models").status_code == 401
    reply = client(guarded, ":".join(LOGIN)).chat.completions.create(model="base", messages=messages, max_tokens=2)
    assert reply.choices[0].message.content
    assert httpx.get(f"{guarded}/v1/models", auth=LOGIN).json()["data"][0]["id"] == "base"  # curl -u USER:PASS
    assert httpx.get(f"{guarded}/config").status_code == 401  # the UI still wants Gradio's own login


def test_max_tokens_is_capped_at_the_servers_limit(served, state):
    """A client asking for a million tokens gets at most --max-new-tokens."""
    reply = client(served).completions.create(model="base", prompt=PROMPT, temperature=0, max_tokens=10**6)
    assert 0 < reply.usage.completion_tokens <= CAP
    # the cap, not the request, is what the model got: the same as asking for exactly CAP tokens
    capped = client(served).completions.create(model="base", prompt=PROMPT, temperature=0, max_tokens=CAP)
    assert reply.choices[0].text == capped.choices[0].text
    assert state.limits.new_tokens(10**6) == CAP


def test_bad_requests_are_400_in_openai_error_shape_and_logged_one_line_each(served, caplog):
    caplog.set_level(logging.INFO)
    url = f"{served}/v1/chat/completions"
    chat = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}
    cases = {
        "the request body is not valid JSON": httpx.post(url, content=b"{not json", timeout=30),
        "messages: Field required": httpx.post(url, json={"model": "base"}, timeout=30),
        "temperature: Input should be less than or equal to 2": httpx.post(url, json=chat | {"temperature": 9}),
        "the last message must be the user's": httpx.post(
            url, json=chat | {"messages": [{"role": "assistant", "content": "hi"}]}
        ),
        "message is too long": httpx.post(url, json=chat | {"messages": [{"role": "user", "content": "the " * 1000}]}),
        "stop: up to 4 non-empty strings": httpx.post(url, json=chat | {"stop": ["a", "b", "c", "d", "e"]}),
    }
    for message, reply in cases.items():
        assert reply.status_code == 400, (message, reply.text)
        error = reply.json()["error"]
        assert error["message"].startswith(message) and error["type"] == "invalid_request_error"
    assert cases["message is too long"].json()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="too long"):
        client(served).completions.create(model="base", prompt="the " * 1000)
    time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records if r.name == "superlora.app"]
    for message in cases:
        refused = [line for line in lines if line.startswith("refused POST /v1/chat/completions") and message in line]
        assert len(refused) == 1, (message, lines)
    assert all("\n" not in line for line in lines)


def test_the_api_and_the_ui_never_run_the_model_at_once(served, state, monkeypatch):
    """Three API streams and two chat-tab requests at the same time: one generation at a time, all answered."""
    active, most = [0], [0]
    guard = threading.Lock()
    real_generate = state.loaded.model.generate

    def counted(*args, **kwargs):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.05)  # widen the window an overlap would show in
            return real_generate(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(state.loaded.model, "generate", counted)
    ui_client = gradio_client.Client(f"{served}/", verbose=False)

    def via_api(i: int) -> str:
        stream = client(served).chat.completions.create(
            model=["base", "lora"][i % 2], messages=[{"role": "user", "content": PROMPT}], max_tokens=6, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def via_ui(i: int) -> str:
        return ui_client.predict(PROMPT, "base", "", 0.0, 1.0, 6, api_name="/chat")

    with ThreadPoolExecutor(5) as pool:
        jobs = [pool.submit(via_api, i) for i in range(3)] + [pool.submit(via_ui, i) for i in range(2)]
        replies = [job.result(timeout=120) for job in jobs]
    ui_client.close()
    assert all(reply.strip() for reply in replies) and most[0] == 1
    assert not state.lock.locked()


def test_api_only_serves_the_api_and_no_ui_and_the_cli_wires_it(state, monkeypatch, capsys):
    from superlora.cli import main

    started = []

    def in_background(st, host, port, login=None, block=True):
        started.append(real_serve(st, host, port, login, block=False))

    real_serve = api.serve
    monkeypatch.setattr(AppState, "load", staticmethod(lambda *args, **kwargs: state))
    monkeypatch.setattr(api, "serve", in_background)
    monkeypatch.delenv("SUPERLORA_AUTH", raising=False)
    port = free_port()
    try:
        assert main(["serve", "--api-only", "--port", str(port), "--auth", ":".join(LOGIN)]) == 0
        assert f"OpenAI-compatible API on http://127.0.0.1:{port}/v1" in capsys.readouterr().out
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/").status_code == 404  # no web UI
        with pytest.raises(openai.AuthenticationError):
            client(url).models.list()
        assert [m.id for m in client(url, ":".join(LOGIN)).models.list().data] == ["base", "lora", "e2erun"]
        with pytest.raises(openai.NotFoundError, match="no endpoint"):
            client(url, ":".join(LOGIN)).embeddings.create(model="base", input="hi")
    finally:
        for server in started:
            server.close()
