"""Paired bootstrap over test items: is arm A's corpus score really above arm B's, or is it the test set?

Corpus BLEU is not a mean of per-item scores, but it is a function of sums of per-item statistics (clipped
n-gram matches and counts, output and reference lengths). Each item's statistics are computed once, the
same way the official scorer's mteval-v13a mode sums them; a resample of items then costs one sum, so
thousands of resamples take a fraction of a second. Both arms are resampled with the same items (paired),
which is what makes small differences on a 630-MR test set testable (Koehn 2004).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from superlora.evaluation.mteval import BLEU_ORDER, mteval_bleu_formula, mteval_tokenize


def bleu_item_stats(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> np.ndarray:
    """Per item: clipped matches and totals for n = 1..4, output length, closest reference length."""
    from sacrebleu.metrics import BLEU

    scorer = BLEU(tokenize="none", force=True, max_ngram_order=BLEU_ORDER)
    rows = []
    for group, hyp in zip(refs, hyps, strict=True):
        tokens = " ".join(mteval_tokenize(hyp))
        streams = [[" ".join(mteval_tokenize(ref))] for ref in group]
        stats = scorer.corpus_score([tokens], streams)
        rows.append([*stats.counts, *stats.totals, stats.sys_len, stats.ref_len])
    return np.asarray(rows, dtype=np.int64)


def bleu_from_stats(stats: np.ndarray) -> float:
    """Corpus BLEU (mteval-v13a) from the summed item statistics."""
    total = stats.sum(axis=0)
    n = BLEU_ORDER
    return mteval_bleu_formula(total[:n].tolist(), total[n : 2 * n].tolist(), int(total[2 * n]), int(total[2 * n + 1]))


@dataclass
class Comparison:
    """A minus B on the full test set, its bootstrap confidence interval, and the two-sided p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float  # share of resamples on the other side of zero, doubled (capped at 1)
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, statistic, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Comparison:
    """Compare ``statistic(a[items])`` with ``statistic(b[items])`` over resampled item sets.

    ``a`` and ``b`` hold one row (or value) per test item, in the same item order; ``statistic`` maps such an
    array to the corpus score (``bleu_from_stats``, or ``np.mean`` for per-item metrics like exact match).
    """
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired bootstrap needs the same items on both sides, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    deltas = np.array([statistic(a[p]) - statistic(b[p]) for p in picks])
    delta = float(statistic(a) - statistic(b))
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    other_side = np.mean(deltas <= 0) if delta > 0 else np.mean(deltas >= 0)
    return Comparison(delta, float(low), float(high), float(min(1.0, 2 * other_side)), resamples)
