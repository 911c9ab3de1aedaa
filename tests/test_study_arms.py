"""The study's arms: placements defined by the super weights, the matched-budget arm, seeds."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest

from superlora.config import load_config
from superlora.errors import SuperloraError
from superlora.study.arms import Arm, arm_train_config, study_arms
from superlora.study.config import StudyConfig
from superlora.training.config import TrainConfig
from superlora.training.layers import matched_rank, placed_around, select_blocks
from test_training import base_args, data_dir, superweights_json  # noqa: F401 (fixtures)


def _loaded(num_blocks: int):
    return types.SimpleNamespace(arch=types.SimpleNamespace(num_blocks=num_blocks))


@pytest.mark.parametrize(
    ("strategy", "blocks", "expected"),
    [("above", [2, 11], list(range(12, 30))), ("avoid", [2, 11], [b for b in range(30) if b not in (2, 11)])],
)
def test_above_and_avoid_are_placed_by_the_super_weight_blocks(tmp_path, strategy, blocks, expected):
    path = tmp_path / "sw.json"
    path.write_text(json.dumps({"super_weights": [{"block": b} for b in blocks]}))
    cfg = load_config(TrainConfig, None, [f"layers={strategy}", f"superweights={path}"])
    assert select_blocks(cfg, _loaded(30))[0] == expected


def test_above_the_last_block_and_avoiding_every_block_are_refused():
    with pytest.raises(SuperloraError, match="no block is above"):
        placed_around("above", [1, 2], 3)
    with pytest.raises(SuperloraError, match="no block is left"):
        placed_around("avoid", [0, 1, 2], 3)


def test_matched_rank_gives_the_all_block_parameter_count(tiny_model_dir, base_args, tmp_path):  # noqa: F811
    """On a tiny Llama (3 blocks, one super-weight block), rank 4 x 3 blocks == rank 12 x 1 block, trained."""
    from superlora.training.trainer import train

    model = tiny_model_dir("llama")
    sw = superweights_json(tmp_path / "sw.json")
    sw.write_text(json.dumps({**json.loads(sw.read_text()), "architecture": {"num_blocks": 3}}))
    study = load_config(
        StudyConfig, None, ["arms=[all, superweights-matched]", f"train.superweights={sw}", "train.lora.r=4"]
    )
    items = base_args(model, "x", **{"optim.max_steps": 1})
    shared = load_config(TrainConfig, None, [*items, f"superweights={sw}", "lora.r=4"])
    study = dataclasses.replace(study, train=shared)
    all_arm, matched = study_arms(study)
    all_cfg = arm_train_config(study, all_arm, tmp_path / "all")
    matched_cfg = arm_train_config(study, matched, tmp_path / "matched")
    assert matched_cfg.layers == "superweights" and matched_cfg.lora.r == 12 and matched_cfg.lora.alpha == 96
    assert train(all_cfg)["trainable_params"] == train(matched_cfg)["trainable_params"] == 1344
    assert matched_rank(4, 30, 2) == 60  # SmolLM2-135M: blocks 2 and 11 at rank 60 match all 30 at rank 4


def test_each_trained_arm_runs_once_per_seed_and_base_once():
    study = load_config(StudyConfig, None, ["arms=[base, all, random]", "seeds=[1, 2, 3]"])
    arms = study_arms(study)
    assert [a.key for a in arms] == ["base", "all-s1", "all-s2", "all-s3", "random-s1", "random-s2", "random-s3"]
    assert arms[0] == Arm("base", None, "base")
    configs = [arm_train_config(study, a, Path("r") / a.key) for a in arms[4:]]
    assert [c.seed for c in configs] == [1, 2, 3] and {c.layers for c in configs} == {"random"}


def test_a_one_seed_study_keeps_the_arm_names_of_the_committed_results():
    study = load_config(StudyConfig, None, ["arms=[base, all, superweights]", "train.seed=42"])
    assert [a.key for a in study_arms(study)] == ["base", "all", "superweights"]
    assert [a.seed for a in study_arms(study)] == [None, 42, 42]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seeds=[1, 1]", "give distinct seeds"),
        ("seeds=[-1]", "seeds must be >= 0"),
        ("arms=[middle]", "unknown middle"),
        ("only_seeds=[9]", "are not all among the study's seeds"),
    ],
)
def test_bad_seeds_and_arms_are_one_line(override, message):
    with pytest.raises(SuperloraError, match=message):
        load_config(StudyConfig, None, [override])


def test_the_gradient_probe_picks_count_blocks_records_its_scores_and_leaves_the_base_untouched(
    tiny_model_dir,
    base_args,  # noqa: F811
    tmp_path,
):
    from superlora.training.rundir import base_fingerprint, open_run
    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "probe", **{"optim.max_steps": 2})
    summary = train(load_config(TrainConfig, None, [*items, "layers=probe", "count=2", "probe_steps=4"]))
    run = open_run(tmp_path / "probe")
    scores = run.meta["probe"]["scores"]
    assert run.meta["probe"]["steps"] == 4 and len(scores) == 3 and all(s > 0 for s in scores)
    top2 = sorted(sorted(range(3), key=lambda b: -scores[b])[:2])
    assert run.meta["blocks"] == summary["blocks"] == top2
    from tiny import tiny_model

    assert run.meta["base_fingerprint"] == base_fingerprint(tiny_model("llama"))  # the probe changed no base weight


def test_a_run_recorded_before_a_new_setting_existed_still_resumes(tiny_model_dir, base_args, tmp_path):  # noqa: F811
    """config.yaml of an older superlora lacks probe_steps: its default is assumed, not a change."""
    import yaml

    from superlora.training.trainer import train

    items = base_args(tiny_model_dir("llama"), "old", **{"optim.max_steps": 6, "checkpoint.every": 2})
    train(load_config(TrainConfig, None, items))
    config = tmp_path / "old" / "config.yaml"
    recipe = yaml.safe_load(config.read_text())
    del recipe["probe_steps"]
    config.write_text(yaml.safe_dump(recipe))
    import shutil

    shutil.rmtree(tmp_path / "old" / "adapter")
    (tmp_path / "old" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "old" / "checkpoints" / "checkpoint-6")
    assert train(load_config(TrainConfig, None, [*items, "resume=true"]))["steps"] == 6


def test_equal_time_step_counts_come_from_the_side_by_side_step_times_not_the_wall_clock(tmp_path):
    """The equal-step runs' wall-clock (here: superweights as slow as all) is ignored; the measured step-time
    ratio (0.5) doubles the steps, for the listed seeds only, and nothing is listed before it is measured."""
    from superlora.study.arms import equal_time_arms

    study = load_config(
        StudyConfig, None, ["arms=[all, superweights]", "seeds=[1, 2]", "equal_time=[2]", f"out={tmp_path}"]
    )
    for key in ("all-s1", "all-s2", "superweights-s1", "superweights-s2"):
        (tmp_path / "arms" / key).mkdir(parents=True)
        (tmp_path / "arms" / key / "train_summary.json").write_text(json.dumps({"train_time_s": 100, "steps": 10}))
    assert equal_time_arms(study) == []
    kinds = {"all": {"ratio_to_all": 1.0}, "superweights": {"ratio_to_all": 0.5}}
    (tmp_path / "step_times.json").write_text(json.dumps({"seed": 2, "kinds": kinds}))
    (arm,) = equal_time_arms(study)
    steps = 2 * 10  # twice the all-block arm's steps
    assert arm == Arm("superweights@time", 2, "superweights-s2@time", steps)
    assert arm_train_config(study, arm, tmp_path / "r").optim.max_steps == steps


def test_an_arm_whose_steps_take_the_all_block_arms_time_stands_for_its_equal_time_run(tmp_path):
    """At 0.97x the all-block arm's step time an equal-time run would add 3% of steps: within the timing's
    noise, so the equal-step arm stands for it; 0.90x (11% more) and 1.2x (17% fewer) are trained."""
    from superlora.study.arms import equal_time_arms, equal_time_standins

    kinds = ["all", "avoid", "first", "superweights"]
    study = load_config(StudyConfig, None, [f"arms=[{', '.join(kinds)}]", "equal_time=true", f"out={tmp_path}"])
    for kind in kinds:
        (tmp_path / "arms" / kind).mkdir(parents=True)
        (tmp_path / "arms" / kind / "train_summary.json").write_text(json.dumps({"train_time_s": 9, "steps": 100}))
    ratio = {"all": 1.0, "avoid": 0.97, "first": 0.90, "superweights": 1.2}
    (tmp_path / "step_times.json").write_text(json.dumps({"kinds": {k: {"ratio_to_all": r} for k, r in ratio.items()}}))
    assert [(a.key, a.steps) for a in equal_time_arms(study)] == [("first@time", 111), ("superweights@time", 83)]
    assert [a.key for a in equal_time_standins(study)] == ["avoid"]
    everything = dataclasses.replace(study, equal_time_min_gain=0.0)
    assert [a.key for a in equal_time_arms(everything)] == ["avoid@time", "first@time", "superweights@time"]
    assert equal_time_standins(everything) == []
    with pytest.raises(SuperloraError, match="equal_time_min_gain"):
        load_config(StudyConfig, None, ["equal_time_min_gain=1.5"])


def test_the_head_arm_trains_a_classifier_head_without_lora(tmp_path):
    study = load_config(StudyConfig, None, ["arms=[base, head, all]", "train.task.name=sst2", "seeds=[7]"])
    head = next(arm for arm in study_arms(study) if arm.kind == "head")
    cfg = arm_train_config(study, head, tmp_path / "run")
    assert (head.key, cfg.layers, cfg.seed) == ("head", "none", 7)
