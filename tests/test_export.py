"""``superlora export``: GGUF files that transformers reads back as the merged model, the Modelfile, the
safetensors and adapter exports, the Hub's offline path, and every bad input as one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from superlora.cli import main
from test_training import train_cfg, write_e2e

# A real E2E training line (cleaned train set): what the logits and the tokenizer are compared on
E2E_TEXT = (
    "Meaning representation: name[The Vaults], eatType[pub], priceRange[more than £30], customer rating[5 out of 5], "
    "near[Café Adriatic]\nDescription: The Vaults pub near Café Adriatic has a 5 star rating. Prices start at £30."
)
# Bounds on the max |logit difference| from the merged model over the ~100 positions of E2E_TEXT. Measured on tiny
# runs: f32 0 (the same numbers: the permutation and the tokenizer are exact), f16 7e-4..1.2e-3 (11-bit mantissas),
# bf16 6.7e-2 (8-bit mantissas), q8_0 4e-2..8.6e-2 (8-bit values in blocks of 32, one f16 scale each); the bounds
# leave about twice the largest measured. Independently, the error must stay well under the adapter's own effect.
TOLERANCE = {"f32": 1e-4, "f16": 5e-3, "bf16": 1.5e-1, "q8_0": 2e-1}


def fails(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("superlora: error: "), err
    assert len([ln for ln in err.splitlines() if ln.startswith("superlora:")]) == 1, err
    return last


def bpe_tokenizer():
    """A byte-level BPE tokenizer (GPT-2 / SmolLM2 style) trained offline on E2E-like text, with ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from superlora.data.templates import CHATML

    lines = [E2E_TEXT] * 4 + [
        "the pub is a cheap restaurant near paris in france",
        "name[the pub], eatType[pub], near[the restaurant] the pub is a cheap pub near the restaurant in paris",
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=352,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    return fast


def tiny_bpe_model_dir(folder: Path, family: str = "llama") -> Path:
    """A tiny random Llama (or GPT-2) whose vocabulary is the BPE tokenizer's."""
    from transformers import AutoModelForCausalLM

    from tiny import tiny_config

    tokenizer = bpe_tokenizer()
    config = tiny_config(family)
    config.vocab_size = len(tokenizer)
    setattr(config, "n_positions" if family == "gpt2" else "max_position_embeddings", 256)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny Llama E2E run, trained through the CLI's trainer for a few steps at a high learning rate."""
    from superlora.training.trainer import train

    root = tmp_path_factory.mktemp("export")
    model_dir = tiny_bpe_model_dir(root / "llama")
    data = write_e2e(root / "e2e")
    items = {
        "model": str(model_dir),
        "task.source": str(data),
        "data.max_length": 128,
        "optim.batch_size": 4,
        "optim.max_steps": 12,
        "optim.lr": 0.1,
        "checkpoint.every": 12,
        "lora.targets": "[self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, mlp.down_proj]",
        "output_dir": str(root / "run"),
    }
    train(train_cfg([f"{k}={v}" for k, v in items.items()]))
    return root / "run"


def merged_reference(run: Path):
    from superlora.training.merge import merged_model

    merged, loaded, _ = merged_model(run)
    return merged.eval(), loaded.tokenizer


# -----------------------------------------------------------------------------
# GGUF: read back by transformers, the same model and tokenizer


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "q8_0"])
def test_gguf_reads_back_as_the_merged_model(dtype, trained_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / f"gguf-{dtype}"
    assert main(["export", str(trained_run), "--format", "gguf", "--dtype", dtype, "--out", str(out)]) == 0
    assert "exported (gguf)" in capsys.readouterr().out
    name = f"run-{dtype}.gguf"
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "Modelfile", "README.md"])
    assert not list(tmp_path.glob(".*tmp*"))  # no staging folder left behind

    merged, tokenizer = merged_reference(trained_run)
    back_tok = AutoTokenizer.from_pretrained(out, gguf_file=name)
    ids = tokenizer(E2E_TEXT, return_tensors="pt")["input_ids"]
    assert back_tok(E2E_TEXT)["input_ids"] == ids[0].tolist()  # the same ids, token for token
    assert back_tok.decode(ids[0]) == E2E_TEXT
    assert back_tok.eos_token == tokenizer.eos_token and back_tok.chat_template == tokenizer.chat_template

    back = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32).eval()
    with torch.no_grad():
        expected, got = merged(ids).logits, back(ids).logits
        base = AutoModelForCausalLM.from_pretrained(json.loads((trained_run / "run.json").read_text())["model"])
        base_logits = base.eval()(ids).logits
    diff = (got - expected).abs().max().item()
    print(f"{dtype}: max |logit diff| {diff:.2e} (adapter's own effect {(expected - base_logits).abs().max():.2e})")
    assert diff < TOLERANCE[dtype], diff
    assert diff < (expected - base_logits).abs().max() / 3  # the file holds the adapter, not just the base
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= (1.0 if dtype == "f32" else 0.9)


