"""The five official E2E metrics: exact official numbers, hand-computed edge cases, inputs, CLI errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from superlora.cli import main
from superlora.evaluation import coco, mteval
from superlora.evaluation.inputs import fix_mojibake, load_scoring_set, read_outputs
from superlora.evaluation.metrics import score_corpus

needs_java = pytest.mark.skipif(coco.java_executable() is None, reason="needs Java")


def _tgen(e2e_dir):
    return load_scoring_set(
        e2e_dir / "original" / "testset_w_refs.csv", e2e_dir / "reference-output" / "tgen-test-output.tsv"
    )


# -----------------------------------------------------------------------------
# The official numbers (e2e-metrics measure_scores.py on the TGen baseline output)


@pytest.mark.real
@needs_java
def test_tgen_scores_match_the_official_scorer(e2e_dir):
    data = _tgen(e2e_dir)
    assert len(data.hyps) == 630
    scores = score_corpus(data.refs, data.hyps)
    got = {name: round(value, 4) for name, value in scores.metrics().items()}
    assert got == {"BLEU": 0.6593, "NIST": 8.6094, "METEOR": 0.4483, "ROUGE_L": 0.6850, "CIDEr": 2.2338}
    assert scores.ptb_tokenizer == "java"


@pytest.mark.real
def test_tgen_python_mode_matches_the_official_p_switch(e2e_dir):
    data = _tgen(e2e_dir)
    assert round(mteval.nist(data.refs, data.hyps, python=True), 4) == 8.5923
    assert round(mteval.bleu(data.refs, data.hyps, python=True), 4) == 0.6593


@pytest.mark.real
def test_python_ptb_fallback_gives_the_same_rouge_and_cider_on_tgen(e2e_dir, monkeypatch):
    """Without Java, ROUGE_L and CIDEr still come out as the official ones on real data."""
    data = _tgen(e2e_dir)
    monkeypatch.setattr(coco, "java_executable", lambda: None)
    scores = score_corpus(data.refs, data.hyps, skip_meteor=True)
    assert scores.ptb_tokenizer == "python-approximation" and scores.METEOR is None
    assert round(scores.ROUGE_L, 4) == 0.6850 and round(scores.CIDEr, 4) == 2.2338
    assert round(scores.BLEU, 4) == 0.6593 and round(scores.NIST, 4) == 8.6094


# -----------------------------------------------------------------------------
# Tokenisation


def test_mteval_tokenisation_lowercases_ascii_only_and_keeps_numbers():
    assert mteval.mteval_tokenize("The Café costs £20-25, rated 3.5 stars.") == (
        ["the", "café", "costs", "£20", "-", "25", ",", "rated", "3.5", "stars", "."]
    )
    # Perl's tr/[A-Z]/[a-z]/ leaves non-ASCII capitals alone; the -p mode lowercases them.
    assert mteval.mteval_tokenize("ÉCOLE") == ["École"]
    assert mteval.pymteval_tokenize("ÉCOLE") == ["école"]
    assert mteval.mteval_tokenize("  a\n\tb  ") == ["a", "b"]
    assert mteval.mteval_tokenize("") == []
    assert mteval.pymteval_tokenize("") == [""]  # pymteval's quirk: one empty token


def test_python_ptb_tokenizer_matches_the_jar_on_tricky_text():
    # Expected strings are what stanford-corenlp-3.4.1 + COCO's punctuation removal produce.
    texts = [
        "It's a £20-25 place, isn't it? Brown's (1/5) rating... cannot",
        "Mr. Smith's kid-friendly place in the city center., near the U.S. border",
        "The Eagle,has French food--not cheap. Prices from £20-£25.Yes",
    ]
    assert coco.ptb_tokenize_python(texts) == [
        "it 's a # 20-25 place is n't it brown 's -lrb- 1/5 -rrb- rating can not",
        "mr. smith 's kid-friendly place in the city center. near the u.s. border",
        "the eagle has french food not cheap prices from # 20 # 25 yes",
    ]


@needs_java
def test_java_ptb_tokenizer_runs_batches_separately():
    refs, hyps = coco.ptb_tokenize_java(["Café Rouge, near £30!", "b"], ["", "x -- y"])
    assert refs == ["café rouge near # 30", "b"]
    assert hyps == ["", "x y"]


# -----------------------------------------------------------------------------
# BLEU and NIST on hand-computed cases


def test_bleu_perfect_match_is_one():
    assert mteval.bleu([["The cat is on the mat."]], ["the cat is on the mat ."]) == pytest.approx(1.0)


def test_bleu_uses_mteval_smoothing_for_zero_match_orders():
    # 1-grams 3/4, 2-grams 1/3, 3-grams 0/2 -> 1/(2*2), 4-grams 0/1 -> 1/(4*1); lengths equal.
    expected = math.exp((math.log(3 / 4) + math.log(1 / 3) + math.log(1 / 4) + math.log(1 / 4)) / 4)
    assert mteval.bleu([["a b x d"]], ["a b c d"]) == pytest.approx(expected)


def test_bleu_orders_without_any_ngram_count_as_one_in_mteval_but_not_in_pymteval():
    # "the cat" has no 3- or 4-grams. mteval skips those orders; brevity penalty exp(1 - 4/2).
    assert mteval.bleu([["the cat is here"]], ["the cat"]) == pytest.approx(math.exp(-1))
    # pymteval: totals 0 and -1 clamp to 1e-9, hits to 1e-15 -> each such order contributes 1e-6.
    assert mteval.bleu([["the cat is here"]], ["the cat"], python=True) == pytest.approx(math.exp(-1) * 1e-3)


def test_bleu_brevity_penalty_takes_the_closest_reference_shorter_on_ties():
    # Output of 3 tokens, references of 2 and 4 tokens: the tie goes to 2, so no penalty; all n-grams
    # of "a b c" occur in "a b c d" (it has no 4-gram: that order counts as 1). With 4: exp(1 - 4/3).
    assert mteval.bleu([["a b", "a b c d"]], ["a b c"]) == pytest.approx(1.0)
    assert mteval.bleu([["a b c d"]], ["a b c"]) == pytest.approx(math.exp(1 - 4 / 3))


def test_nist_of_an_exact_single_reference_match():
    # info(a) = info(b) = log2(2/1) = 1, info(a b) = log2(1/1) = 0 -> (1 + 1) / 2 = 1.
    assert mteval.nist([["a b"]], ["a b"]) == pytest.approx(1.0)
    assert mteval.nist([["a b"]], ["a b"], python=True) == pytest.approx(1.0)


def test_nist_length_penalty_differs_between_perl_and_python_modes():
    refs = [["a b c d", "a b c d e f"], ["x y"]]
    hyps = ["a b", "x y"]
    # 12 reference words; unigram info: a, b -> log2(12/2), x, y -> log2(12/1); higher orders add 0.
    first_term = (2 * math.log2(6) + 2 * math.log2(12)) / 4
    # Perl (edited mteval): 12 words / 1.5 references per MR = 8 reference words; 4 output words.
    assert mteval.nist(refs, hyps) == pytest.approx(first_term * mteval.nist_length_penalty(4 / 8))
    # pymteval: sum of mean reference lengths = 5 + 2 = 7.
    assert mteval.nist(refs, hyps, python=True) == pytest.approx(first_term * mteval.nist_length_penalty(4 / 7))
    assert mteval.nist_length_penalty(1 / 1.5) == pytest.approx(0.5)


def test_metrics_refuse_mismatched_lengths():
    with pytest.raises(ValueError):
        mteval.bleu([["a"], ["b"]], ["a"])
    with pytest.raises(ValueError):
        mteval.nist([[]], ["a"])


# -----------------------------------------------------------------------------
# Inputs


def _refs_csv(path, rows):
    lines = ['"mr","ref"'] + [f'"{mr}","{ref}"' for mr, ref in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ROWS = [
    ("name[A], eatType[pub]", "A is a pub."),
    ("name[A], eatType[pub]", "There is a pub called A."),
    ("name[B], area[riverside]", "B is by the river."),
]


def test_tsv_and_plain_text_outputs_pair_the_same_way(tmp_path):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    tsv = tmp_path / "out.tsv"
    # Reversed order: TSV rows are matched by MR, and "Â£" mojibake is repaired.
    tsv.write_text('MR\toutput\n"name[B], area[riverside]"\tB costs Â£20.\nname[A], eatType[pub]\tA is a pub.\n')
    txt = tmp_path / "out.txt"
    txt.write_text("A is a pub.\nB costs £20.\n")
    by_mr, by_line = load_scoring_set(refs, tsv), load_scoring_set(refs, txt)
    assert by_mr.hyps == ["B costs £20.", "A is a pub."]
    assert by_mr.refs == [["B is by the river."], ["A is a pub.", "There is a pub called A."]]
    assert by_line.hyps == ["A is a pub.", "B costs £20."]
    assert mteval.bleu(by_mr.refs, by_mr.hyps) == pytest.approx(mteval.bleu(by_line.refs, by_line.hyps))
    assert fix_mojibake("Ã© Ł") == "é £"


def test_comma_separated_outputs_with_header_are_read_like_the_official_scorer(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text('mr,output\n"name[A], eatType[pub]","A is a pub, nice."\n')
    outputs = read_outputs(path)
    assert outputs.mrs == ["name[A], eatType[pub]"] and outputs.texts == ["A is a pub, nice."]
    # Without such a header, commas are just text: one output per line.
    path.write_text("A is a pub, nice.\nB, by the river.\n")
    assert read_outputs(path).texts == ["A is a pub, nice.", "B, by the river."]


def test_plain_text_keeps_blank_lines_as_empty_outputs(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("first\n\nthird\n")
    assert read_outputs(path).texts == ["first", "", "third"]


def test_cleaned_references_group_by_orig_mr(e2e_dir, tmp_path):
    from superlora.evaluation.inputs import read_references

    groups = read_references(e2e_dir / "cleaned" / "test-fixed.csv")
    assert len(groups) == 630
    assert sum(len(refs) for _, refs in groups) == 4693


# -----------------------------------------------------------------------------
# CLI


def _cli(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "superlora", *map(str, args)], capture_output=True, text=True, env=env)


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superlora: error:"), result.stderr
    return lines[0]


def test_score_cli_rejects_wrong_output_count(tmp_path):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    (tmp_path / "out.txt").write_text("only one line\n")
    line = _one_error_line(_cli("score", refs, tmp_path / "out.txt"))
    assert "1 outputs" in line and "2 MRs" in line


def test_score_cli_rejects_unknown_mr(tmp_path):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    (tmp_path / "out.tsv").write_text("MR\toutput\nname[A], eatType[pub]\tx\nname[C]\ty\n")
    line = _one_error_line(_cli("score", refs, tmp_path / "out.tsv"))
    assert "line 3" in line and "name[C]" in line and "not in the references" in line


def test_score_cli_without_java_says_so(tmp_path):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    (tmp_path / "out.txt").write_text("A is a pub.\nB is by the river.\n")
    no_java = {"PATH": str(tmp_path)}  # python is run by absolute path; no java on this PATH
    line = _one_error_line(_cli("score", refs, tmp_path / "out.txt", env_extra=no_java))
    assert "Java" in line and "--skip-meteor" in line


# In-process from here: the CLI's start-up cost is paid once.


def test_score_skip_meteor_without_java_gives_the_other_four(tmp_path, monkeypatch, capsys):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    (tmp_path / "out.txt").write_text("A is a pub.\nB is by the river.\n")
    monkeypatch.setattr(coco, "java_executable", lambda: None)
    assert main(["score", str(refs), str(tmp_path / "out.txt"), "--skip-meteor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"]["METEOR"] is None
    assert report["metrics"]["BLEU"] == pytest.approx(1.0)
    assert report["metrics"]["ROUGE_L"] == pytest.approx(1.0)
    assert report["ptb_tokenizer"] == "python-approximation"
    assert report["ser"] == {"SER": 0.0, "missing": 0, "wrong": 0, "added": 0, "slots": 4}


def _main_error(args, capsys) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("superlora: error:")
    return err[0]


def test_score_rejects_a_tsv_without_header(tmp_path, capsys):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    (tmp_path / "out.tsv").write_text("name[A], eatType[pub]\tx\nname[B], area[riverside]\ty\n")
    assert "header" in _main_error(["score", refs, tmp_path / "out.tsv"], capsys)


def test_score_rejects_duplicate_mrs_and_missing_files(tmp_path, capsys):
    refs = _refs_csv(tmp_path / "refs.csv", ROWS)
    (tmp_path / "out.tsv").write_text("MR\toutput\nname[A], eatType[pub]\tx\nname[A], eatType[pub]\ty\n")
    assert "already given on line 2" in _main_error(["score", refs, tmp_path / "out.tsv"], capsys)
    assert "nope.csv" in _main_error(["score", tmp_path / "nope.csv", tmp_path / "out.tsv"], capsys)
    assert "missing.txt" in _main_error(["score", refs, tmp_path / "missing.txt"], capsys)
