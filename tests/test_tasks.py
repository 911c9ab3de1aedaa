"""The task layer: E2E unchanged as the first task, and the chat task (formats, exact loss mask, training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from superlora.cli import main
from superlora.config import load_config
from superlora.data.collate import PadCollator
from superlora.data.formats import load_conversations
from superlora.data.shapes import Conversation, Message
from superlora.data.templates import ChatTemplate
from superlora.data.tokenize import IGNORE_INDEX, tokenize_conversation
from superlora.errors import SuperloraError
from superlora.training.config import TrainConfig
from superlora.training.rundir import read_log
from test_training import write_e2e
from tiny import tiny_chat_tokenizer, tiny_model, tiny_tokenizer

THREE_TURNS = Conversation(
    (
        Message("user", "hi"),
        Message("assistant", "hello, how can i help?"),
        Message("user", "what is two plus two?"),
        Message("assistant", "two plus two equals four. #### 4"),
        Message("user", "thanks"),
        Message("assistant", "you are welcome!"),
    )
)


def labelled(row: dict) -> list[int]:
    return [label for label in row["labels"] if label != IGNORE_INDEX]


def smollm2_tokenizer():
    from superlora.models import load_model

    return load_model("smollm2-135m").tokenizer


# -----------------------------------------------------------------------------
# E2E: the first task, with no change in behaviour


# Printed for exactly the run below (fp32, 1 thread). Random batches: by commit f6a6eb2, the last before issue
# 13, whose code gave the same numbers as d0f9d77 (before tasks existed). Length-grouped batches: by the issue-13
# commit, which draws their order from a generator seeded by (seed, epoch) instead of the global RNG, so a resume
# in any epoch is exact; f6a6eb2 and d0f9d77 gave [4.59186, 4.58926, 4.52701, 4.48767, 4.46765, 4.45851].
PINNED_LOSSES = {
    "false": [
        4.589587688446045,
        4.5880937576293945,
        4.531805038452148,
        4.489755630493164,
        4.468343734741211,
        4.4680705070495605,
    ],
    "true": [
        4.579878330230713,
        4.584271430969238,
        4.531943321228027,
        4.490444660186768,
        4.478023529052734,
        4.466592311859131,
    ],
}


@pytest.mark.parametrize("grouping", ["false", "true"])
def test_e2e_training_losses_are_the_pinned_ones(tmp_path, grouping):
    """6 steps on a tiny seeded Llama give the losses printed by the commits named above (PINNED_LOSSES).

    On the real model the committed study's superweights arm (8 steps) gave bit-identical losses and adapter
    bytes before and after the task layer.
    """
    from superlora.training.trainer import train

    tiny_model("llama", 3).save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    write_e2e(tmp_path / "e2e", rows=40)
    items = [
        f"model={tmp_path / 'm'}",
        f"task.source={tmp_path / 'e2e'}",
        "data.max_length=48",
        "optim.batch_size=4",
        "optim.max_steps=6",
        "optim.lr=0.01",
        "optim.warmup_steps=2",
        "log_every=1",
        f"output_dir={tmp_path / 'run'}",
        "layers=[1, 2]",
        "speed.bf16=false",
        "speed.threads=1",
        f"speed.group_by_length={grouping}",
        "seed=7",
    ]
    train(load_config(TrainConfig, None, items))
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    torch.testing.assert_close(losses, PINNED_LOSSES[grouping], rtol=1e-5, atol=1e-5)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["task"]["name"] == "e2e" and meta["head"] == "lm"
    assert meta["template"] == {
        "kind": "completion",
        "prompt_format": "Meaning representation: {prompt}\nDescription:",
        "target_prefix": " ",
        "one_line": True,
    }


def test_recipes_include_a_base_recipe(tmp_path):
    (tmp_path / "base.yaml").write_text("model: m\nlora: {r: 4, alpha: 32}\noptim: {lr: 0.001, batch_size: 4}\n")
    (tmp_path / "ctl.yaml").write_text("base: base.yaml\nlayers: last\noptim: {lr: 0.002}\n")
    cfg = load_config(TrainConfig, tmp_path / "ctl.yaml")
    assert (cfg.model, cfg.layers, cfg.lora.r, cfg.optim.lr, cfg.optim.batch_size) == ("m", "last", 4, 0.002, 4)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(SuperloraError, match="includes itself"):
        load_config(TrainConfig, tmp_path / "loop.yaml")
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(SuperloraError, match="base recipe not found: nowhere.yaml"):
        load_config(TrainConfig, tmp_path / "lost.yaml")
    shipped = load_config(TrainConfig, Path(__file__).parents[1] / "configs" / "e2e-random.yaml")
    assert shipped.layers == "random" and shipped.lora.alpha == 32 and shipped.task.name == "e2e"


def test_task_choice_is_checked_with_did_you_mean():
    with pytest.raises(SuperloraError, match="unknown task 'chta' \\(did you mean 'chat'\\?\\)"):
        load_config(TrainConfig, None, ["task.name=chta"])
    with pytest.raises(SuperloraError, match="did you mean 'task.sources\\[0\\].weight'"):
        load_config(TrainConfig, None, ["task.name=chat", "task.sources=[{path: a.jsonl, wieght: 2}]"])
    with pytest.raises(SuperloraError, match="'task.sources\\[0\\].weight': must be a finite number, got nan"):
        load_config(TrainConfig, None, ["task.name=chat", "task.sources=[{path: a.jsonl, weight: .nan}]"])
    with pytest.raises(SuperloraError, match="weight must be a positive finite number"):
        load_config(TrainConfig, None, ["task.name=chat", "task.sources=[{path: a.jsonl, weight: -1}]"])


# -----------------------------------------------------------------------------
# The assistant-only loss mask


@pytest.mark.parametrize("which", ["tiny", pytest.param("smollm2", marks=pytest.mark.real)])
def test_assistant_mask_is_exactly_the_assistant_tokens_and_their_end_of_turn(which):
    """Token by token: each assistant turn's own tokens, then the template's end-of-turn token; nothing else.

    SmolLM2's template has no {% generation %} markers (and adds a system turn), so the mask comes from
    rendering prefixes; the expectation here is built independently, from each reply tokenized on its own.
    """
    tok = tiny_chat_tokenizer() if which == "tiny" else smollm2_tokenizer()
    template = ChatTemplate()
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert template.stop_ids(tok)[0] == eot
    row = tokenize_conversation(tok, template, THREE_TURNS, max_length=512)
    replies = [m.content for m in THREE_TURNS.messages if m.role == "assistant"]
    expected = [i for reply in replies for i in [*tok(reply, add_special_tokens=False)["input_ids"], eot]]
    assert labelled(row) == expected
    # each labelled run starts right after the generation prompt "<|im_start|>assistant\n"
    starts = [
        t for t, label in enumerate(row["labels"]) if label != IGNORE_INDEX and row["labels"][t - 1] == IGNORE_INDEX
    ]
    assert len(starts) == 3
    before = ["".join(tok.decode(row["input_ids"][:s], skip_special_tokens=False).split()) for s in starts]
    assert all(text.endswith("<|im_start|>assistant") for text in before), before

    last = tokenize_conversation(tok, template, THREE_TURNS, 512, loss_on="last")
    assert labelled(last) == [*tok(replies[-1], add_special_tokens=False)["input_ids"], eot]
    every = tokenize_conversation(tok, template, THREE_TURNS, 512, loss_on="all")
    assert every["labels"] == every["input_ids"]


@pytest.mark.parametrize("which", ["tiny", pytest.param("smollm2", marks=pytest.mark.real)])
def test_pad_is_not_eos_and_the_end_of_turn_label_survives_padding(which):
    tok = tiny_chat_tokenizer() if which == "tiny" else smollm2_tokenizer()
    template = ChatTemplate()
    pad = template.pad_id(tok)
    assert pad != tok.eos_token_id and pad not in template.stop_ids(tok)
    short = Conversation((Message("user", "hi"), Message("assistant", "hello")))
    rows = [tokenize_conversation(tok, template, c, 512) for c in (short, THREE_TURNS)]
    batch = PadCollator(pad)(rows)
    n = len(rows[0]["input_ids"])
    assert batch["input_ids"][0, n:].eq(pad).all()  # padding is pad, not eos
    kept = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert kept[-1] == template.stop_ids(tok)[0]  # the reply's end is still learnt
    assert batch["labels"][0, n:].eq(IGNORE_INDEX).all()


def test_a_batch_with_no_label_is_refused():
    row = {"input_ids": [3, 4, 5], "attention_mask": [1, 1, 1], "labels": [IGNORE_INDEX] * 3}
    with pytest.raises(SuperloraError, match="no token to train on"):
        PadCollator(1)([row, dict(row)])


def test_a_conversation_cut_to_nothing_is_dropped_not_trained_on():
    tok = tiny_chat_tokenizer()
    assert tokenize_conversation(tok, ChatTemplate(), THREE_TURNS, max_length=6) is None


# -----------------------------------------------------------------------------
# Row formats and bad rows


SHAREGPT = {"conversations": [{"from": "human", "value": "what is one plus one?"}, {"from": "gpt", "value": "two"}]}
MESSAGES = {"messages": [{"role": "user", "content": "what is one plus one?"}, {"role": "assistant", "content": "two"}]}
ALPACA = {"instruction": "what is one plus one?", "input": "", "output": "two"}


def test_sharegpt_messages_and_alpaca_in_every_file_type_give_the_same_conversation(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = Conversation((Message("user", "what is one plus one?"), Message("assistant", "two")))
    for name, row in (("sharegpt", SHAREGPT), ("messages", MESSAGES), ("alpaca", ALPACA)):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
        (tmp_path / f"{name}.json").write_text(json.dumps([row, row], indent=2))
        cells = {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
        import csv

        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(cells))
            writer.writeheader()
            writer.writerows([cells, cells])
        pq.write_table(pa.Table.from_pylist([row, row]), tmp_path / f"{name}.parquet")
        for suffix in ("jsonl", "json", "csv", "parquet"):
            for fmt in ("auto", name):
                assert load_conversations(str(tmp_path / f"{name}.{suffix}"), fmt) == [want, want], (name, suffix)


BAD_ROWS = {
    "unknown role": (
        {"conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]},
        "unknown role 'robot'",
    ),
    "empty turn": (
        {"conversations": [{"from": "human", "value": " "}, {"from": "gpt", "value": "y"}]},
        "turn 1 (user) is empty",
    ),
    "ends with user": (
        {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
        "ends with a user turn, not the assistant",
    ),
    "no assistant": ({"messages": [{"role": "user", "content": "x"}]}, "has no assistant turn"),
    "late system": (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "y"},
            ]
        },
        "a system turn may only come first",
    ),
    "empty output": ({"instruction": "x", "input": "", "output": ""}, "empty 'output'"),
    "unknown shape": ({"text": "x"}, "cannot tell the row format"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_each_bad_row_is_one_line_with_file_and_line(case, tmp_path, capsys):
    row, message = BAD_ROWS[case]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(SHAREGPT) + "\n\n" + json.dumps(row) + "\n")  # a blank line: the bad row is line 3
    code = main(["data", "check", "task.name=chat", f"task.sources=[{{path: {path}}}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"{path} line 3: " in err[0] and message in err[0], err[0]


def test_invalid_json_and_json_arrays_name_the_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(SHAREGPT) + "\n{not json\n")
    with pytest.raises(SuperloraError, match="a.jsonl line 2: invalid JSON"):
        load_conversations(str(tmp_path / "a.jsonl"))
    (tmp_path / "b.json").write_text("[\n" + json.dumps(SHAREGPT) + ",\n" + json.dumps({"messages": []}) + "\n]")
    with pytest.raises(SuperloraError, match="b.json line 3: 'messages' must be a non-empty list"):
        load_conversations(str(tmp_path / "b.json"))
    with pytest.raises(SuperloraError, match="chat data file not found"):
        load_conversations(str(tmp_path / "missing.jsonl"))


def test_sources_mix_by_weight(tmp_path):
    from superlora.tasks import get_task

    for name, n in (("a", 10), ("b", 10)):
        rows = [
            {"messages": [{"role": "user", "content": f"{name}{i}"}, {"role": "assistant", "content": "x"}]}
            for i in range(n)
        ]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(map(json.dumps, rows)))
    sources = f"[{{path: {tmp_path / 'a.jsonl'}, weight: 2}}, {{path: {tmp_path / 'b.jsonl'}, weight: 0.5}}]"
    task = get_task(
        load_config(TrainConfig, None, ["task.name=chat", f"task.sources={sources}", "task.heldout=3"]).task
    )
    train, heldout = task.train_samples(None), task.heldout_samples()
    firsts = [c.messages[0].content[0] for c in train + heldout]
    assert firsts.count("a") == 20 and firsts.count("b") == 5 and len(heldout) == 3
    assert len({c.messages[0].content for c in train + heldout if c.messages[0].content[0] == "b"}) == 5
    assert task.train_samples(None) == train  # seeded: the same mix every time


# -----------------------------------------------------------------------------
# Chat runs on a tiny model


def write_chat(folder: Path, rows: int = 48) -> Path:
    """Tiny arithmetic conversations in ShareGPT form, in the tiny chat tokenizer's words."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["one", "two", "three", "four"]
    lines = []
    for i in range(rows):
        a, b = words[i % 4], words[(i // 4) % 4]
        lines.append(
            {
                "conversations": [
                    {"from": "human", "value": f"what is {a} plus {b}?"},
                    {"from": "gpt", "value": f"the sum of {a} and {b} . #### {i % 4 + (i // 4) % 4 + 2}"},
                ]
            }
        )
    (folder / "chat.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    return folder / "chat.jsonl"


@pytest.fixture
def chat_args(tmp_path):
    def make(run: str = "run", **extra) -> list[str]:
        model = tmp_path / "model"
        if not model.is_dir():
            tiny_model("llama").save_pretrained(model)
            tiny_chat_tokenizer().save_pretrained(model)
        data = write_chat(tmp_path / "data")
        args = {
            "model": model,
            "task.name": "chat",
            "task.sources": f"[{{path: {data}}}]",
            "task.test": f"{{path: {data}}}",
            "task.heldout": 8,
            "task.answer": "gsm8k",
            "data.max_length": 48,
            "optim.batch_size": 4,
            "optim.max_steps": 16,
            "optim.lr": 0.01,
            "optim.label_smoothing": 0.0,
            "lora.dropout": 0.0,
            "lora.r": 8,
            "lora.targets": "[q_proj, v_proj, up_proj, down_proj]",
            "log_every": 1,
            "eval_every": 8,
            "checkpoint.every": 4,
            "speed.bf16": "false",
            "output_dir": tmp_path / run,
        } | extra
        return [f"{k}={v}" for k, v in args.items()]

    return make


def test_a_tiny_chat_run_learns_and_records_how_to_prompt_it(chat_args, tmp_path, capsys):
    from superlora.training.trainer import train

    summary = train(load_config(TrainConfig, None, chat_args()))
    run = tmp_path / "run"
    losses = [r["loss"] for r in read_log(run / "log.jsonl")]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    evals = read_log(run / "eval.jsonl")
    assert [e["step"] for e in evals] == [8, 16]
    import math

    for e in evals:  # the perplexity is the exponential of the logged held-out loss, over the same tokens each time
        assert math.isclose(e["eval_perplexity"], math.exp(e["eval_loss"]), rel_tol=1e-4)
    assert evals[0]["eval_tokens"] == evals[1]["eval_tokens"] > 0
    assert summary["heldout_loss"] == evals[-1]["eval_loss"]
    assert "held-out loss at step 16" in capsys.readouterr().out
    meta = json.loads((run / "run.json").read_text())
    assert meta["task"]["name"] == "chat" and meta["template"]["kind"] == "chat" and meta["head"] == "lm"
    assert "<|im_start|>" in meta["template"]["chat_template"]

    # evaluate needs no flag to prompt the adapter as it was trained: model, task and template from the run
    assert main(["evaluate", "--adapter", str(run), "limit=4", "decode.max_new_tokens=6", "--quiet"]) == 0
    scores = json.loads((run / "eval-test-limit4" / "scores.json").read_text())
    assert scores["task"] == "chat" and scores["count"] == 4 and scores["decode"]["num_beams"] == 1
    assert set(scores["metrics"]) == {"exact_match", "exact_match_last_number", "answered", "loss", "perplexity"}
    outputs = [json.loads(line) for line in (run / "eval-test-limit4" / "outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 4 and all("gold" in o for o in outputs)


def test_a_resumed_chat_run_has_the_same_losses(chat_args, tmp_path):
    from transformers import TrainerCallback

    from superlora.training.trainer import train

    class Crash(Exception):
        pass

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise Crash

    train(load_config(TrainConfig, None, chat_args("full", **{"optim.max_steps": 10})))
    items = chat_args("crashed", **{"optim.max_steps": 10})
    with pytest.raises(Crash):
        train(load_config(TrainConfig, None, items), callbacks=[CrashAt()])
    summary = train(load_config(TrainConfig, None, [*items, "resume=true"]))
    assert summary["resumed_from_step"] == 4
    full, resumed = (read_log(tmp_path / r / "log.jsonl") for r in ("full", "crashed"))
    assert [r["step"] for r in resumed] == list(range(1, 11))
    torch.testing.assert_close([r["loss"] for r in resumed], [r["loss"] for r in full], rtol=1e-5, atol=1e-6)
    full_eval, resumed_eval = (read_log(tmp_path / r / "eval.jsonl") for r in ("full", "crashed"))
    assert [e["step"] for e in resumed_eval] == [8, 10]
    torch.testing.assert_close([e["eval_loss"] for e in resumed_eval], [e["eval_loss"] for e in full_eval])


def test_the_committed_study_recipe_means_what_it_meant_before_the_task_layer(tmp_path):
    """configs/study.yaml as it was committed before tasks (data.source/variant, eval.variant) and as it is now."""
    from superlora.study.config import StudyConfig

    old = tmp_path / "old.yaml"
    old.write_text(
        "train:\n  data: {source: /x, variant: cleaned, split: train, limit: null, max_length: 128}\n"
        "eval:\n  split: test\n  variant: original\n"
    )
    new = load_config(StudyConfig, Path(__file__).parents[1] / "configs" / "study.yaml", ["train.task.source=/x"])
    was = load_config(StudyConfig, old)
    assert was.train.task == new.train.task and was.train.data == new.train.data and was.eval.split == new.eval.split


def test_a_hub_dataset_that_cannot_be_loaded_is_one_line():
    """Offline (the tests' HF_HUB_OFFLINE=1) a Hub id says so and names the local alternative."""
    with pytest.raises(SuperloraError, match="no such local file, and the Hugging Face Hub dataset cannot be loaded"):
        load_conversations("nobody-here/no-such-chat-set")
