"""The DialogSum task: loss on the summary only, long dialogues cut (never the summary), ROUGE as papers report
it (best reference per item, then the mean), one-line errors for bad data, and a tiny run end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from superlora.cli import main
from superlora.config import load_config
from superlora.data.shapes import Completion, Conversation
from superlora.data.tokenize import IGNORE_INDEX
from superlora.errors import SuperloraError
from superlora.tasks import get_task
from superlora.tasks.base import EvalItem, ScoreOptions
from superlora.tasks.dialogsum import DialogSumConfig, DialogSumTask, rouge_scores
from superlora.training.config import TrainConfig
from tiny import tiny_chat_tokenizer, tiny_model, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM_DIR = Path(os.environ.get("SUPERLORA_DIALOGSUM_DIR", REPO.parent / "shared" / "data" / "dialogsum"))

DIALOGUE = "#Person1#: what is the capital of france?\n#Person2#: paris is the capital of france."
SUMMARY = "paris is the capital of france"


@pytest.fixture
def dialogsum_dir() -> Path:
    if not (DIALOGSUM_DIR / "test.jsonl").is_file():
        pytest.skip(f"DialogSum data not found at {DIALOGSUM_DIR}")
    return DIALOGSUM_DIR


def task(**cfg) -> DialogSumTask:
    return get_task(DialogSumConfig(**{"source": "unused", **cfg}))


def labelled(row: dict) -> list[int]:
    return [label for label in row["labels"] if label != IGNORE_INDEX]


def item(*references: str) -> EvalItem:
    return EvalItem("d", "dialogue", list(references))


def write_split(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


GOOD = {"fname": "train_0", "dialogue": DIALOGUE, "summary": SUMMARY, "topic": "t"}


# -----------------------------------------------------------------------------
# The loss mask and long dialogues


@pytest.mark.parametrize("which", ["tiny", pytest.param("smollm2", marks=pytest.mark.real)])
def test_loss_falls_on_the_summary_only(which):
    """Plain prompt: the labels are exactly the summary's tokens and eos; the instruction and dialogue are masked."""
    if which == "tiny":
        tok = tiny_tokenizer()
    else:
        from superlora.models import load_model

        tok = load_model("smollm2-135m").tokenizer
    t = task()
    template = t.template()
    row = t.tokenize(tok, template, Completion(DIALOGUE, SUMMARY), max_length=512)
    summary = tok(" " + SUMMARY, add_special_tokens=False)["input_ids"]
    assert labelled(row) == [*summary, tok.eos_token_id]
    prompt = template.prompt_ids(tok, DIALOGUE)
    assert row["input_ids"][: len(prompt)] == prompt and row["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert tok.eos_token_id in template.stop_ids(tok)  # generation stops where the summary ended in training


def test_with_the_chat_template_the_loss_falls_on_the_reply_and_its_end_of_turn():
    tok = tiny_chat_tokenizer()
    t = task(chat_template=True)
    sample = t._sample(_row(DIALOGUE, SUMMARY))
    assert isinstance(sample, Conversation) and sample.messages[0].content.endswith(DIALOGUE)
    row = t.tokenize(tok, t.template(), sample, max_length=512)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert labelled(row) == [*tok(SUMMARY, add_special_tokens=False)["input_ids"], eot]
    assert t.template().stop_ids(tok)[0] == eot


def _row(dialogue: str, summary: str):
    from superlora.tasks.dialogsum import Dialogue

    return Dialogue("x", dialogue, (summary,))


@pytest.mark.parametrize("chat", [False, True])
def test_a_long_dialogue_loses_its_end_and_keeps_its_summary_and_the_count_is_said(chat, capsys):
    tok = tiny_chat_tokenizer() if chat else tiny_tokenizer()
    t = task(chat_template=chat)
    template = t.template()
    long = " ".join(["#Person1#: what is two plus two?"] * 40)
    samples = [t._sample(_row(DIALOGUE, SUMMARY)), t._sample(_row(long, SUMMARY))]
    whole = t.tokenize(tok, template, samples[1], max_length=10**6)
    assert len(whole["input_ids"]) > 60
    rows, dropped = t.tokenize_all(tok, template, samples, max_length=60)
    assert dropped == 0 and len(rows) == 2 and all(len(r["input_ids"]) <= 60 for r in rows)
    assert len(rows[1]["input_ids"]) >= 55  # cut close to the limit, not far below it
    assert labelled(rows[1]) == labelled(whole)  # the whole summary (and its end token) survives
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["dialogsum: 1 of 2 dialogues cut at the end to fit max_length=60 (summaries kept whole)"]


def test_a_summary_that_cannot_fit_is_left_out_and_counted(capsys):
    tok = tiny_tokenizer()
    t = task()
    rows, dropped = t.tokenize_all(tok, t.template(), [Completion(DIALOGUE, " ".join([SUMMARY] * 20))], 40)
    assert (rows, dropped) == ([], 1)
    assert "1 left out, their summary alone too long" in capsys.readouterr().out


# -----------------------------------------------------------------------------
# ROUGE


def test_rouge_of_an_output_equal_to_one_of_three_references_is_one():
    refs = ["the doctor sends him to a specialist.", "Person2 cannot breathe well.", "a visit to the doctor"]
    scores = task().score([item(*refs)], ["Person2 cannot breathe well."], ScoreOptions())["metrics"]
    assert scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == 1.0
    assert scores["output_words"] == 4


def test_rouge_matches_hand_computed_values():
    """Counted by hand. 'the doctor will call' against 'the doctor will call back tomorrow': 4 of 4 unigrams and
    3 of 3 bigrams match, of 6 and 5 in the reference: F1 = 2*1*(4/6)/(1+4/6) = 0.8, F2 = 0.75, LCS 4 -> 0.8.
    With the Porter stemmer 'arrest' matches 'arrested': 'the police arrest men' against 'police arrested the men'
    has all 4 unigrams (1.0), 1 of 3 bigrams (1/3) and an LCS of 3 (police arrest men: 0.75)."""
    got = rouge_scores(
        [["the doctor will call back tomorrow"], ["police arrested the men"]],
        ["the doctor will call", "the police arrest men"],
    )
    assert got[0] == pytest.approx({"rouge1": 0.8, "rouge2": 0.75, "rougeL": 0.8})
    assert got[1] == pytest.approx({"rouge1": 1.0, "rouge2": 1 / 3, "rougeL": 0.75})


def test_rouge_takes_the_best_reference_per_type_then_the_mean_over_items():
    """'cat dog bird fish' against 'fish bird dog cat' (every word, no bigram in order, LCS 1) and 'cat dog horse
    cow' (2 words, 1 bigram, LCS 2): ROUGE-1 takes the first reference (1.0), ROUGE-2 and ROUGE-L the second."""
    refs = ["fish bird dog cat", "cat dog horse cow"]
    (best,) = rouge_scores([refs], ["cat dog bird fish"])
    assert best == pytest.approx({"rouge1": 1.0, "rouge2": 1 / 3, "rougeL": 0.5})
    items, outputs = [item(*refs), item("the doctor will call back tomorrow")], ["cat dog bird fish", "nothing"]
    metrics = task().score(items, outputs, ScoreOptions())["metrics"]
    assert metrics["rouge1"] == pytest.approx(0.5) and metrics["rougeL"] == pytest.approx(0.25)


def test_item_values_give_the_corpus_rouge_l_for_the_paired_bootstrap():
    import numpy as np

    t = task()
    items = [item("the doctor will call back tomorrow"), item("police arrested the men"), item("a b")]
    outputs = ["the doctor will call", "the police arrest men", ""]
    values, statistic = t.item_values(items, outputs)
    assert values.tolist() == pytest.approx([0.8, 0.75, 0.0])
    assert statistic(values) == pytest.approx(t.score(items, outputs, ScoreOptions())["metrics"]["rougeL"])
    assert statistic(values[np.array([0, 0])]) == pytest.approx(0.8)
    assert t.primary.name == "rougeL" and t.secondary.name == "rouge2"


def test_outputs_are_written_without_the_reference_texts_and_read_back(tmp_path):
    t = task()
    items = [EvalItem("test_0", "d0", ["a", "b", "c"]), EvalItem("test_1", "d1", ["x", "y", "z"])]
    outputs = ["a", "q"]
    assert t.write_outputs(tmp_path, items, outputs, t.score(items, outputs, ScoreOptions())) == ["outputs.jsonl"]
    records = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert records[0]["fname"] == "test_0" and records[0]["references"] == 3  # a count: the texts are CC BY-NC-SA
    assert (records[0]["output"], records[0]["rouge1"], records[1]["rougeL"]) == ("a", 1.0, 0.0)
    assert t.read_outputs(tmp_path, items) == outputs
    assert t.read_outputs(tmp_path, items[::-1]) is None  # other items: not these outputs
    assert t.read_outputs(tmp_path / "none", items) is None


# -----------------------------------------------------------------------------
# The registry, the recipe and the real data


def test_the_recipe_loads_and_a_misspelt_task_name_gets_did_you_mean():
    cfg = load_config(TrainConfig, REPO / "configs" / "dialogsum.yaml", ["task.source=../shared/data/dialogsum"])
    assert isinstance(cfg.task, DialogSumConfig) and cfg.task.source == "../shared/data/dialogsum"
    assert (cfg.model, cfg.data.max_length, cfg.lora.r, cfg.task.chat_template) == ("smollm2-135m", 512, 8, False)
    assert isinstance(get_task(cfg.task), DialogSumTask)
    with pytest.raises(SuperloraError, match="unknown task 'dialogsun' \\(did you mean 'dialogsum'\\?\\)"):
        load_config(TrainConfig, None, ["task.name=dialogsun"])
    with pytest.raises(SuperloraError, match="did you mean 'task.heldout'"):
        load_config(TrainConfig, None, ["task.name=dialogsum", "task.heldot=3"])
    assert load_config(TrainConfig, None, ["task.name=dialogsum", "task.chat_template=chatml"]).task.chat_template


def test_the_real_data_read_with_every_reference(dialogsum_dir, capsys):
    t = task(source=str(dialogsum_dir))
    assert len(t.train_samples(None)) == 12_460 and len(t.heldout_samples()) == 100
    test, validation = t.eval_items("test", None), t.eval_items("validation", 5)
    assert len(test) == 500 and {len(i.references) for i in test} == {3} and len(validation) == 5
    assert test[0].key == "test_0" and test[0].prompt.startswith("#Person1#: Ms. Dawson")
    assert test[0].references[0].startswith("Ms. Dawson helps #Person1# to write a memo")
    assert all("\n" not in ref for i in test for ref in i.references)  # one paragraph: a line break ends decoding
    assert main(["data", "check", "task.name=dialogsum", "--data", str(dialogsum_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[1:]] == [
        ["train", "12,460", "1"],
        ["validation", "500", "1"],
        ["test", "500", "3"],
    ]


# -----------------------------------------------------------------------------
# Bad input: one line each, before anything is written


BAD = {
    "missing folder": ({}, "task.source: DialogSum data folder not found: {root}/nowhere"),
    "missing file": ({"train": [GOOD]}, "DialogSum validation file not found: {root}/data/validation.jsonl"),
    "empty dialogue": (
        {"validation": [GOOD, {**GOOD, "dialogue": "  \n"}]},
        "{root}/data/validation.jsonl line 2: empty dialogue",
    ),
    "empty summary": (
        {"validation": [{**GOOD, "summary": ""}]},
        "{root}/data/validation.jsonl line 1: empty summary",
    ),
    "empty second reference": (
        {"validation": [{"fname": "t", "dialogue": DIALOGUE, "summary1": "a", "summary2": " ", "summary3": "c"}]},
        "{root}/data/validation.jsonl line 1: empty summary2",
    ),
    "no summary": (
        {"validation": [{"fname": "t", "dialogue": DIALOGUE}]},
        "{root}/data/validation.jsonl line 1: no 'summary' field",
    ),
    "not json": ({"validation": ["{oops"]}, "{root}/data/validation.jsonl line 1: invalid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_input_is_one_line(case, tmp_path, capsys):
    splits, message = BAD[case]
    for name, rows in splits.items():
        if rows and isinstance(rows[0], str):
            (tmp_path / "data").mkdir(exist_ok=True)
            (tmp_path / "data" / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
        else:
            write_split(tmp_path / "data", name, rows)
    source = tmp_path / ("data" if splits else "nowhere")
    assert main(["data", "check", "task.name=dialogsum", f"task.source={source}", "--split", "validation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("superlora: error: " + message.format(root=tmp_path)), err[0]


def test_no_source_at_all_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("SUPERLORA_DIALOGSUM_DIR", raising=False)
    assert main(["data", "check", "task.name=dialogsum"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "name the DialogSum data folder" in err[0] and "SUPERLORA_DIALOGSUM_DIR" in err[0]


def test_the_environment_names_the_folder_when_the_recipe_does_not(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SUPERLORA_DIALOGSUM_DIR", str(tmp_path / "gone"))
    assert main(["data", "check", "task.name=dialogsum"]) == 2
    assert f"$SUPERLORA_DIALOGSUM_DIR: DialogSum data folder not found: {tmp_path / 'gone'}" in capsys.readouterr().err
    write_split(tmp_path / "here", "validation", [GOOD])
    monkeypatch.setenv("SUPERLORA_DIALOGSUM_DIR", str(tmp_path / "here"))
    assert main(["data", "check", "task.name=dialogsum", "--split", "validation"]) == 0


@pytest.mark.parametrize("bad", ["no folder", "empty summary"])
def test_training_on_bad_data_stops_in_one_line_before_the_run_directory_exists(bad, tmp_path, capsys):
    model = tmp_path / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    if bad == "empty summary":
        write_split(tmp_path / "data", "train", [GOOD, GOOD, {**GOOD, "summary": " "}])
        write_split(tmp_path / "data", "validation", [GOOD])
    run = tmp_path / "run"
    argv = ["train", f"model={model}", "task.name=dialogsum", f"task.source={tmp_path / 'data'}", f"output_dir={run}"]
    argv.append("data.max_length=64")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("superlora: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0]), err
    want = "train.jsonl line 3: empty summary" if bad == "empty summary" else "DialogSum data folder not found"
    assert want in errors[0], errors
    assert not run.exists()


def test_an_unknown_split_is_one_line(tmp_path):
    with pytest.raises(SuperloraError, match="unknown DialogSum split 'dev'; choose train, validation, test"):
        task(source=str(tmp_path)).eval_items("dev", None)


# -----------------------------------------------------------------------------
# End to end on a tiny model


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.parametrize(
    "quantize",
    ["null", pytest.param("nf4", marks=pytest.mark.skipif(not _has_bitsandbytes(), reason="needs bitsandbytes"))],
)
def test_a_tiny_run_on_real_dialogues_trains_evaluates_rouge_and_completes_in_the_app(
    quantize, dialogsum_dir, tmp_path, capsys
):
    """Train a tiny random Llama (on an NF4 base too: QLoRA) on 16 real dialogues (cut to 64 tokens), then
    `evaluate` the adapter with no flag but the run: it is prompted as trained and scored with ROUGE-1/2/L
    against the three test references. The app's Completion tab summarises through the run's template."""
    from superlora.training.rundir import read_log
    from superlora.training.trainer import train

    model = tmp_path / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    run = tmp_path / "run"
    args = {
        "model": model,
        "task.name": "dialogsum",
        "task.source": dialogsum_dir,
        "task.heldout": 4,
        "data.limit": 16,
        "data.max_length": 64,
        "optim.batch_size": 4,
        "optim.max_steps": 3,
        "optim.lr": 0.01,
        "log_every": 1,
        "checkpoint.every": 3,
        "speed.bf16": "false",
        "speed.threads": 1,
        "output_dir": run,
        "quantize": quantize,
    }
    train(load_config(TrainConfig, None, [f"{k}={v}" for k, v in args.items()]))
    out = capsys.readouterr().out
    assert "dialogues cut at the end to fit max_length=64 (summaries kept whole)" in out
    assert len(read_log(run / "log.jsonl")) == 3 and read_log(run / "eval.jsonl")[-1]["eval_loss"] > 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["task"]["name"] == "dialogsum" and meta["template"]["prompt_format"].startswith("Summarize")

    assert main(["evaluate", "--adapter", str(run), "limit=3", "decode.max_new_tokens=4", "--quiet"]) == 0
    report = run / "eval-test-limit3"
    scores = json.loads((report / "scores.json").read_text())
    assert scores["task"] == "dialogsum" and scores["count"] == 3 and scores["decode"]["num_beams"] == 1
    assert set(scores["metrics"]) == {"rouge1", "rouge2", "rougeL", "output_words"}
    assert all(0.0 <= scores["metrics"][k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))
    records = [json.loads(line) for line in (report / "outputs.jsonl").read_text().splitlines()]
    assert [r["fname"] for r in records] == ["test_0", "test_1", "test_2"]
    assert all(r["references"] == 3 for r in records)
    if quantize != "null":
        assert meta["quantized"]["method"] == quantize and meta["quantized"]["layers"] > 0

    pytest.importorskip("gradio")
    import superlora.app.ui  # noqa: F401  (the offline environment before Gradio loads)
    from superlora.app.generate import complete
    from superlora.app.state import BASE, AppState

    state = AppState.load(str(model), [str(run)])
    done = {r.target: r for r in complete(state, "#Person1#: Hi.\n#Person2#: Hello.", [BASE, "run"], 1, 4)}
    assert done["run"].prompt_format == meta["template"]["prompt_format"] and done[BASE].prompt_format == "{prompt}"
