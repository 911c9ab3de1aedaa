"""The web app through its HTTP API (gradio_client): tiny models in-process, and the real SmolLM2 via the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

import superlora.app.ui  # noqa: E402,F401  (sets the offline environment before Gradio loads)
from app_support import PLANT_COORD, adapter_run, free_port, planted_model_dir, serve  # noqa: E402
from superlora.app import e2e_form as form  # noqa: E402
from superlora.app import generate as gen  # noqa: E402
from superlora.app.limits import Limits  # noqa: E402
from superlora.app.state import AppState  # noqa: E402
from superlora.app.tabs import e2e as e2e_tab  # noqa: E402
from superlora.errors import SuperloraError  # noqa: E402

AppError = gradio_client.exceptions.AppError
REPO = Path(__file__).resolve().parents[1]
SLOTS = ["name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near"]
PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A tiny planted model with one adapter run, served in this process; (state, client)."""
    root = tmp_path_factory.mktemp("app")
    model = planted_model_dir(root / "model")
    run = adapter_run(model, root / "runs" / "group" / "lora")
    limits = Limits(max_new_tokens=40, max_e2e_new_tokens=24)
    state = AppState.load(str(model), [str(run)], root / "runs", limits=limits)
    demo, url = serve(state)
    client = gradio_client.Client(url, verbose=False)
    yield state, client
    client.close()
    demo.close()


def slots(**values: str) -> list[str]:
    return [values.get(slot.replace(" ", "_"), "") for slot in SLOTS]


def call_generate(client, values: list[str], targets=("base", "lora"), beams=2, max_tokens=12):
    return client.predict(*values, list(targets), beams, 0.9, max_tokens, api_name="/generate")


def test_generate_shows_mr_and_both_outputs_with_slot_check(app):
    state, client = app
    mr, cards, data = call_generate(client, slots(name="Aromi", eatType="pub", priceRange="cheap"))
    assert mr == "name[Aromi], eatType[pub], priceRange[cheap]"
    assert data["mr"] == mr and set(data["outputs"]) == {"base", "lora"}
    for result in data["outputs"].values():
        assert {"output", "missing", "wrong", "added", "seconds"} <= set(result)
    assert 'data-target="base"' in cards and 'data-target="lora"' in cards and "sl-chip" in cards


def test_twenty_concurrent_requests_all_answered_and_not_mixed_up(app):
    state, client = app
    requests = []
    for i in range(20):  # distinct MRs; values from the tiny vocabulary so the outputs differ too
        values = slots(
            name=f"Venue {i}",
            eatType=["pub", "restaurant"][i % 2],
            priceRange="cheap" if i % 3 == 0 else "",
            food="food" if i % 4 < 2 else "",
            near="the capital" if i % 5 == 0 else "",
        )
        requests.append(values)
    started = time.perf_counter()
    jobs = [client.submit(*v, ["base", "lora"], 2, 0.9, 12, api_name="/generate") for v in requests]
    replies = [job.result(timeout=120) for job in jobs]
    elapsed = time.perf_counter() - started
    assert len(replies) == 20
    for values, (mr, _, data) in zip(requests, replies, strict=True):
        expected_mr = form.build_mr(dict(zip(SLOTS, values, strict=True)), state)
        assert mr == expected_mr and data["mr"] == expected_mr
        expected = {r.target: r.output for r in form.e2e_generate(state, expected_mr, None, 2, 0.9, 12)}
        assert {t: r["output"] for t, r in data["outputs"].items()} == expected
    print(f"20 concurrent generate requests (2 models each) answered in {elapsed:.1f} s")


def test_over_long_input_refused_with_a_message_and_server_keeps_serving(app):
    state, client = app
    with pytest.raises(AppError, match="too long"):
        call_generate(client, slots(name="x" * 5000))
    with pytest.raises(AppError, match="may not contain"):
        call_generate(client, slots(name="a], food[French"))
    with pytest.raises(AppError, match="too long"):
        client.predict("base", "word " * 1000, PLANT_COORD, 0, 5, api_name="/sw_zero")
    with pytest.raises(AppError, match="too long"):
        client.predict("the " * 1000, "base", "", 0.0, 1.0, 5, api_name="/chat")
    with pytest.raises(AppError, match="out of range"):
        client.predict("base", PROMPT, "99:0:0", 0, 5, api_name="/sw_zero")
    # max new tokens is capped server-side whatever the API sends: Gradio checks the slider's range,
    # and the model call clamps again
    with pytest.raises(AppError, match="greater than maximum"):
        call_generate(client, slots(name="Aromi"), max_tokens=10**6)
    assert state.limits.new_tokens(10**6, state.limits.max_e2e_new_tokens) == state.limits.max_e2e_new_tokens
    _, _, data = call_generate(client, slots(name="Aromi"), max_tokens=state.limits.max_e2e_new_tokens)
    assert data["settings"]["max_new_tokens"] == state.limits.max_e2e_new_tokens


