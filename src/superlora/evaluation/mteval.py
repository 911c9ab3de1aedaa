"""BLEU and NIST exactly as the E2E challenge's official scorer (e2e-metrics) computes them.

Every E2E paper quotes these numbers, so the semantics follow ``measure_scores.py`` to the last
detail rather than any "better" definition:

* **Default mode** (what the scorer gets from its bundled Perl ``mteval-v13a``, run without ``-c``):
  mteval tokenisation with ASCII-only lowercasing; corpus BLEU-4 with mteval's closest-reference
  brevity penalty (ties go to the shorter reference) and its smoothing (a zero-match order counts as
  ``1 / (2^k * total)``, an order with no n-grams at all as precision 1); NIST-5 with information
  weights from all references. E2E MRs have 1-45 references; the scorer pads the missing ones with
  empty segments and its edited mteval divides the reference word count by the *average* number of
  references per MR for the NIST length penalty (plain mteval would divide by the maximum).
* **Python mode** (the scorer's ``-p`` switch, its ``pymteval`` module, used by the LoRA paper):
  the same tokenisation, Unicode lowercasing of tokens, n-gram totals of ``len - n + 1`` that go
  negative for outputs shorter than n-1 tokens, tiny smoothing constants, and a NIST length penalty
  against the sum over MRs of the mean reference length.

sacrebleu supplies the mteval tokeniser and the BLEU n-gram statistics; the final formulas and NIST
(which no library computes this way) are written here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

BLEU_ORDER = 4
NIST_ORDER = 5
# NIST length penalty: a system at 1.5x shorter than the references loses half its score.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

Ngram = tuple[str, ...]


@lru_cache(maxsize=1)
def _tokenizer_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def mteval_tokenize(text: str) -> list[str]:
    """Tokens as Perl mteval-v13a sees them in the official scorer.

    The scorer writes segments into an SGML file whose whitespace mteval collapses before its
    normalisation, and lowercases with ``tr/[A-Z]/[a-z]/`` (ASCII only: "É" stays "É").
    """
    collapsed = " ".join(text.split())
    return _tokenizer_13a()(collapsed.translate(_ASCII_LOWER)).split()


def pymteval_tokenize(text: str) -> list[str]:
    """Tokens as the scorer's ``-p`` mode sees them: lowercased per token, Unicode-aware.

    pymteval splits on single spaces after stripping, so an empty output is one empty token;
    that quirk changes its length statistics and is kept.
    """
    return [token.lower() for token in _tokenizer_13a()(text).split(" ")]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[Ngram]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _max_ref_counts(refs: Sequence[Sequence[str]], n: int) -> Counter[Ngram]:
    """For each n-gram, its largest count in any one reference (the clipping limit)."""
    best: Counter[Ngram] = Counter()
    for ref in refs:
        for gram, count in _ngrams(ref, n).items():
            if count > best[gram]:
                best[gram] = count
    return best


def _closest_length(hyp_len: int, refs: Sequence[Sequence[str]]) -> int:
    """Reference length closest to the output's; ties go to the shorter reference (mteval, pymteval)."""
    return min((len(ref) for ref in refs), key=lambda length: (abs(length - hyp_len), length))


def _check(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} outputs but {len(refs)} reference groups")
    if not hyps:
        raise ValueError("nothing to score")
    if any(not group for group in refs):
        raise ValueError("every output needs at least one reference")


# -----------------------------------------------------------------------------
# BLEU


def mteval_bleu_formula(correct: Sequence[int], total: Sequence[int], sys_len: int, ref_len: int) -> float:
    """mteval-v13a's system-level BLEU from corpus statistics (its default, smoothed variant)."""
    if sys_len <= 0:
        return 0.0
    log_bp = min(0.0, 1.0 - ref_len / sys_len)
    log_sum, smooth = 0.0, 1
    for hits, count in zip(correct, total, strict=True):
        if count == 0:
            continue  # no n-grams of this order anywhere: mteval scores the order as 1
        if hits == 0:
            smooth *= 2
            log_sum += math.log(1.0 / (smooth * count))
        else:
            log_sum += math.log(hits / count)
    return math.exp(log_sum / len(correct) + log_bp)


