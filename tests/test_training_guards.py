"""Training never runs wrong in silence: finished runs, one process per run folder, non-finite numbers, bad
settings, full disks and damaged files each end in one line (exit 2) and leave the run folder usable."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from superlora.cli import main
from superlora.config import load_config
from superlora.errors import SuperloraError
from superlora.training.config import TrainConfig
from superlora.training.rundir import read_log
from test_training import base_args, data_dir  # noqa: F401 (fixtures)

ADAPTER = "adapter/adapter_model.safetensors"


def cfg(items: list[str]) -> TrainConfig:
    return load_config(TrainConfig, None, items)


def one_line_error(capsys, *argv: str) -> str:
    """Run the CLI, expect exit 2 and exactly one stderr line, return it."""
    capsys.readouterr()  # what the fixtures printed (model-saving progress bars)
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s]" not in ln]  # model-loading progress bars
    assert len(lines) == 1 and lines[0].startswith("superlora: error:"), err
    return lines[0]


# -----------------------------------------------------------------------------
# Resuming a finished run, or one killed between its last checkpoint and its adapter


def test_resuming_a_finished_run_is_a_no_op_that_says_so(tiny_model_dir, base_args, capsys):  # noqa: F811
    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "done")
    run = Path(cfg(items).output_dir)
    first = train(cfg(items))
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*/adapter_model.safetensors")}
    adapter = (run / ADAPTER).read_bytes()
    capsys.readouterr()

    assert not (run.parent / ".done.lock").exists()  # a run that ended released and removed its lock
    again = train(cfg([*items, "resume=true"]))
    assert "already finished (8 of 8 steps): nothing to resume" in capsys.readouterr().out
    assert again == first
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, 9))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*/adapter_model.safetensors")} == before
    assert (run / ADAPTER).read_bytes() == adapter


def test_a_run_killed_after_its_last_checkpoint_finishes_without_extra_steps(tiny_model_dir, base_args, capsys):  # noqa: F811
    """What a kill between checkpoint-8 and adapter/ leaves: the resume writes checkpoint-8's adapter, no step 9."""
    import shutil

    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "cut")
    run = Path(cfg(items).output_dir)
    train(cfg(items))
    adapter = (run / ADAPTER).read_bytes()
    shutil.rmtree(run / "adapter")
    (run / "summary.json").unlink()
    capsys.readouterr()

    summary = train(cfg([*items, "resume=true"]))
    assert "checkpoint-8 is the run's last step" in capsys.readouterr().out
    assert summary["steps"] == 8
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, 9))
    assert (run / "checkpoints" / "checkpoint-8").is_dir() and not (run / "checkpoints" / "checkpoint-9").exists()
    assert (run / ADAPTER).read_bytes() == adapter


# -----------------------------------------------------------------------------
# One training process per run folder


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _start_long_run(items: list[str], run: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "superlora", "train", *items],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not read_log(run / "log.jsonl") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the first run ended before the second one started"
    return proc


