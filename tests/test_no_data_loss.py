"""superlora never deletes or overwrites a folder it did not write (issue 13, items 1 and 2).

``identify --ablate --out DIR`` used to ``rmtree`` DIR whatever it held; ``study`` used to delete
``runs_dir/<arm>`` whenever it had no config.yaml. Each test plants the user's files where superlora
writes and checks they are still there, byte for byte, after superlora refuses in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from superlora.config import load_config
from superlora.errors import SuperloraError
from superlora.study.config import StudyConfig
from superlora.study.runner import run_study
from test_study import write_test_split
from test_training import superweights_json, write_e2e

USER_FILES = {"notes.txt": b"my notes, not superlora's\n", "sub/data.bin": bytes(range(256)) * 4}


def plant_user_files(folder: Path) -> None:
    for name, data in USER_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def assert_user_files_intact(folder: Path) -> None:
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert found == sorted(USER_FILES), found
    for name, data in USER_FILES.items():
        assert (folder / name).read_bytes() == data, name


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("superlora: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def no_leftovers_beside(folder: Path) -> list[str]:
    """Hidden staging/old siblings that an atomic replace leaves only when it fails."""
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "superlora", *args], capture_output=True, text=True, env=env)


@pytest.fixture
def gpt2_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("gpt2")


def ablate(model: Path, out: Path, scale: str = "0") -> subprocess.CompletedProcess:
    return _cli("identify", "--model", str(model), "--ablate", "1:7:21", "--scale", scale, "--out", str(out))


# -----------------------------------------------------------------------------
# identify --ablate


def test_identify_ablate_refuses_to_overwrite_a_folder_it_did_not_write(gpt2_dir, tmp_path):
    out = tmp_path / "mine"
    plant_user_files(out)
    result = ablate(gpt2_dir, out)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert str(out) in line and "--out" in line
    assert_user_files_intact(out)
    assert no_leftovers_beside(out) == []


def test_identify_ablate_refuses_before_loading_the_model(tmp_path):
    out = tmp_path / "mine"
    plant_user_files(out)
    result = ablate(tmp_path / "no-such-model", out)  # a load would fail with "cannot load"
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert str(out) in line and "cannot load" not in line
    assert_user_files_intact(out)


def test_identify_ablate_replaces_its_own_previous_output(gpt2_dir, tmp_path):
    out = tmp_path / "ablated"
    assert ablate(gpt2_dir, out, scale="2").returncode == 0
    result = ablate(gpt2_dir, out, scale="3")
    assert result.returncode == 0, result.stderr
    original = AutoModelForCausalLM.from_pretrained(gpt2_dir).transformer.h[1].mlp.c_proj.weight[21, 7]
    copy = AutoModelForCausalLM.from_pretrained(out).transformer.h[1].mlp.c_proj.weight[21, 7]
    assert torch.allclose(copy, 3 * original)
    assert no_leftovers_beside(out) == []


def test_identify_ablate_refuses_a_model_cache_folder_and_accepts_an_empty_one(tmp_path):
    from superlora.identify.saved import check_ablate_target

    cache = tmp_path / "smollm2-135m"  # what `pull` writes: superlora's, but not this command's to replace
    cache.mkdir()
    marker = json.dumps({"alias": "smollm2-135m", "source": "x.gguf"}).encode()
    (cache / "superlora-cache.json").write_bytes(marker)
    with pytest.raises(SuperloraError, match="not written by `superlora identify --ablate`"):
        check_ablate_target(cache)
    assert (cache / "superlora-cache.json").read_bytes() == marker
    (tmp_path / "empty").mkdir()
    check_ablate_target(tmp_path / "empty")
    check_ablate_target(tmp_path / "absent")


# -----------------------------------------------------------------------------
# study


@pytest.fixture
def study_cfg(tmp_path, tiny_model_dir) -> StudyConfig:
    """A two-arm study on a tiny llama (as in test_study.py): base, then all."""
    data = write_e2e(tmp_path / "e2e")
    write_test_split(data)
    items = [
        f"train.model={tiny_model_dir('llama')}",
        f"train.task.source={data}",
        "train.data.max_length=48",
        "train.optim.max_steps=2",
        "train.optim.batch_size=4",
        f"train.superweights={superweights_json(tmp_path / 'sw.json')}",
        "eval.decode.num_beams=1",
        "eval.decode.max_new_tokens=4",
        "eval.skip_meteor=true",
        "arms=[base, all]",
        f"runs_dir={tmp_path / 'runs'}",
        f"out={tmp_path / 'results'}",
        f"readme={tmp_path / 'README.md'}",
    ]
    return load_config(StudyConfig, None, items)


def test_study_refuses_an_arm_folder_it_did_not_create_and_keeps_its_files(study_cfg):
    folder = Path(study_cfg.runs_dir) / "all"
    plant_user_files(folder)  # no config.yaml: not a run folder
    with pytest.raises(SuperloraError) as raised:
        run_study(study_cfg)
    message = str(raised.value)
    assert str(folder) in message and "runs_dir=" in message and "\n" not in message
    assert_user_files_intact(folder)
    assert not (Path(study_cfg.out) / "arms" / "base" / "scores.json").exists()  # refused before any work


def test_study_refuses_a_recipe_file_it_did_not_write(study_cfg):
    recipe = Path(study_cfg.runs_dir) / "all.yaml"
    recipe.parent.mkdir(parents=True)
    mine = b"# my own recipe\nmodel: gpt2\n"
    recipe.write_bytes(mine)
    with pytest.raises(SuperloraError, match="all.yaml was not written by superlora study"):
        run_study(study_cfg)
    assert recipe.read_bytes() == mine


def test_study_accepts_empty_and_real_run_folders(study_cfg):
    from superlora.study.runner import check_arm_run

    runs = Path(study_cfg.runs_dir)
    (runs / "all").mkdir(parents=True)  # empty: nothing to lose, the trainer fills it
    check_arm_run(study_cfg, "all")
    (runs / "last").mkdir()
    (runs / "last" / "config.yaml").write_text("layers: last\n")  # a run to resume: the trainer validates it
    check_arm_run(study_cfg, "last")