def test_gguf_metadata_and_modelfile_say_what_llama_cpp_and_ollama_read(trained_run, tmp_path):
    from gguf import GGUFReader

    out = tmp_path / "gguf"
    assert main(["export", str(trained_run), "--format", "gguf", "--out", str(out)]) == 0  # default dtype: f16
    reader = GGUFReader(out / "run-f16.gguf")
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 3 and fields["llama.embedding_length"] == 32
    assert fields["llama.attention.head_count"] == 2 and fields["llama.attention.head_count_kv"] == 1
    assert fields["llama.rope.dimension_count"] == 16 and fields["tokenizer.ggml.model"] == "gpt2"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" in types  # the tiny Llama's head is its own (SmolLM2's is tied: no output.weight)

    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./run-f16.gguf" in modelfile
    # the E2E prompt exactly as training built it, around Ollama's {{ .Prompt }}
    assert 'TEMPLATE """Meaning representation: {{ .Prompt }}\nDescription:"""' in modelfile
    assert 'PARAMETER stop "<|endoftext|>"' in modelfile and 'PARAMETER stop """\n"""' in modelfile
    assert "PARAMETER temperature 0" in modelfile
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: gguf") and "tuetschek/e2e_nlg_cleaned" in card


def test_chat_modelfile_is_chatml_with_the_templates_system_prompt():
    from superlora.data.templates import ChatTemplate
    from superlora.export.modelfile import modelfile_text

    tokenizer = bpe_tokenizer()
    text = modelfile_text(ChatTemplate("chatml", system="Be brief."), tokenizer, "m.gguf", "chat")
    assert "{{- range .Messages }}" in text and "<|im_start|>{{ .Role }}" in text
    assert 'SYSTEM """Be brief."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|endoftext|>"' in text


# -----------------------------------------------------------------------------
# safetensors and adapter exports