def test_a_second_train_on_a_busy_run_folder_is_refused_and_a_killed_holder_leaves_no_lock(
    tiny_model_dir,
    base_args,  # noqa: F811
):
    items = base_args(tiny_model_dir("gpt2"), "busy", **{"optim.max_steps": 3000, "checkpoint.every": 5})
    run = Path(cfg(items).output_dir)
    first = _start_long_run(items, run)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "superlora", "train", *items, "--resume"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by superlora train (pid" in lines[0], second.stderr
        assert f"pid {first.pid} " in lines[0]
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert (run.parent / ".busy.lock").exists()  # a kill -9 cannot clean up; the kernel released the lock

    from superlora.training import rundir

    with rundir.locked(run):  # the dead holder's lock is stale: the next process takes it
        assert f"pid {os.getpid()} " in (run.parent / ".busy.lock").read_text()
    assert not (run.parent / ".busy.lock").exists()  # released and removed on a normal exit


def test_two_new_runs_on_one_folder_do_not_both_proceed(tiny_model_dir, base_args):  # noqa: F811
    from superlora.training import rundir

    run = Path(cfg(base_args(tiny_model_dir("llama"), "race")).output_dir)
    with rundir.locked(run), pytest.raises(SuperloraError, match="is in use by superlora train"), rundir.locked(run):
        pass
    with rundir.locked(run):  # released: the next holder gets it
        pass


# -----------------------------------------------------------------------------
# Non-finite numbers


@pytest.mark.parametrize("setting", ["optim.lr=.inf", "optim.lr=.nan", "lora.alpha=.nan", "optim.epochs=.inf"])
def test_non_finite_settings_are_refused_before_the_run_folder_exists(
    tiny_model_dir,
    base_args,  # noqa: F811
    capsys,
    setting,
):
    items = base_args(tiny_model_dir("llama"), "nan")
    err = one_line_error(capsys, "train", *items, setting)
    assert "must be a finite number" in err and setting.split("=")[0] in err
    assert not Path(cfg(items).output_dir).exists()


def test_a_loss_that_becomes_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_model_dir,
    base_args,  # noqa: F811
):
    """A divergence (here: an adapter weight set to inf after step 5) ends the run at step 6 with one line."""
    from transformers import TrainerCallback

    from superlora.training.trainer import train

    class Diverge(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 5:
                lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
                lora_b.data.fill_(float("inf"))

    items = base_args(tiny_model_dir("llama"), "diverged", **{"checkpoint.every": 2})
    run = Path(cfg(items).output_dir)
    with pytest.raises(SuperloraError, match=r"training stopped at step 6: the loss became non-finite.*checkpoint-4"):
        train(cfg(items), callbacks=[Diverge()])
    assert not (run / "adapter").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    from safetensors.torch import load_file

    kept = load_file(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())


def test_non_finite_weights_are_never_checkpointed(tiny_model_dir, base_args):  # noqa: F811
    """Weights that turn NaN at a checkpoint step are caught before the checkpoint is written."""
    from transformers import TrainerCallback

    from superlora.training.trainer import train

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 4:
                next(p for n, p in model.named_parameters() if "lora_A" in n).data[0, 0] = float("nan")

    items = base_args(tiny_model_dir("llama"), "poisoned", **{"checkpoint.every": 2})
    run = Path(cfg(items).output_dir)
    with pytest.raises(SuperloraError, match=r"step 4: the adapter's weights became non-finite.*checkpoint-2 stays"):
        train(cfg(items), callbacks=[Poison()])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert not (run / "adapter").exists()


# -----------------------------------------------------------------------------
# Settings that used to mean something else, or a traceback


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("optim.warmup_steps=-5", "optim.warmup_steps must be >= 0"),
        ("seed=-1", "seed must be in [0, 2**32)"),
        ("optim.max_steps=-5", "optim.max_steps must be > 0, or -1"),
        ("optim.max_steps=0", "optim.max_steps must be > 0, or -1"),
        ("optim.max_grad_norm=-1", "optim.max_grad_norm must be > 0 (or null"),
        ("optim.lr=5", "optim.lr must be in (0, 1]"),
        ("lora.alpha=-2", "lora.alpha must be > 0"),
        ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
    ],
)
def test_out_of_range_settings_are_one_line_before_the_run_folder_exists(
    tiny_model_dir,
    base_args,  # noqa: F811
    capsys,
    setting,
    message,
):
    items = base_args(tiny_model_dir("llama"), "bad")
    assert message in one_line_error(capsys, "train", *items, setting)
    assert not Path(cfg(items).output_dir).exists()


def test_max_grad_norm_null_turns_clipping_off():
    from superlora.training.hf import optim_arguments

    assert optim_arguments(cfg(["optim.max_grad_norm=null"]).optim)["max_grad_norm"] == 0.0
    assert optim_arguments(cfg([]).optim)["max_grad_norm"] == 1.0


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("model: caf\xe9\n".encode("latin-1"))
    assert "latin1.yaml: not UTF-8 text (byte 10)" in one_line_error(capsys, "train", str(recipe))


