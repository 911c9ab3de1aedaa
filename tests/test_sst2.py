"""SST-2 sentiment classification: the data are read as published, a classification head is trained with LoRA (or
alone), saved with the adapter, and scored with accuracy, macro-F1 and a confusion matrix; bad input is one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import REPO
from superlora.cli import main
from superlora.config import load_config
from superlora.errors import SuperloraError
from superlora.training.config import TrainConfig

SST2_DIR = REPO.parent / "shared" / "data" / "sst2"
FILLER = "the a of is and to in capital france restaurant near food cheap name".split()  # noqa: SIM905


def write_sst2(folder: Path, rows: int = 64, seed: int = 0, label_of=None) -> Path:
    """A tiny SST-2 folder in the published format (header, trailing spaces) that the tiny tokenizer can read:
    'paris' makes a text positive, 'pub' negative, so there is something to learn."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", rows), ("validation", 32), ("test", 32)):
        lines = ["sentence\tlabel"]
        for i in range(count):
            label = i % 2
            words = rng.sample(FILLER, 4) + ["paris" if label else "pub"]
            rng.shuffle(words)
            lines.append(f"{' '.join(words)} \t{label_of(i) if label_of else label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def classifier_args(model_dir: Path, data: Path, out: Path, **extra) -> list[str]:
    args = {
        "model": str(model_dir),
        "task.name": "sst2",
        "task.source": str(data),
        "data.max_length": 16,
        "optim.batch_size": 8,
        "optim.max_steps": 60,
        "optim.lr": 0.05,
        "optim.warmup_steps": 0,
        "optim.label_smoothing": 0.0,
        "log_every": 1,
        "checkpoint.every": 12,
        "output_dir": str(out),
    } | extra
    return [f"{k}={v}" for k, v in args.items()]


def evaluate_run(run: Path, model_dir: Path, data: Path, split: str = "validation") -> dict:
    from superlora.evaluation.decode import DecodeConfig, attach_adapter
    from superlora.evaluation.evaluate import evaluate
    from superlora.models import load_model
    from superlora.tasks import get_task
    from superlora.tasks.sst2 import Sst2Config

    task = get_task(Sst2Config(source=str(data)))
    loaded = load_model(str(model_dir), **task.model_kwargs())
    model = attach_adapter(loaded.model, run) if run is not None else loaded.model
    report, _ = evaluate(task, model, loaded.tokenizer, task.eval_items(split, None), DecodeConfig(), max_length=16)
    return report


def test_the_real_sst2_files_are_read_whole_and_stripped():
    if not SST2_DIR.is_dir():
        pytest.skip(f"SST-2 data not found at {SST2_DIR}")
    from superlora.tasks.sst2 import load_split

    counts = {split: load_split(split, str(SST2_DIR)) for split in ("train", "validation", "test")}
    assert [len(rows) for rows in counts.values()] == [67_349, 872, 1_821]
    assert all(r.text == r.text.strip() and r.label in (0, 1) for rows in counts.values() for r in rows)
    assert sum(r.label for r in counts["validation"]) == 444  # GLUE's validation split: 444 positive of 872


def test_macro_f1_and_the_confusion_matrix_match_a_hand_count():
    from superlora.tasks.sst2 import confusion, macro_f1

    gold, predicted = [0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 0, 1]
    counts = confusion(gold, predicted, 2)
    assert counts == [[2, 1], [1, 4]]
    # F1(neg) = 2*2/(3+3) = 0.6667; F1(pos) = 2*4/(5+5) = 0.8
    assert macro_f1(counts) == pytest.approx((2 / 3 + 0.8) / 2)


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "llama"])
def test_a_lora_classifier_learns_and_its_saved_head_reproduces_its_predictions(
    family, tiny_model_dir, tmp_path, capsys
):
    """Encoders and decoders alike: LoRA in the blocks plus the new head (DistilBERT's head has two layers),
    both saved in the adapter; a fresh base with the adapter reaches what training taught."""
    from superlora.training.trainer import train

    model_dir, data = tiny_model_dir(family), write_sst2(tmp_path / "sst2")
    run = tmp_path / "run"
    summary = train(load_config(TrainConfig, None, classifier_args(model_dir, data, run)))
    out = capsys.readouterr().out
    assert "trainable params:" in out and "target-only logits off: a classification head" in out
    meta = json.loads((run / "run.json").read_text())
    assert meta["head"] == "classifier" and meta["labels"] == ["negative", "positive"]
    from safetensors.torch import load_file

    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    heads = {
        "bert": ["classifier"],
        "distilbert": ["pre_classifier", "classifier"],
        "mpnet": ["classifier"],
        "llama": ["score"],
    }[family]
    for head in heads:
        assert any(f".{head}." in key for key in saved), (head, list(saved)[:5])
    assert any("lora_A" in key for key in saved)
    assert summary["final_loss"] < summary["first_loss"]
    report = evaluate_run(run, model_dir, data)
    assert report["metrics"]["accuracy"] >= 0.8, report["metrics"]  # chance is 0.5
    assert sum(map(sum, report["confusion"])) == 32