def _mteval_bleu(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    from sacrebleu.metrics import BLEU

    hyp_lines = [" ".join(mteval_tokenize(h)) for h in hyps]
    ref_lines = [[" ".join(mteval_tokenize(r)) for r in group] for group in refs]
    # sacrebleu takes one stream per reference position; None marks "no such reference here".
    width = max(len(group) for group in ref_lines)
    streams = [[group[i] if i < len(group) else None for group in ref_lines] for i in range(width)]
    stats = BLEU(tokenize="none", force=True, max_ngram_order=BLEU_ORDER).corpus_score(hyp_lines, streams)
    return mteval_bleu_formula(stats.counts, stats.totals, stats.sys_len, stats.ref_len)


def _pymteval_bleu(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    hits = [0] * BLEU_ORDER
    totals = [0] * BLEU_ORDER
    ref_len = 0
    for hyp, group in zip(hyps, refs, strict=True):
        hyp_toks = pymteval_tokenize(hyp)
        ref_toks = [pymteval_tokenize(r) for r in group]
        for n in range(1, BLEU_ORDER + 1):
            best = _max_ref_counts(ref_toks, n)
            hits[n - 1] += sum(min(c, best[g]) for g, c in _ngrams(hyp_toks, n).items())
            totals[n - 1] += len(hyp_toks) - n + 1  # may go negative, as in pymteval
        ref_len += _closest_length(len(hyp_toks), ref_toks)
    bp = 1.0
    if totals[0] <= ref_len:
        bp = math.exp(1.0 - ref_len / (totals[0] if totals[0] else 1e-5))
    log_sum = sum(math.log(max(h, 1e-15) / max(t, 1e-9)) for h, t in zip(hits, totals, strict=True))
    return bp * math.exp(log_sum / BLEU_ORDER)


def bleu(refs: Sequence[Sequence[str]], hyps: Sequence[str], python: bool = False) -> float:
    """Corpus BLEU-4 in [0, 1]: ``refs[i]`` are all references of output ``hyps[i]``."""
    _check(refs, hyps)
    return _pymteval_bleu(refs, hyps) if python else _mteval_bleu(refs, hyps)


# -----------------------------------------------------------------------------
# NIST


def nist_length_penalty(ratio: float) -> float:
    """1 for outputs at least as long as the references, decaying smoothly below (mteval)."""
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)


class _NgramInfo:
    """NIST information weights: log2(count(prefix) / count(n-gram)) over all reference segments."""

    def __init__(self, ref_groups: Sequence[Sequence[Sequence[str]]], order: int, perl: bool):
        self.counts: Counter[Ngram] = Counter()
        self.words = 0
        for group in ref_groups:
            for ref in group:
                self.words += len(ref)
                for n in range(1, order + 1):
                    self.counts.update(_ngrams(ref, n))
        self.perl = perl

    def __call__(self, gram: Ngram) -> float:
        prefix = gram[:-1]
        # Perl tests the joined prefix for truth, and the string "0" is false: mteval then
        # divides by the total word count, as for unigrams. Reproduced for the default mode.
        prefix_count = self.words if not prefix or self.perl and prefix == ("0",) else self.counts[prefix]
        return math.log2(prefix_count / self.counts[gram])


def nist(refs: Sequence[Sequence[str]], hyps: Sequence[str], python: bool = False) -> float:
    """Corpus NIST-5: information-weighted n-gram matches times a length penalty."""
    _check(refs, hyps)
    tokenize = pymteval_tokenize if python else mteval_tokenize
    hyp_toks = [tokenize(h) for h in hyps]
    ref_toks = [[tokenize(r) for r in group] for group in refs]
    info = _NgramInfo(ref_toks, NIST_ORDER, perl=not python)

    hit_info = [0.0] * NIST_ORDER
    hyp_counts = [0] * NIST_ORDER
    mean_ref_len = 0.0  # python mode: sum over MRs of the mean reference length
    for hyp, group in zip(hyp_toks, ref_toks, strict=True):
        for n in range(1, NIST_ORDER + 1):
            best = _max_ref_counts(group, n)
            hit_info[n - 1] += sum(info(g) * min(c, best[g]) for g, c in _ngrams(hyp, n).items() if g in best)
            count = len(hyp) - n + 1
            hyp_counts[n - 1] += count if python else max(count, 0)
        mean_ref_len += sum(len(ref) for ref in group) / len(group)

    if python:
        score = sum(h / (t if t else 1) for h, t in zip(hit_info, hyp_counts, strict=True))
        ref_words = mean_ref_len
    else:
        score = sum(h / max(t, 1) for h, t in zip(hit_info, hyp_counts, strict=True))
        refs_per_mr = sum(len(group) for group in ref_toks) / len(ref_toks)
        ref_words = info.words / refs_per_mr
    ratio = hyp_counts[0] / ref_words if ref_words > 0 else 1.0
    return score * nist_length_penalty(ratio)
