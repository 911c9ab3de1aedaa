"""``superlora export --format space``: a Space folder whose app.py, started on its own with nothing of superlora,
answers through Gradio's API exactly what superlora generates for the run; its header and pins; bad input."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from app_support import free_port
from superlora.cli import main
from test_export import fails, tiny_bpe_model_dir
from test_tasks import write_chat
from test_training import train_cfg, write_e2e

gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

MRS = ["name[the pub], eatType[pub], near[paris]", "name[paris], eatType[pub], near[the restaurant]"]
QUESTIONS = ["what is one plus two?", "what is two plus two?"]
SPACES_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
# what app.py may import: the standard library and what requirements.txt installs
APP_IMPORTS = {"__future__", "json", "os", "pathlib", "gradio", "torch", "transformers"}


def export_space(run: Path, out: Path, *extra: str) -> Path:
    assert main(["export", str(run), "--format", "space", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory) -> Path:
    """A tiny Llama E2E run (byte-level BPE tokenizer), trained a few steps at a high learning rate."""
    from superlora.training.trainer import train

    root = tmp_path_factory.mktemp("space-e2e")
    items = {
        "model": tiny_bpe_model_dir(root / "llama"),
        "task.source": write_e2e(root / "e2e"),
        "data.max_length": 128,
        "optim.batch_size": 4,
        "optim.max_steps": 12,
        "optim.lr": 0.1,
        "checkpoint.every": 12,
        "speed.bf16": "false",
        "output_dir": root / "run",
    }
    train(train_cfg([f"{k}={v}" for k, v in items.items()]))
    return root / "run"


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> Path:
    """A tiny Llama chat run: ChatML word-level tokenizer, arithmetic conversations, a system prompt."""
    from transformers import AutoModelForCausalLM

    from superlora.training.trainer import train
    from tiny import tiny_chat_tokenizer, tiny_config

    root = tmp_path_factory.mktemp("space-chat")
    tokenizer = tiny_chat_tokenizer()
    config = tiny_config("llama")
    config.vocab_size, config.max_position_embeddings = len(tokenizer), 1024  # every id a word; two 320-token turns
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    items = {
        "model": root / "model",
        "task.name": "chat",
        "task.sources": f"[{{path: {write_chat(root / 'data')}}}]",
        "task.system": "answer with the sum .",
        "data.max_length": 48,
        "optim.batch_size": 4,
        "optim.max_steps": 64,
        "optim.lr": 0.1,
        "optim.label_smoothing": 0.0,
        "lora.dropout": 0.0,
        "lora.r": 8,
        "lora.targets": "[q_proj, v_proj, up_proj, down_proj]",
        "checkpoint.every": 64,
        "speed.bf16": "false",
        "output_dir": root / "run",
    }
    train(train_cfg([f"{k}={v}" for k, v in items.items()]))
    return root / "run"


@pytest.fixture(scope="module")
def e2e_space(e2e_run, tmp_path_factory) -> Path:
    return export_space(e2e_run, tmp_path_factory.mktemp("e2e-out") / "space")


def superlora_replies(run: Path, prompts: list) -> list[str]:
    """What superlora itself generates for ``prompts`` (as ``evaluate`` does): the merge in memory, the run's
    template and its task's decoding settings."""
    from superlora.evaluation.decode import generate
    from superlora.training.merge import merged_model
    from superlora.training.rundir import open_run

    folder = open_run(run)
    merged, loaded, _ = merged_model(run)
    return [
        generate(merged.eval(), loaded.tokenizer, [p], folder.task().decode_defaults(), folder.template())[0]
        for p in prompts
    ]


