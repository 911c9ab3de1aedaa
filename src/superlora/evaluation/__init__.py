"""E2E evaluation: the challenge's five official metrics, slot error rate, and beam-search decoding.

* ``mteval``: BLEU and NIST exactly as the official scorer (e2e-metrics) computes them.
* ``coco``: METEOR, ROUGE-L and CIDEr via the COCO caption toolkit (pycocoevalcap), as e2e-metrics runs it.
* ``metrics``: all five at once (``score_corpus``).
* ``ser``: rule-based slot error rate, the faithfulness measure the five metrics miss.
* ``inputs``: reading reference CSVs and system outputs (TSV or plain text) and pairing them.
* ``decode``: batched beam search over test MRs for ``superlora evaluate``.

Modules are imported on demand so ``superlora --help`` stays fast.
"""