# -----------------------------------------------------------------------------
# Full disks and damaged files


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_the_previous_checkpoint_resumes(
    tiny_model_dir,
    base_args,  # noqa: F811
    monkeypatch,
):
    from transformers import Trainer

    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "full")
    run = Path(cfg(items).output_dir)
    real_save = Trainer._save_checkpoint

    def save_or_fill_disk(self, model, trial):
        if self.state.global_step == 8:
            (Path(self._get_output_dir(trial)) / "checkpoint-8").mkdir(parents=True)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, model, trial)

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_or_fill_disk)
    with pytest.raises(SuperloraError, match=r"could not write checkpoint-8 \(No space left on device\); checkpoint-4"):
        train(cfg(items))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-4"]  # no half checkpoint
    monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)
    assert train(cfg([*items, "resume=true"]))["steps"] == 8


def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_earlier_checkpoint(
    tiny_model_dir,
    base_args,  # noqa: F811
    capsys,
):
    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "tampered", **{"optim.max_steps": 12})
    run = Path(cfg(items).output_dir)
    train(cfg(items))
    (run / "summary.json").unlink()
    import shutil

    shutil.rmtree(run / "adapter")
    damaged = run / "checkpoints" / "checkpoint-12" / "adapter_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    err = one_line_error(capsys, "train", *items, "--resume")
    assert "checkpoint-12 is damaged: adapter_model.safetensors" in err and "resume from checkpoint-8" in err


def test_an_adapter_for_other_shapes_is_one_line_not_a_state_dict_dump(tiny_model_dir, e2e_dir, tmp_path, capsys):
    """A bare adapter folder (no run, no base record) of a model with other shapes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tiny import tiny_config

    small = tiny_model_dir("llama")
    wider = tiny_config("llama")
    wider.hidden_size = 48
    other = AutoModelForCausalLM.from_config(wider)
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "a")
    args = [f"task.source={e2e_dir}", "--adapter", str(tmp_path / "a"), "--limit", "1", "--skip-meteor"]
    err = one_line_error(capsys, "evaluate", f"model={small}", *args)
    assert "does not fit" in err and "lora_A" in err and "Error(s) in loading" not in err


def test_a_tampered_adapter_file_is_one_line(tiny_model_dir, base_args, capsys):  # noqa: F811
    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "run")
    run = Path(cfg(items).output_dir)
    train(cfg(items))
    (run / ADAPTER).write_bytes(b"\x00" * 64)
    err = one_line_error(capsys, "merge", str(run))
    assert f"cannot load adapter {run / 'adapter'}" in err


def test_an_adapter_copied_away_from_its_run_still_refuses_another_base(
    tiny_model_dir,
    base_args,  # noqa: F811
    e2e_dir,
    tmp_path,
    capsys,
):
    """The base fingerprint travels in the adapter folder, so evaluate checks it without run.json."""
    import shutil

    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "run")
    train(cfg(items))
    shutil.copytree(Path(cfg(items).output_dir) / "adapter", tmp_path / "copied")
    from tiny import tiny_model, tiny_tokenizer

    other = tmp_path / "other"  # same shapes, other weights
    tiny_model("llama", seed=7).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    args = [f"task.source={e2e_dir}", "--adapter", str(tmp_path / "copied"), "--limit", "1", "--skip-meteor"]
    err = one_line_error(capsys, "evaluate", f"model={other}", *args)
    assert "was trained on base model" in err and "is a different model" in err
    assert json.loads((tmp_path / "copied" / "superlora.json").read_text())["model"] == items[0].split("=", 1)[1]


def test_an_adapter_with_nan_weights_is_refused(tiny_model_dir, e2e_dir, tmp_path, capsys):
    """What an older superlora wrote after `optim.lr=.inf`: an all-NaN adapter, now refused wherever it is loaded."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model_dir("llama")
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, target_modules=["q_proj"])
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.fill_(float("nan"))
    peft_model.save_pretrained(tmp_path / "nan")
    args = [f"task.source={e2e_dir}", "--adapter", str(tmp_path / "nan"), "--limit", "1", "--skip-meteor"]
    err = one_line_error(capsys, "evaluate", f"model={model_dir}", *args)
    assert "has non-finite weights" in err and "lora_B" in err