@contextmanager
def serving(space: Path, tmp_path: Path) -> Iterator[object]:
    """``python app.py`` in the Space folder, offline on a free loopback port; a gradio_client on it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "SUPERLORA_"))}
    env |= {
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"app.py exited ({server.returncode}): {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within 300 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        client = gradio_client.Client(url, verbose=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


# -----------------------------------------------------------------------------
# The folder


def test_a_space_holds_the_app_its_pinned_requirements_the_spaces_header_and_the_merged_model(e2e_space):
    from packaging.requirements import Requirement

    assert sorted(p.name for p in e2e_space.iterdir()) == [
        "README.md",
        "app.py",
        "model",
        "prompt.json",
        "requirements.txt",
    ]
    assert not list(e2e_space.parent.glob(".*"))  # no staging folder left behind
    model_files = {p.name for p in (e2e_space / "model").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= model_files

    readme = (e2e_space / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("---\n")
    head, body = readme[4:].split("\n---\n", 1)
    header = yaml.safe_load(head)
    gradio_version = importlib.metadata.version("gradio")
    assert header["sdk"] == "gradio" and header["sdk_version"] == gradio_version and header["app_file"] == "app.py"
    assert header["title"] == "run" and header["emoji"] and {header["colorFrom"], header["colorTo"]} <= SPACES_COLORS
    assert len(header["short_description"]) <= 60 and header["datasets"] == ["tuetschek/e2e_nlg_cleaned"]
    assert "license" not in header  # a local base: its licence is not known
    assert body.lstrip().startswith("# run\n") and "Exported by `superlora export --format space`" in body
    assert "- task: e2e" in body and "pip install -r requirements.txt && python app.py" in body

    pins = [Requirement(line) for line in (e2e_space / "requirements.txt").read_text().splitlines()]
    assert [r.name for r in pins] == ["torch", "transformers", "gradio", "safetensors"]
    for pin in pins:
        here = importlib.metadata.version(pin.name).split("+")[0]
        assert str(pin.specifier) == f"~={here}" and pin.specifier.contains(here), pin

    settings = json.loads((e2e_space / "prompt.json").read_text())
    assert settings["kind"] == "completion" and settings["task"] == "e2e"
    assert settings["prompt_format"] == "Meaning representation: {prompt}\nDescription:"
    assert settings["stop_strings"] == ["<|endoftext|>", "\n"]  # eos, and the line break ending a one-line text
    assert "llama" in settings["description"] and "/" not in settings["description"]  # no local paths shown
    assert settings["decode"] == {
        "num_beams": 10,
        "length_penalty": 0.9,
        "no_repeat_ngram_size": 4,
        "max_new_tokens": 64,
    }


def test_the_app_imports_nothing_a_space_does_not_install(e2e_space):
    tree = ast.parse((e2e_space / "app.py").read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= APP_IMPORTS, imported - APP_IMPORTS
    assert len((e2e_space / "app.py").read_text().splitlines()) <= 130  # the user's starting point: short


# -----------------------------------------------------------------------------
# The app, started as a Space starts it, answers what superlora generates


def test_the_e2e_space_answers_through_gradio_exactly_what_superlora_generates(e2e_run, e2e_space, tmp_path):
    """With the task's decoding, as ``evaluate`` decodes (E2E: beam 10): the same beams, the same stop."""
    expected = superlora_replies(e2e_run, MRS)
    assert all(expected), expected  # a real comparison: the tiny run writes something
    with serving(e2e_space, tmp_path) as client:
        got = [client.predict(mr, api_name="/generate") for mr in MRS]
    assert got == expected


