"""Shared by the web-app tests: a tiny model with a planted super weight, a tiny adapter run, an in-process server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import torch
import yaml

from tiny import tiny_config, tiny_tokenizer

PLANT = (1, 7, 21)  # block, out channel, in channel of the planted super weight
PLANT_COORD = "1:7:21"


def planted_model_dir(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama whose block-1 down-projection weight W[7, 21] makes a huge activation, as a super weight does.

    Input channel 21 of block 1's MLP is made ~10 for every token (through the biases); W[7, 21] turns it
    into an output of ~800 in residual channel 7. Zeroing that one weight changes the greedy output.
    """
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    config = tiny_config("llama")
    config.mlp_bias = True
    config.vocab_size = len(tokenizer)  # every generated id is a word: outputs are never blank
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    block, out, inp = PLANT
    with torch.no_grad():
        mlp = model.model.layers[block].mlp
        mlp.gate_proj.weight[inp].zero_()
        mlp.gate_proj.bias[inp] = 10.0
        mlp.up_proj.weight[inp].zero_()
        mlp.up_proj.bias[inp] = 10.0
        x = 10.0 * torch.nn.functional.silu(torch.tensor(10.0))
        mlp.down_proj.weight[out, inp] = float(800.0 / x)  # ~8.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def adapter_run(model_dir: Path, run: Path, seed: int = 1) -> Path:
    """A training-run folder as ``superlora train`` leaves it, with a random (non-zero) LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from superlora.training.rundir import base_fingerprint

    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    fingerprint = base_fingerprint(base)
    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    run.mkdir(parents=True)
    peft_model.save_pretrained(run / "adapter")
    config = {"model": str(model_dir), "layers": "all", "lora": {"r": 4, "alpha": 64.0}, "seed": seed}
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    meta = {"model": str(model_dir), "base_fingerprint": fingerprint, "blocks": [0, 1, 2]}
    (run / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    log = [{"step": s, "loss": 4.0 / (1 + s / 10), "lr": 2e-4 * (1 - s / 40)} for s in range(0, 40, 5)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log), encoding="utf-8")
    summary = {"model": str(model_dir), "layers": "all", "blocks": [0, 1, 2], "steps": 35, "tokens_per_s": 1234.5}
    summary |= {"first_loss": log[0]["loss"], "final_loss": log[-1]["loss"]}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def superweights_report(path: Path) -> Path:
    """A superweights.json naming the planted weight (what ``superlora identify`` would write)."""
    record = {
        "block": PLANT[0],
        "out_channel": PLANT[1],
        "in_channel": PLANT[2],
        "coordinate": PLANT_COORD,
        "value": 8.0,
        "ppl_ratio": 9.0,
        "proven": True,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": "tiny", "super_weights": [record], "rejected_candidates": []}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(state) -> tuple[object, str]:
    """Launch the app in this process on a free loopback port; returns (demo, url)."""
    from superlora.app.ui import build_app, launch

    demo = build_app(state)
    port = free_port()
    launch(demo, "127.0.0.1", port, block=False)
    return demo, f"http://127.0.0.1:{port}/"
