"""The five official E2E metrics at once, with the official scorer's semantics.

``score_corpus`` reproduces ``measure_scores.py`` of e2e-metrics: BLEU and NIST from ``mteval``
(Perl mteval-v13a semantics by default, the scorer's ``-p`` Python variant with ``python_nist``),
METEOR, ROUGE-L and CIDEr from ``coco`` on PTB-tokenised text. Without Java, METEOR can be
skipped and tokenisation falls back to a Python approximation of the PTB tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from superlora.evaluation import coco, mteval

METRICS: tuple[str, ...] = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


@dataclass
class CorpusScores:
    """Corpus-level scores (None for a skipped metric) and how they were obtained."""

    BLEU: float
    NIST: float
    METEOR: float | None
    ROUGE_L: float
    CIDEr: float
    outputs: int
    mteval: str  # "perl-mteval-v13a" or "python (-p)"
    ptb_tokenizer: str  # "java" or "python-approximation"
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in METRICS}

    def to_dict(self) -> dict:
        return asdict(self)


def score_corpus(
    refs: Sequence[Sequence[str]],
    hyps: Sequence[str],
    python_nist: bool = False,
    skip_meteor: bool = False,
) -> CorpusScores:
    """Score ``hyps[i]`` against all of ``refs[i]``; raises SuperloraError if Java is needed and missing."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} outputs but {len(refs)} reference groups")
    notes = []
    if not skip_meteor:
        coco.require_java("METEOR")
    if coco.java_executable() is not None:
        tok_refs_flat, tok_hyps = coco.ptb_tokenize_java([r for group in refs for r in group], hyps)
        tokenizer = "java"
    else:
        tok_refs_flat = coco.ptb_tokenize_python([r for group in refs for r in group])
        tok_hyps = coco.ptb_tokenize_python(hyps)
        tokenizer = "python-approximation"
        notes.append("no Java: ROUGE_L and CIDEr use a Python approximation of the PTB tokenizer")
    tok_refs, start = [], 0
    for group in refs:
        tok_refs.append(tok_refs_flat[start : start + len(group)])
        start += len(group)

    return CorpusScores(
        BLEU=mteval.bleu(refs, hyps, python=python_nist),
        NIST=mteval.nist(refs, hyps, python=python_nist),
        METEOR=None if skip_meteor else coco.meteor(tok_refs, tok_hyps),
        ROUGE_L=coco.rouge_l(tok_refs, tok_hyps),
        CIDEr=coco.cider(tok_refs, tok_hyps),
        outputs=len(hyps),
        mteval="python (-p)" if python_nist else "perl-mteval-v13a",
        ptb_tokenizer=tokenizer,
        notes=notes,
    )