def test_the_chat_space_answers_through_gradio_exactly_what_superlora_generates(chat_run, tmp_path):
    """Greedy (the chat task's decoding), the run's system prompt and chat template, the conversation so far."""
    space = export_space(chat_run, tmp_path / "space")
    settings = json.loads((space / "prompt.json").read_text())
    assert settings["kind"] == "chat" and settings["system"] == "answer with the sum ."
    assert settings["decode"]["num_beams"] == 1 and settings["stop_strings"] == ["<|im_end|>"]
    # the run's chat template travels in the saved tokenizer
    run_template = json.loads((chat_run / "run.json").read_text())["template"]["chat_template"]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(space / "model").chat_template == run_template

    # a two-turn conversation: the second reply is generated after the first turn, as superlora renders it
    first, second = QUESTIONS
    reply = superlora_replies(chat_run, [[{"role": "user", "content": first}]])[0]
    turns = [{"role": "user", "content": first}, {"role": "assistant", "content": reply}]
    asked = {"role": "user", "content": second}
    follow_up, alone = superlora_replies(chat_run, [[*turns, asked], [asked]])
    assert reply and follow_up and follow_up != alone, (reply, follow_up)  # the history changes the reply
    with serving(space, tmp_path) as client:  # Gradio keeps a client's conversation
        got = [client.predict(first, api_name="/chat"), client.predict(second, api_name="/chat")]
    assert got == [reply, follow_up]


# -----------------------------------------------------------------------------
# dtypes, the Hub


def test_a_space_keeps_bf16_weights_when_asked(e2e_run, tmp_path):
    from safetensors import safe_open

    space = export_space(e2e_run, tmp_path / "space", "--dtype", "bf16")
    with safe_open(space / "model" / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118 (safe_open has no __iter__)


def test_a_space_is_pushed_as_a_gradio_space_repository(e2e_run, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    from superlora.export import hub

    calls = []

    class FakeApi:
        def create_repo(self, repo, **kwargs):
            calls.append(("create_repo", repo, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()), kwargs))
            return "https://huggingface.co/spaces/me/x/commit/abc"

    monkeypatch.setattr(hub, "offline_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "space"
    assert main(["export", str(e2e_run), "--format", "space", "--out", str(out), "--push-to-hub", "me/x"]) == 0
    assert "pushed to the Hub: https://huggingface.co/spaces/me/x/commit/abc" in capsys.readouterr().out
    (_, repo, created), (_, files, uploaded) = calls
    assert repo == "me/x" and created["repo_type"] == "space" and created["space_sdk"] == "gradio"
    assert uploaded["repo_type"] == "space" and uploaded["repo_id"] == "me/x"
    assert files == ["README.md", "app.py", "model", "prompt.json", "requirements.txt"]


def test_pushing_a_space_offline_is_one_line_and_writes_nothing(e2e_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "space"
    err = fails(capsys, "export", str(e2e_run), "--format", "space", "--out", str(out), "--push-to-hub", "me/x")
    assert "offline" in err and "HF_HUB_OFFLINE" in err
    assert not out.exists() and not list(tmp_path.iterdir())


# -----------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_a_space_of_a_missing_run_is_one_line(tmp_path, capsys):
    err = fails(capsys, "export", str(tmp_path / "nowhere"), "--format", "space")
    assert "run directory not found" in err
    assert not list(tmp_path.iterdir())


def test_a_space_into_a_folder_that_is_not_empty_is_one_line_and_leaves_it_untouched(e2e_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    err = fails(capsys, "export", str(e2e_run), "--format", "space", "--out", str(out))
    assert "already exists" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_q8_0_is_refused_for_a_space(e2e_run, tmp_path, capsys):
    err = fails(capsys, "export", str(e2e_run), "--format", "space", "--dtype", "q8_0", "--out", str(tmp_path / "x"))
    assert err == "superlora: error: q8_0 is a GGUF block format; a Space's merged model is f32, f16 or bf16"
    assert not list(tmp_path.iterdir())


def test_a_space_of_a_classifier_run_is_one_line_before_any_work(tmp_path, capsys):
    """A classification run (SST-2's head) generates no text: refused before the merge, nothing written."""
    from superlora.training import rundir

    run = tmp_path / "sst2-run"
    rundir.create_run_dir(run, {"model": "x", "lora": {"r": 4}}, {"model": "x", "task": {"name": "sst2"}})
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    err = fails(capsys, "export", str(run), "--format", "space")
    assert "--format space serves text generation; task sst2 does not generate (classifier head" in err
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "config.yaml", "run.json"]