def test_failed_generation_is_reported_and_the_app_keeps_serving(app, monkeypatch):
    state, client = app

    def boom(*args, **kwargs):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr(e2e_tab, "e2e_generate", boom)
    with pytest.raises(AppError, match="generation failed: RuntimeError: simulated out-of-memory"):
        call_generate(client, slots(name="Aromi"))
    monkeypatch.undo()
    mr, _, _ = call_generate(client, slots(name="Aromi"))
    assert mr == "name[Aromi]"
    assert not state.lock.locked()


def test_failed_chat_generation_is_reported_and_frees_the_model(app, monkeypatch):
    state, client = app

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure inside generate")

    monkeypatch.setattr(state.loaded.model, "generate", boom)
    with pytest.raises(AppError, match="generation failed: RuntimeError: simulated failure inside generate"):
        client.predict("the capital", "base", "", 0.0, 1.0, 5, api_name="/chat")
    monkeypatch.undo()
    assert not state.lock.locked()
    assert client.predict("the capital", "base", "", 0.0, 1.0, 5, api_name="/chat").strip()


def test_zero_then_restore_a_super_weight_returns_the_exact_original_output(app):
    state, client = app
    weight = state.loaded.arch.mlp_out(state.loaded.model, 1).weight
    before = weight.detach().clone()
    original, status, _ = client.predict("base", PROMPT, PLANT_COORD, 0, 10, api_name="/sw_restore")
    assert "Original weights" in status
    zeroed, status, _ = client.predict("base", PROMPT, PLANT_COORD, 0, 10, api_name="/sw_zero")
    assert "Zeroed" in status and "bit-for-bit equal" in status
    assert zeroed != original
    halved, status, _ = client.predict("base", PROMPT, PLANT_COORD, 0.5, 10, api_name="/sw_scale")
    assert "Scaled ×0.5" in status
    restored, _, _ = client.predict("base", PROMPT, PLANT_COORD, 0, 10, api_name="/sw_restore")
    assert restored == original
    assert (weight == before).all()


def test_identify_on_demand_finds_the_planted_weight(app):
    state, client = app
    rows, source, _ = client.predict(api_name="/sw_identify")
    coordinates = [row[0] for row in rows["data"]]
    assert PLANT_COORD in coordinates
    assert "identified in the app" in source


def test_chat_streams_a_reply(app):
    state, client = app
    job = client.submit("the capital of france is", "lora", "be brief", 0.0, 1.0, 8, api_name="/chat")
    updates = [update for update in job]
    final = job.result(timeout=60)
    assert final.strip() and len(updates) > 1  # several partial replies: streamed, not sent at once
    # a second turn with history works through the chat template fallback
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": final}]
    ids = gen.chat_prompt(state, "and paris", history, "be brief")
    assert 0 < len(ids) <= state.context_length


def test_runs_tab_lists_the_run(app):
    state, client = app
    rows, _, chosen = client.predict(None, api_name="/runs_list")
    assert [row[0] for row in rows["data"]] == ["group/lora"]
    assert rows["data"][0][-1] == "served"
    config, summary, _ = client.predict("group/lora", api_name="/runs_show")
    assert "lora" in config and summary["steps"] == 35
    with pytest.raises(AppError, match="not in the list of choices"):  # names only, never paths
        client.predict("../../etc", api_name="/runs_show")


def test_no_component_takes_files_or_paths_from_the_browser(app):
    state, client = app
    config = client.config
    kinds = {component.get("type") for component in config["components"]}
    assert not kinds & {"file", "uploadbutton", "image", "audio", "video", "model3d", "filepicker", "fileexplorer"}