def test_layers_none_trains_only_the_head(tiny_model_dir, tmp_path):
    """The baseline without LoRA: no adapter weight in any block, the head's weights moved, and it is scored."""
    from safetensors.torch import load_file

    from superlora.training.trainer import train

    model_dir, data = tiny_model_dir("bert"), write_sst2(tmp_path / "sst2")
    run = tmp_path / "head-only"
    summary = train(load_config(TrainConfig, None, classifier_args(model_dir, data, run, layers="none")))
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    assert saved and not any("lora_" in key for key in saved) and all(".classifier." in key for key in saved)
    assert summary["blocks"] == [] and summary["trainable_params"] == 32 * 2 + 2
    report = evaluate_run(run, model_dir, data)
    from superlora.models import load_model

    untrained = load_model(str(model_dir), head="classifier").model.classifier.weight
    trained = next(value for key, value in saved.items() if key.endswith("classifier.weight"))
    assert not torch.allclose(trained, untrained)  # the head moved from its seeded start
    assert report["count"] == 32 and sum(map(sum, report["confusion"])) == 32


def test_the_base_classifier_is_the_same_on_every_load(tiny_model_dir, tmp_path):
    """The new head starts from a fixed seed: the base arm's scores reproduce, and the fingerprint (which leaves
    the head out) lets the adapter load."""
    from superlora.models import load_model
    from superlora.training.rundir import base_fingerprint

    model_dir = tiny_model_dir("bert")
    a, b = (load_model(str(model_dir), head="classifier") for _ in range(2))
    assert torch.equal(a.model.classifier.weight, b.model.classifier.weight)
    with torch.no_grad():
        b.model.classifier.weight += 1.0
    assert base_fingerprint(a.model) == base_fingerprint(b.model)


def test_a_classifier_merge_keeps_the_trained_head(tiny_model_dir, tmp_path):
    from superlora.evaluation.decode import attach_adapter
    from superlora.models import load_model
    from superlora.training.merge import merged_model
    from superlora.training.trainer import train

    model_dir, data = tiny_model_dir("bert"), write_sst2(tmp_path / "sst2")
    run = tmp_path / "run"
    train(load_config(TrainConfig, None, classifier_args(model_dir, data, run, **{"optim.max_steps": 6})))
    ids = torch.tensor([[5, 9, 13, 4, 7]])
    tuned = attach_adapter(load_model(str(model_dir), head="classifier").model, run)
    merged, _, _ = merged_model(run)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, tuned(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_a_classifier_exports_as_safetensors_and_gguf_is_one_line(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    from superlora.training.trainer import train

    model_dir, data = tiny_model_dir("bert"), write_sst2(tmp_path / "sst2")
    run = tmp_path / "run"
    train(load_config(TrainConfig, None, classifier_args(model_dir, data, run, **{"optim.max_steps": 2})))
    assert main(["export", str(run), "--format", "gguf", "--out", str(tmp_path / "g")]) == 2
    assert "classification head" in capsys.readouterr().err and not (tmp_path / "g").exists()
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "s")]) == 0
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert exported.config.num_labels == 2 and type(exported).__name__ == "BertForSequenceClassification"


def test_an_overlong_text_is_cut_keeping_its_closing_token_and_counted(tmp_path, capsys):
    from transformers import BertTokenizerFast

    from superlora.data.shapes import Labeled
    from superlora.data.templates import LabelTemplate
    from superlora.tasks.sst2 import Sst2Config, Sst2Task

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "film"]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab))
    task = Sst2Task(Sst2Config(source="."))
    rows, dropped = task.tokenize_all(
        tok, LabelTemplate(), [Labeled("good film " * 10, 1), Labeled("good", 0)], max_length=6
    )
    assert dropped == 0 and [len(r["input_ids"]) for r in rows] == [6, 3]
    assert rows[0]["input_ids"][0] == 2 and rows[0]["input_ids"][-1] == 3  # [CLS] ... [SEP]
    assert "1 of 2 texts were longer than max_length=6" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "message"),
    [("good film \t2", "label '2' is not one of 0"), (" \t1", "empty sentence"), ("no tab here", "2 tab-separated")],
)
def test_a_bad_row_is_one_line_naming_its_file_and_line(tmp_path, line, message):
    from superlora.tasks.sst2 import load_split

    folder = write_sst2(tmp_path / "sst2")
    path = folder / "train.tsv"
    path.write_text(path.read_text().replace("\n", f"\n{line}\n", 1))
    with pytest.raises(SuperloraError, match=message) as info:
        load_split("train", str(folder))
    assert f"{path}:2" in str(info.value) and "\n" not in str(info.value)