def test_safetensors_export_is_the_merge(trained_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "st"
    assert main(["export", str(trained_run), "--format", "safetensors", "--dtype", "f32", "--out", str(out)]) == 0
    merged, tokenizer = merged_reference(trained_run)
    ids = tokenizer(E2E_TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        torch.testing.assert_close(got, merged(ids).logits, rtol=1e-5, atol=1e-5)
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()


def test_adapter_export_copies_the_adapter(trained_run, tmp_path):
    out = tmp_path / "adapter"
    assert main(["export", str(trained_run), "--format", "adapter", "--out", str(out)]) == 0
    assert (out / "adapter_model.safetensors").read_bytes() == (
        trained_run / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert "library_name: peft" in (out / "README.md").read_text()


def test_push_to_hub_offline_is_one_line_and_writes_nothing(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pushed"
    err = fails(capsys, "export", str(trained_run), "--format", "gguf", "--out", str(out), "--push-to-hub", "me/x")
    assert "offline" in err and "HF_HUB_OFFLINE" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_push_to_hub_to_an_unreachable_host_is_one_line_and_writes_nothing(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    out = tmp_path / "pushed"
    err = fails(capsys, "export", str(trained_run), "--format", "adapter", "--out", str(out), "--push-to-hub", "me/x")
    assert "offline" in err and "hub.invalid is unreachable" in err
    assert not out.exists()


# -----------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    err = fails(capsys, "export", str(tmp_path / "nowhere"), "--format", "gguf")
    assert "run directory not found" in err


def test_export_of_a_run_without_adapter_is_one_line(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "unfinished"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("adapter", "export-*"))
    err = fails(capsys, "export", str(run), "--format", "gguf")
    assert "has no final adapter" in err
    assert not list(run.glob("export-*"))


def test_an_unknown_format_is_refused_by_the_parser(trained_run, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(trained_run), "--format", "onnx"])
    assert exc.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def test_q8_0_is_refused_for_safetensors(trained_run, tmp_path, capsys):
    err = fails(
        capsys, "export", str(trained_run), "--format", "safetensors", "--dtype", "q8_0", "--out", str(tmp_path / "x")
    )
    assert "q8_0 is a GGUF block format" in err


def test_gguf_of_an_unsupported_architecture_is_one_line_before_any_work(tmp_path, capsys):
    from superlora.training.trainer import train

    model_dir = tiny_bpe_model_dir(tmp_path / "gpt2", family="gpt2")
    data = write_e2e(tmp_path / "e2e")
    items = [
        f"model={model_dir}",
        f"task.source={data}",
        "optim.max_steps=1",
        "optim.batch_size=4",
        "data.max_length=128",
        f"output_dir={tmp_path / 'run'}",
    ]
    train(train_cfg(items))
    capsys.readouterr()
    err = fails(capsys, "export", str(tmp_path / "run"), "--format", "gguf")
    assert err == (
        "superlora: error: GGUF export supports llama, qwen2; this run's model is gpt2 "
        "(export --format safetensors instead)"
    )
    assert not list((tmp_path / "run").glob("export-*"))


def test_an_out_that_exists_and_is_not_empty_is_left_untouched(trained_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    err = fails(capsys, "export", str(trained_run), "--format", "gguf", "--out", str(out))
    assert "already exists" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_gguf_refuses_a_tokenizer_it_cannot_hold(tiny_model_dir, tmp_path, capsys):
    """The tiny word-level tokenizer has no GGUF form: refused before anything is written."""
    from superlora.training.trainer import train

    data = write_e2e(tmp_path / "e2e")
    items = [
        f"model={tiny_model_dir('llama')}",
        f"task.source={data}",
        "optim.max_steps=1",
        "optim.batch_size=4",
        "data.max_length=48",
        f"output_dir={tmp_path / 'run'}",
    ]
    train(train_cfg(items))
    capsys.readouterr()
    err = fails(capsys, "export", str(tmp_path / "run"), "--format", "gguf")
    assert "byte-level BPE" in err and "WordLevel" in err
    assert not list((tmp_path / "run").glob("export-*")) and not list((tmp_path / "run").glob(".export*"))


# -----------------------------------------------------------------------------
# The real SmolLM2-135M


@pytest.mark.real
def test_real_smollm2_gguf_f16_matches_the_merged_model(tmp_path, capsys):
    """A LoRA with random non-zero B on the real model (no training), exported to f16 GGUF and read back."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from superlora.export.export import PROBE_TEXT
    from superlora.models import load_model
    from superlora.training import rundir
    from superlora.training.adapters import write_base_record

    loaded = load_model("smollm2-135m")
    fingerprint = rundir.base_fingerprint(loaded.model)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    run = tmp_path / "real-run"
    rundir.create_run_dir(
        run,
        {"model": "smollm2-135m", "lora": {"r": 4, "alpha": 32}},
        {
            "model": "smollm2-135m",
            "base_fingerprint": fingerprint,
            "blocks": list(range(30)),
            "task": {"name": "e2e", "variant": "cleaned"},
        },
    )
    peft_model.save_pretrained(run / "adapter")
    write_base_record(run / "adapter", "smollm2-135m", fingerprint)
    with torch.no_grad():
        text = E2E_TEXT + "\n" + PROBE_TEXT
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
        expected = peft_model.eval()(ids).logits
        peft_model.disable_adapter_layers()
        base_logits = peft_model(ids).logits

    assert main(["export", str(run), "--format", "gguf", "--dtype", "f16"]) == 0
    out = run / "export-gguf-f16"
    name = "real-run-f16.gguf"
    back_tok = AutoTokenizer.from_pretrained(out, gguf_file=name)
    assert back_tok(text)["input_ids"] == ids[0].tolist()
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32).eval()
    with torch.no_grad():
        got = back(ids).logits
    diff = (got - expected).abs().max().item()
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    print(
        f"smollm2 f16: max |logit diff| {diff:.3f}, adapter effect {(expected - base_logits).abs().max():.3f}, "
        f"greedy agreement {agree:.1%} of {ids.shape[1]} positions"
    )
    assert (expected - base_logits).abs().max() > 1.0  # the random adapter changes the model
    assert diff < 0.2 and agree >= 0.95  # measured: 0.035-0.045, 100% of 134 positions
    from gguf import GGUFReader

    assert "output.weight" not in {t.name for t in GGUFReader(out / name).tensors}  # tied: the head is the embedding
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./real-run-f16.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_qwen2_writer_keeps_the_qkv_biases(tmp_path):
    """Qwen2's layout is Llama's plus q/k/v biases and no q/k interleaving: a random tiny Qwen2 reads back in f32."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from superlora.export.gguf_file import write_gguf

    tokenizer = bpe_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.5)  # zero biases would pass even if they were dropped
    write_gguf(model, tokenizer, tmp_path / "q.gguf", "f32", name="q", description="test", chat_template=None)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q.gguf", dtype=torch.float32).eval()
    ids = tokenizer(E2E_TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