def test_adapter_of_another_base_model_is_refused(app, tmp_path):
    state, _ = app
    other = planted_model_dir(tmp_path / "other", seed=5)
    run = state.adapters[0].run
    with pytest.raises(SuperloraError, match="different model"):
        AppState.load(str(other), [str(run)])
    with pytest.raises(SuperloraError, match="adapter not found"):
        AppState.load(str(other), [str(tmp_path / "missing")])


def test_serve_defaults_to_loopback():
    from superlora.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.model == "smollm2-135m"
    args = build_parser().parse_args(["serve", "--adapter", "a", "b", "--adapter", "c"])
    assert args.adapter == ["a", "b", "c"]


@pytest.mark.real
def test_real_smollm2_served_by_the_cli(tmp_path):
    """`superlora serve` with the real model: E2E generation, and zeroing the proven super weight breaks the
    output while restoring brings back exactly the original."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    cmd = [sys.executable, "-m", "superlora", "serve", "--port", str(port), "--runs", str(tmp_path)]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = _wait_for_server(f"http://127.0.0.1:{port}/", server, tmp_path / "serve.log")
        started = time.perf_counter()
        values = slots(name="The Vaults", eatType="pub", priceRange="more than £30", near="Café Adriatic")
        mr, _, data = client.predict(*values, ["base"], 1, 0.9, 32, api_name="/generate")
        e2e_seconds = time.perf_counter() - started
        assert mr == "name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]"
        assert "Vaults" in data["outputs"]["base"]["output"]
        replies, seconds, prompt = [], [], "The capital of France is Paris, and"
        for api in ("/sw_restore", "/sw_zero", "/sw_restore"):
            started = time.perf_counter()
            replies.append(client.predict("base", prompt, "11:507:1229", 0, 16, api_name=api))
            seconds.append(round(time.perf_counter() - started, 1))
        (original, _, _), (zeroed, status, _), (restored, _, _) = replies
        assert "Zeroed" in status and "bit-for-bit equal" in status
        assert zeroed != original and restored == original
        print(f"real smollm2-135m: E2E greedy {e2e_seconds:.1f} s; explorer restore/zero/restore {seconds} s")
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"superlora serve exited: {log.read_text()[-2000:]}")
        if "serving on" in log.read_text():
            try:
                with ThreadPoolExecutor(1) as pool:
                    return pool.submit(gradio_client.Client, url, verbose=False).result(timeout=30)
            except Exception:  # not accepting connections yet
                pass
        time.sleep(0.5)
    pytest.fail(f"superlora serve did not start within {timeout} s: {log.read_text()[-2000:]}")


def test_each_adapter_is_prompted_with_the_template_its_run_recorded(tmp_path):
    """A chat run's recorded template (with its system prompt) drives its chat; an E2E run's completion template
    drives the Completion tab; the base model keeps its own ways."""
    import json

    from superlora.data.templates import CHATML, ChatTemplate
    from superlora.tasks.e2e.data import TEMPLATE

    model_dir = planted_model_dir(tmp_path / "model")
    runs = {}
    for name, task, template in (
        ("chatrun", {"name": "chat", "sources": [{"path": "x.jsonl"}]}, ChatTemplate(CHATML, "be exact").record()),
        ("e2erun", {"name": "e2e"}, TEMPLATE.record()),
    ):
        run = adapter_run(model_dir, tmp_path / name)
        meta = json.loads((run / "run.json").read_text()) | {"task": task, "template": template, "head": "lm"}
        (run / "run.json").write_text(json.dumps(meta))
        runs[name] = run
    state = AppState.load(str(model_dir), [str(runs["chatrun"]), str(runs["e2erun"])], limits=Limits())
    tok = state.loaded.tokenizer
    assert [a.task for a in state.adapters] == ["chat", "e2e"]
    turn = [{"role": "user", "content": "hello"}]
    assert gen.chat_prompt(state, "hello", [], "", "chatrun") == ChatTemplate(CHATML, "be exact").prompt_ids(tok, turn)
    assert gen.chat_prompt(state, "hello", [], "", "base") == gen.render_chat(tok, turn)  # no template: Role lines
    done = {r.target: r for r in gen.complete(state, "name[the pub]", ["base", "e2erun"], 1, 4)}
    assert done["e2erun"].prompt_format == TEMPLATE.prompt_format and done["base"].prompt_format == "{prompt}"
    assert "\n" not in done["e2erun"].output  # a one-line task stops at the line end
