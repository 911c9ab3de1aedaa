"""``superlora evaluate`` end to end on a tiny random model, with and without a LoRA adapter."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from superlora.cli import main
from superlora.errors import SuperloraError
from superlora.evaluation.decode import DecodeConfig, attach_adapter, generate, line_end_ids, resolve_adapter
from superlora.tasks.e2e.data import TEMPLATE, build_prompt, group_references, load_split


def _evaluate(model_dir, e2e_dir, out, *extra) -> dict:
    args = ["evaluate", f"model={model_dir}", f"task.source={e2e_dir}", "limit=3", "decode.num_beams=3"]
    args += ["decode.max_new_tokens=6", "decode.batch_size=2", f"out={out}", "--skip-meteor", "--quiet", *extra]
    assert main(args) == 0
    return json.loads((out / "scores.json").read_text())


def test_evaluate_writes_outputs_scores_and_summary(tiny_model_dir, e2e_dir, tmp_path, capsys):
    model_dir = tiny_model_dir("llama")
    report = _evaluate(model_dir, e2e_dir, tmp_path / "eval")
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "decoded 3 items" in printed

    first3 = [mr for mr, _ in group_references(load_split("test", "original", e2e_dir))][:3]
    with (tmp_path / "eval" / "outputs.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["MR", "output"]
    assert [row[0] for row in rows[1:]] == first3  # test order kept despite length-sorted batching

    assert report["count"] == 3 and report["split"] == "test" and report["adapter"] is None
    # unset decode keys take the E2E task's protocol (length penalty 0.9, no repeated 4-grams)
    assert report["decode"] == DecodeConfig(3, 0.9, 4, 6, 2).to_dict()
    assert report["task"] == "e2e" and report["variant"] == "original"
    assert set(report["metrics"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert report["metrics"]["METEOR"] is None
    assert all(isinstance(report["metrics"][m], float) for m in ("BLEU", "NIST", "ROUGE_L", "CIDEr"))
    assert report["ser"]["slots"] == sum(mr.count("[") for mr in first3)
    assert report["decode_seconds"] > 0
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert "| BLEU |" in summary and "3 original test MRs" in summary and "| SER |" in summary
    assert summary.count("length penalty 0.9") == 1 and summary.count("no-repeat n-gram 4") == 1  # said once
    assert (tmp_path / "eval" / "slot_errors.tsv").is_file()

    # The written TSV is a valid challenge file: the score verb reads it back.
    assert (
        main(["score", str(e2e_dir / "original" / "testset_w_refs.csv"), str(tmp_path / "eval" / "outputs.tsv")]) == 2
    )
    assert "3 outputs but the references have 630 MRs" in capsys.readouterr().err


def _lora_adapter(model_dir, folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)


def test_evaluate_with_an_adapter_from_a_run_folder(tiny_model_dir, e2e_dir, tmp_path):
    model_dir = tiny_model_dir("llama")
    _lora_adapter(model_dir, tmp_path / "run" / "adapter")
    report = _evaluate(model_dir, e2e_dir, tmp_path / "eval", "--adapter", str(tmp_path / "run"))
    assert report["adapter"] == str(tmp_path / "run" / "adapter")


def test_adapter_changes_the_model_and_bad_adapters_fail_clearly(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model_dir("llama")
    _lora_adapter(model_dir, tmp_path / "adapter")
    assert resolve_adapter(tmp_path / "adapter") == tmp_path / "adapter"
    ids = torch.tensor([[3, 4, 5, 6]])
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        before = base(ids).logits
        after = attach_adapter(base, tmp_path / "adapter")(ids).logits
    assert not torch.allclose(before, after)
    with pytest.raises(SuperloraError, match="adapter not found"):
        resolve_adapter(tmp_path / "nope")
    with pytest.raises(SuperloraError, match="no adapter_config.json"):
        resolve_adapter(model_dir)  # a model folder, not an adapter


def test_generate_keeps_order_and_stops_at_line_end():
    """Batched, left-padded beam search returns one cleaned line per MR, in input order."""
    from tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("gpt2"), tiny_tokenizer()
    mrs = ["name[A]", "name[the pub], eatType[pub], near[the restaurant]", "food[cheap]"]
    config = DecodeConfig(2, 0.9, 4, 5, 2)
    batched = generate(model, tok, mrs, config, TEMPLATE)
    alone = [generate(model, tok, [mr], config, TEMPLATE)[0] for mr in mrs]
    assert batched == alone  # left padding does not change what a prompt decodes to
    assert all("\n" not in out for out in batched)
    assert line_end_ids(tok) == []  # the word-level test tokenizer has no newline token
    assert build_prompt("name[A]").endswith("Description:")


def test_evaluate_rejects_bad_settings_in_one_line(tmp_path, capsys):
    assert main(["evaluate", "--limit", "0", "--skip-meteor", "--out", str(tmp_path)]) == 2
    assert "limit must be at least 1" in capsys.readouterr().err
    assert main(["evaluate", "decode.num_beam=2"]) == 2
    assert "did you mean 'decode.num_beams'" in capsys.readouterr().err
