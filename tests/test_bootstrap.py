"""The paired bootstrap: item statistics that sum to the official corpus BLEU, and tests that can say no."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from superlora.evaluation.bootstrap import bleu_from_stats, bleu_item_stats, paired_bootstrap
from superlora.evaluation.mteval import bleu

RESULTS = Path(__file__).parents[1] / "results" / "study-oneseed" / "arms"  # the one-seed study


def _outputs(arm: str) -> dict[str, str]:
    with open(RESULTS / arm / "outputs.tsv", encoding="utf-8") as f:
        return {row["MR"]: row["output"] for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture
def e2e_test(e2e_dir):
    from superlora.tasks.e2e.data import group_references, load_split

    return group_references(load_split("test", "original", e2e_dir))


@pytest.mark.real
def test_item_statistics_sum_to_the_committed_corpus_bleu(e2e_test):
    """The committed study's all-block outputs: the summed item statistics give its scores.json BLEU exactly."""
    import json

    refs = [r for _, r in e2e_test]
    hyps = [_outputs("all")[mr] for mr, _ in e2e_test]
    stats = bleu_item_stats(refs, hyps)
    assert stats.shape == (630, 10)
    committed = json.loads((RESULTS / "all" / "scores.json").read_text())["metrics"]["BLEU"]
    assert bleu_from_stats(stats) == pytest.approx(committed, abs=1e-12)
    assert bleu_from_stats(stats) == pytest.approx(bleu(refs, hyps), abs=1e-12)


@pytest.mark.real
def test_the_committed_all_block_arm_is_significantly_better_than_the_base_model(e2e_test):
    refs = [r for _, r in e2e_test]
    tuned = bleu_item_stats(refs, [_outputs("all")[mr] for mr, _ in e2e_test])
    base = bleu_item_stats(refs, [_outputs("base")[mr] for mr, _ in e2e_test])
    result = paired_bootstrap(tuned, base, bleu_from_stats, resamples=300)
    assert result.delta > 0.4 and result.ci_low > 0.3 and result.p_value < 0.01


def test_a_system_against_itself_shows_no_difference():
    values = np.random.default_rng(1).random(200)
    result = paired_bootstrap(values, values.copy(), np.mean, resamples=500)
    assert result.delta == 0.0 and result.ci_low == result.ci_high == 0.0 and result.p_value == 1.0


def test_noise_is_not_called_a_difference_and_a_real_gap_is():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2, 400).astype(float)  # exact match per item
    shuffled = rng.permutation(a)  # the same accuracy on other items: no real difference
    same = paired_bootstrap(a, shuffled, np.mean, resamples=1000)
    assert same.p_value > 0.2 and same.ci_low < 0 < same.ci_high
    better = np.maximum(a, rng.integers(0, 2, 400))  # right wherever a is, and on more items
    gap = paired_bootstrap(better, a, np.mean, resamples=1000)
    assert gap.delta > 0.15 and gap.ci_low > 0 and gap.p_value < 0.01


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(np.zeros(3), np.zeros(4), np.mean)


def _summary(sw_bleu: float, all_bleu: float) -> list[dict]:
    return [
        {"kind": "all", "seeds": 3, "trainable_params": 230_400, "train_time_s": 600.0, "BLEU": all_bleu},
        {"kind": "superweights", "seeds": 3, "trainable_params": 15_360, "train_time_s": 420.0, "BLEU": sw_bleu},
    ]


def _comparison(arm: str, against: str, delta: float, low: float, high: float, p: float) -> dict:
    return {"arm": arm, "against": against, "delta": delta, "ci_low": low, "ci_high": high, "p_value": p}


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        ((-0.005, 0.01), "keeps quality"),
        ((-0.09, -0.03), "does not keep quality"),
        ((-0.06, 0.02), "may or may not keep quality"),
    ],
)
def test_the_readme_answer_is_worded_from_the_interval_alone(interval, verdict):
    from superlora.study.significance import answer
    from superlora.tasks import get_task
    from superlora.tasks.e2e.config import E2EConfig

    task = get_task(E2EConfig())
    delta = sum(interval) / 2
    comparisons = [
        _comparison("superweights", "all", delta, *interval, 0.04),
        _comparison("superweights", "random", 0.02, 0.004, 0.036, 0.02),
        _comparison("superweights", "probe", -0.001, -0.02, 0.018, 0.9),
    ]
    text = answer(_summary(0.55 + delta, 0.55), comparisons, task)
    assert text.startswith(f"**LoRA only in the super-weight blocks {verdict}**")
    assert "6.7% of the trainable parameters in 70% of the training time" in text
    assert "not distinguishable from probe (-0.0010, p = 0.900); better than random (+0.0200, p = 0.020)" in text


def test_no_answer_without_the_superweights_against_all_test():
    from superlora.study.significance import answer
    from superlora.tasks import get_task
    from superlora.tasks.e2e.config import E2EConfig

    assert answer(_summary(0.5, 0.6), [], get_task(E2EConfig())) is None