def test_a_bad_label_stops_training_in_one_line_before_any_run_exists(tiny_model_dir, tmp_path, capsys):
    data = write_sst2(tmp_path / "sst2", label_of=lambda i: 3 if i == 5 else i % 2)
    args = classifier_args(tiny_model_dir("bert"), data, tmp_path / "run")
    assert main(["train", *args]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "model shards" not in line]
    assert len(err) == 1 and "label '3'" in err[0] and "train.tsv:7" in err[0], err
    assert not (tmp_path / "run").exists()


def test_layers_none_on_a_generation_task_is_one_line(tiny_model_dir, tmp_path, capsys):
    import test_training

    data = test_training.write_e2e(tmp_path / "e2e")
    args = [f"model={tiny_model_dir('llama')}", f"task.source={data}", "layers=none", f"output_dir={tmp_path / 'r'}"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "layers: none trains only a classification head" in err[-1]
    assert not (tmp_path / "r").exists()


@pytest.mark.real
def test_minilm_l6_loads_as_a_bert_encoder_with_a_new_head():
    """The PyPI all-MiniLM-L6-v2 folder: 6 BERT blocks, query/value LoRA targets, the MLP output projection
    identify reads, and a 2-way head on [CLS] (the PEFT line for r=8 on query and value)."""
    from peft import LoraConfig, get_peft_model

    from superlora.models import load_model
    from superlora.models.loading import head_module_names, is_encoder

    loaded = load_model("minilm-l6", head="classifier")
    arch = loaded.arch
    assert is_encoder(loaded.model.config) and (arch.num_blocks, arch.mlp_out_name, arch.query_value) == (
        6,
        "output.dense",
        ("query", "value"),
    )
    assert (arch.mlp_in_features, arch.mlp_out_features) == (1536, 384)
    model = get_peft_model(
        loaded.model,
        LoraConfig(
            task_type="SEQ_CLS", r=8, target_modules=["query", "value"], modules_to_save=head_module_names(loaded.model)
        ),
    )
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 6 * 2 * 8 * (384 + 384) + 384 * 2 + 2  # 74,498: LoRA on query and value, and the head
    assert total == 22_713_986 + trainable  # peft counts the head's trainable copy beside the original


def test_the_bench_of_a_classifier_has_no_target_only_arms(tiny_model_dir, tmp_path):
    """A classification head has no token logits: target-only logits cannot speed it up, so the bench leaves
    those arms out, and its recipe arm trains the head on one label per row."""
    from superlora.bench import runner

    data = write_sst2(tmp_path / "sst2")
    items = [f"model={tiny_model_dir('bert')}", "task.name=sst2", f"task.source={data}", "data.max_length=16"]
    cfg = load_config(TrainConfig, None, [*items, "optim.batch_size=4"])
    result = runner.bench(cfg, steps=2, repeats=1, warmup=1, keys=["recipe"], rss="inprocess")
    assert [row["key"] for row in result["arms"]] == ["ref", "recipe"]
    assert result["arms"][1]["tokens_per_s"] > 0
    with pytest.raises(SuperloraError, match="unknown arm"):  # left out before anything runs
        runner.bench(cfg, steps=1, repeats=1, warmup=0, keys=["target"], rss="inprocess")


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_a_classifier_gives_each_text_the_same_answer_alone_or_padded_in_a_batch(family, tiny_model_dir):
    """A decoder's head reads the last token that is not padding (its config's pad id is the one batches are
    padded with); an encoder's reads [CLS] under the attention mask. Either way padding changes nothing."""
    from superlora.data.templates import LabelTemplate
    from superlora.evaluation.classify import classify
    from superlora.models import load_model

    loaded = load_model(str(tiny_model_dir(family)), head="classifier")
    texts = ["the food is cheap", "the restaurant near paris is the capital of france and the food is cheap"]
    template = LabelTemplate()
    assert loaded.model.config.pad_token_id == template.pad_id(loaded.tokenizer) or family == "bert"
    _, together = classify(loaded.model, loaded.tokenizer, texts, template, batch_size=2)
    alone = [classify(loaded.model, loaded.tokenizer, [t], template, batch_size=1)[1][0] for t in texts]
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone), rtol=1e-4, atol=1e-5)
