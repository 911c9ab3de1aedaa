"""``superlora train`` / ``merge`` on tiny random models: learning, layer selection, resume, DDP, merge, bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from superlora.cli import main
from superlora.config import load_config
from superlora.training.config import TrainConfig
from superlora.training.rundir import read_log
from tiny import tiny_model

PLANTED_BLOCK = 1  # the tiny models have 3 blocks; the "super weight" sits in the middle one
PEFT_LINE = re.compile(r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}")


def write_e2e(folder: Path, rows: int = 24) -> Path:
    """A tiny cleaned-E2E folder whose words the tiny tokenizer knows, so there is something to learn."""
    (folder / "cleaned").mkdir(parents=True)
    names, nears = ["the pub", "the restaurant", "paris"], ["france", "the pub", "paris", "the restaurant"]
    with open(folder / "cleaned" / "train-fixed.no-ol.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["mr", "ref", "fixed", "orig_mr"])
        for i in range(rows):
            name, near = names[i % 3], nears[i % 4]
            mr = f"name[{name}], eatType[pub], near[{near}]"
            writer.writerow([mr, f"{name} is a cheap pub near {near} in paris", 0, mr])
    return folder


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_e2e(tmp_path / "e2e")


@pytest.fixture
def base_args(tmp_path, data_dir):
    """Factory: the override list of a fast run on a tiny model of ``family``."""

    def make(model_dir: Path, run: str = "run", **extra) -> list[str]:
        args = {
            "model": str(model_dir),
            "task.source": str(data_dir),
            "data.max_length": 48,
            "optim.batch_size": 4,
            "optim.max_steps": 8,
            "optim.lr": 0.01,
            "log_every": 1,
            "checkpoint.every": 4,
            "output_dir": str(tmp_path / run),
        } | extra
        return [f"{k}={v}" for k, v in args.items()]

    return make


def train_cfg(items: list[str]) -> TrainConfig:
    return load_config(TrainConfig, None, items)


def superweights_json(path: Path, block: int = PLANTED_BLOCK) -> Path:
    path.write_text(json.dumps({"super_weights": [{"block": block, "out_channel": 5, "in_channel": 7}]}))
    return path


# -----------------------------------------------------------------------------
# Learning and the run directory


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2: fused c_attn in a Conv1D (fan_in_fan_out)
def test_loss_falls_and_run_dir_is_complete(family, tiny_model_dir, base_args, capsys):
    from superlora.training.trainer import train

    items = base_args(tiny_model_dir(family), **{"optim.max_steps": 16, "optim.lr": 0.05})
    summary = train(train_cfg(items))
    run = Path(train_cfg(items).output_dir)
    losses = [r["loss"] for r in read_log(run / "log.jsonl")]
    assert len(losses) == 16
    # the tiny models drop fast in the first steps, then plateau: compare with the untrained first loss
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses

    assert PEFT_LINE.search(capsys.readouterr().out)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-12", "checkpoint-16"]  # keep 2
    saved = load_config(TrainConfig, run / "config.yaml")
    assert saved.lora.targets == (["attn.c_attn"] if family == "gpt2" else ["self_attn.q_proj", "self_attn.v_proj"])
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    for key in ("wall_time_s", "tokens_per_s", "peak_rss_mb", "trainable_params"):
        assert summary[key] > 0
    assert summary["steps"] == 16 and summary["blocks"] == [0, 1, 2]


def test_peak_rss_is_the_runs_own(tiny_model_dir, base_args):
    """A study trains arm after arm in one process: a run's peak must not be an earlier job's (here 1.5 GB)."""
    from superlora.memory import peak_rss_mb, rss_mb
    from superlora.training.trainer import train

    big = torch.ones(384 * 1024 * 1024)  # 1.5 GB, touched
    assert peak_rss_mb() > rss_mb() - 1 >= big.numel() * 4 / 2**20
    del big
    summary = train(train_cfg(base_args(tiny_model_dir("llama"), **{"optim.max_steps": 2})))
    assert 0 < summary["peak_rss_mb"] < rss_mb() + 1000  # the 1.5 GB peak came before the run


# -----------------------------------------------------------------------------
# Layer selection


def lora_blocks(model: torch.nn.Module) -> tuple[set[int], set[str]]:
    """(blocks, module kinds) that hold a lora_A, read from module names."""
    blocks, kinds = set(), set()
    for name, _ in model.named_modules():
        if name.endswith("lora_A"):
            m = re.search(r"\.(?:layers|h)\.(\d+)\.(.+)\.lora_A$", name)
            blocks.add(int(m.group(1)))
            kinds.add(m.group(2))
    return blocks, kinds


@pytest.mark.parametrize(
    ("layers", "extra", "expected"),
    [
        ("all", {}, {0, 1, 2}),
        ("superweights", {}, {PLANTED_BLOCK}),
        ("first", {}, {0}),  # count defaults to the number of super-weight blocks (1)
        ("last", {}, {2}),
        ("first", {"count": 2}, {0, 1}),
        ("random", {"count": 2, "seed": 3}, None),  # checked against random.Random(3)
        ("[0, 2]", {}, {0, 2}),
    ],
)
def test_layer_strategy_selects_blocks_and_only_they_get_adapters(
    layers, extra, expected, tiny_model_dir, base_args, tmp_path
):
    import random

    from superlora.training.trainer import attach_lora, plan_run

    sw = superweights_json(tmp_path / "superweights.json")
    items = base_args(tiny_model_dir("llama"), layers=layers, superweights=sw, **extra)
    plan = plan_run(train_cfg(items))
    if expected is None:
        expected = set(random.Random(3).sample(range(3), 2))
    assert set(plan.blocks) == expected
    blocks, kinds = lora_blocks(attach_lora(plan))
    assert blocks == expected
    assert kinds == {"self_attn.q_proj", "self_attn.v_proj"}


def test_superweights_identified_on_the_fly(tiny_model_dir, base_args, monkeypatch):
    """Without a superweights file the blocks come from superlora.identify.find_super_weights."""
    from superlora.training.trainer import plan_run

    fake = types.ModuleType("superlora.identify")
    fake.find_super_weights = lambda loaded: [types.SimpleNamespace(block=2), types.SimpleNamespace(block=2)]
    monkeypatch.setitem(sys.modules, "superlora.identify", fake)
    assert plan_run(train_cfg(base_args(tiny_model_dir("llama"), layers="superweights"))).blocks == [2]
    assert plan_run(train_cfg(base_args(tiny_model_dir("llama"), layers="first"))).blocks == [0]


def test_custom_targets_reach_the_mlp(tiny_model_dir, base_args):
    from superlora.training.trainer import attach_lora, plan_run

    items = base_args(tiny_model_dir("gpt2"), layers="[2]", **{"lora.targets": "[c_attn, mlp.c_proj]"})
    blocks, kinds = lora_blocks(attach_lora(plan_run(train_cfg(items))))
    assert blocks == {2} and kinds == {"attn.c_attn", "mlp.c_proj"}


# -----------------------------------------------------------------------------
# Checkpoints and resume


class Crash(Exception):
    pass


def test_interrupted_then_resumed_run_reproduces_losses(tiny_model_dir, base_args):
    """Crash after step 7 (last checkpoint: 4), resume: same losses and adapter as an uninterrupted run.

    12 steps of 6 batches per epoch, so the resume point is mid-epoch and the run crosses an epoch;
    dropout is on, so the RNG state must be restored too.
    """
    from transformers import TrainerCallback

    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    steps = {"optim.max_steps": 12, "optim.lr": 0.005}
    whole = train(train_cfg(base_args(model_dir, "full", **steps)))

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 7:
                raise Crash

    items = base_args(model_dir, "crashed", **steps)
    with pytest.raises(Crash):
        train(train_cfg(items), callbacks=[CrashAt()])
    run = Path(train_cfg(items).output_dir)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-4"]
    assert not (run / "adapter").exists()
    # what a kill -9 during the next save would leave: ignored, then cleaned up
    (run / "checkpoints" / ".staging" / "checkpoint-8").mkdir(parents=True)
    (run / "checkpoints" / ".staging" / "checkpoint-8" / "optimizer.pt").write_bytes(b"half")

    summary = train(train_cfg([*items, "resume=true"]))
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 12
    assert not (run / "checkpoints" / ".staging").exists()

    full = read_log(run.parent / "full" / "log.jsonl")
    resumed = read_log(run / "log.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    # the clock and the token count go on from the checkpoint: the summary is of all 12 steps, not the last 8
    elapsed = [r["elapsed_s"] for r in resumed]
    assert elapsed == sorted(elapsed) and summary["train_time_s"] >= elapsed[-1] > elapsed[3] > 0
    assert summary["tokens"] == whole["tokens"]
    torch.testing.assert_close([r["loss"] for r in resumed], [r["loss"] for r in full], rtol=1e-5, atol=1e-6)

    from safetensors.torch import load_file

    a = load_file(run.parent / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def cli(*args: str, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "superlora", *args], capture_output=True, text=True, env=env, timeout=timeout, **popen
    )


def test_kill_9_then_resume_completes(tiny_model_dir, base_args):
    """A real SIGKILL mid-run: the run directory stays resumable and the resumed run finishes."""
    items = base_args(tiny_model_dir("gpt2"), "killed", **{"optim.max_steps": 400, "checkpoint.every": 5})
    run = Path(train_cfg(items).output_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "superlora", "train", *items],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600  # a loaded machine takes minutes to import and start; the loop ends at once
    while not list(run.glob("checkpoints/checkpoint-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert list(run.glob("checkpoints/checkpoint-*")), "no checkpoint was written within 600 s"
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "summary.json").exists()

    done = cli("train", "--resume", f"output_dir={run}", timeout=900)  # 80 checkpoints: minutes on a busy machine
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 400 and summary["resumed_from_step"] >= 5
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, 401))


# -----------------------------------------------------------------------------
# Multi-process


def _netns_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _netns_available(), reason="needs `unshare -rn` to keep torchrun's stores on loopback")
def test_torchrun_two_processes(tiny_model_dir, base_args):
    """torchrun + gloo, 2 CPU processes, in a private network namespace so nothing listens outside loopback."""
    items = base_args(tiny_model_dir("llama"), "ddp", **{"optim.max_steps": 6, "optim.batch_size": 2})
    run = Path(train_cfg(items).output_dir)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command = [*torchrun, "--master_port", "29533", "-m", "superlora", "train", *items]
    script = "ip link set lo up && exec " + " ".join(f"'{c}'" for c in command)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list((run / "checkpoints" / "checkpoint-6").glob("rng_state_*.pth"))) == 2  # one per rank
    assert done.stdout.count("trainable params:") == 1  # printed once, not per process


# -----------------------------------------------------------------------------
# Merge


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_merged_model_logits_equal_adapter_logits(family, tiny_model_dir, base_args, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from superlora.training.merge import merge
    from superlora.training.trainer import train

    model_dir = tiny_model_dir(family)
    items = base_args(model_dir, **{"optim.max_steps": 4, "optim.lr": 0.05})
    train(train_cfg(items))
    run = Path(train_cfg(items).output_dir)
    out = merge(run, tmp_path / "merged")

    ids = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        adapter_logits = PeftModel.from_pretrained(base, run / "adapter").eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        merged_logits = merged(ids).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-4  # the adapter does something
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-4, atol=1e-5)
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]  # noqa: SIM118 (safe_open is not a dict)


# -----------------------------------------------------------------------------
# Bad input: one line, exit 2, no run directory


def fails(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]  # earlier lines are progress bars from loading the model, if any
    assert last.startswith("superlora: error: "), err
    return last


def test_unknown_config_key(tiny_model_dir, base_args, tmp_path, capsys):
    err = fails(capsys, "train", *base_args(tiny_model_dir("llama")), "lora.rank=8")
    assert "unknown config key 'lora.rank'" in err and "lora.r" in err
    assert not (tmp_path / "run").exists()


def test_block_index_out_of_range(tiny_model_dir, base_args, tmp_path, capsys):
    err = fails(capsys, "train", *base_args(tiny_model_dir("llama")), "layers=[0, 7]")
    assert "block index 7 is out of range" in err and "3 blocks" in err
    assert not (tmp_path / "run").exists()
    sw = superweights_json(tmp_path / "sw.json", block=9)
    err = fails(capsys, "train", *base_args(tiny_model_dir("llama")), "layers=superweights", f"superweights={sw}")
    assert "block index 9 is out of range" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, needle",
    [("{not json", "not an identify report"), ('{"super_weights": [{"proven": true}]}', "not an identify report")],
)
def test_a_superweights_file_that_is_not_a_report_is_one_line(
    text, needle, tiny_model_dir, base_args, tmp_path, capsys
):  # noqa: E501
    sw = tmp_path / "sw.json"
    sw.write_text(text)
    for extra in (["layers=superweights"], ["quantize=nf4", "keep_superweights=true"]):
        err = fails(capsys, "train", *base_args(tiny_model_dir("llama")), *extra, f"superweights={sw}")
        assert needle in err and str(sw) in err
        assert not (tmp_path / "run").exists()


def test_only_proven_entries_count_and_an_entry_without_the_flag_is_proven(tmp_path):
    from superlora.identify.records import proven_blocks, proven_coordinates

    sw = tmp_path / "sw.json"
    entries = [
        {"block": 2, "out_channel": 5, "in_channel": 7},
        {"block": 1, "out_channel": 3, "in_channel": 4, "proven": False},
        {"block": 0, "out_channel": 1, "in_channel": 2, "proven": True, "coordinate": "0:1:2"},
    ]
    sw.write_text(json.dumps({"super_weights": entries}))
    assert proven_blocks(sw)[0] == [0, 2] and proven_coordinates(sw) == ("2:5:7", "0:1:2")


def test_missing_data_path(tiny_model_dir, base_args, tmp_path, capsys):
    err = fails(capsys, "train", *base_args(tiny_model_dir("llama"), **{"task.source": tmp_path / "nowhere"}))
    assert "data folder not found" in err
    assert not (tmp_path / "run").exists()


def test_recipes_from_before_tasks_still_load_their_e2e_data_keys(tmp_path):
    """data.source/variant/split moved to task.*: an old recipe or run config means the same run."""
    old = load_config(TrainConfig, None, ["data.source=/x", "data.variant=original", "data.limit=5"])
    new = load_config(TrainConfig, None, ["task.source=/x", "task.variant=original", "data.limit=5"])
    assert old == new and old.task.name == "e2e" and old.data.limit == 5
    from superlora.errors import SuperloraError

    with pytest.raises(SuperloraError, match="data.source is task.source now"):
        load_config(TrainConfig, None, ["data.source=/x", "task.source=/y"])


def test_existing_run_needs_resume(tiny_model_dir, base_args, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    err = fails(capsys, "train", *base_args(tiny_model_dir("llama")))
    assert "already exists" in err and "--resume" in err


def test_adapter_for_another_base_model(tiny_model_dir, base_args, tmp_path, capsys):
    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), **{"optim.max_steps": 2})
    train(train_cfg(items))
    other = tmp_path / "other-llama"  # same architecture and tokenizer, different weights
    shutil.copytree(tmp_path / "llama", other)
    tiny_model("llama", seed=1).save_pretrained(other)

    err = fails(capsys, "merge", str(tmp_path / "run"), "--model", str(other))
    assert "different model" in err
    assert not (tmp_path / "run" / "merged").exists()
    err = fails(capsys, "train", "--resume", f"output_dir={tmp_path / 'run'}", f"model={other}")
    assert "trained on base model" in err
    err = fails(capsys, "train", "--resume", f"output_dir={tmp_path / 'run'}", "lora.r=8")
    assert "differs from the run's config.yaml in lora.r" in err


def test_a_resumed_runs_earlier_training_time_comes_from_its_log_up_to_the_checkpoint(tmp_path):
    from superlora.training.hf import logged_at

    log = tmp_path / "log.jsonl"
    assert logged_at(log, 100, "elapsed_s") == 0.0  # no log: nothing before
    rows = [{"step": 10, "loss": 1.0, "elapsed_s": 20.0}, {"step": 20, "loss": 0.9, "elapsed_s": 40.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert logged_at(log, 20, "elapsed_s") == 40.0
    assert logged_at(log, 25, "elapsed_s") == 50.0  # 5 steps after the last row, at its 2 s a step
    assert logged_at(log, 10, "elapsed_s") == 20.0
    assert logged_at(log, 0, "elapsed_s") == 0.0
