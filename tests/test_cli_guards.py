"""The command line: overrides after flags on every verb, one-line errors for bad flags and bad rows, and an
evaluate that fails leaves no folder behind."""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest

from superlora.cli import build_parser, main


def test_key_value_overrides_may_follow_flags_on_every_verb_that_takes_them():
    from superlora.cli import parse

    parser = build_parser()
    args = parse(parser, ["identify", "prompts=hello", "--no-plots", "--out", "x", "max_count=1"])
    assert args.items == ["prompts=hello", "max_count=1"] and args.out == "x" and args.no_plots
    args = parse(parser, ["evaluate", "--adapter", "runs/a", "limit=3", "--quiet", "decode.num_beams=2"])
    assert args.items == ["limit=3", "decode.num_beams=2"] and args.adapter == "runs/a"
    args = parse(parser, ["train", "configs/e2e-lora.yaml", "--resume", "optim.max_steps=5"])
    assert args.items == ["configs/e2e-lora.yaml", "optim.max_steps=5"] and args.resume


def test_identify_overrides_after_flags_reach_the_config(monkeypatch):
    """The issue's own command line, up to the point where identify would load the model."""
    import superlora.identify.cli as identify_cli

    seen = {}

    def stop(cfg):
        seen["cfg"] = cfg
        return 0

    monkeypatch.setattr(identify_cli, "_identify", stop)
    assert main(["identify", "prompts=hello", "--no-plots", "--out", "x", "max_count=1"]) == 0
    cfg = seen["cfg"]
    assert cfg.prompts == ["hello"] and cfg.max_count == 1 and cfg.out == "x" and cfg.plots is False


def test_an_unknown_flag_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["identify", "--no-such-flag", "max_count=1"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_a_verb_without_overrides_refuses_a_stray_key_value(capsys):
    with pytest.raises(SystemExit):
        main(["merge", "runs/x", "lora.r=4"])
    assert "unrecognized arguments: lora.r=4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--beams", "-3"], "decode.num_beams must be >= 1, got -3"),
        (["--batch-size", "0"], "decode.batch_size must be >= 1, got 0"),
    ],
)
def test_evaluate_beams_and_batch_size_flags_are_checked_in_one_line(capsys, tmp_path, flags, message):
    assert main(["evaluate", *flags, "--skip-meteor", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"superlora: error: overrides: {message}"]
    assert not (tmp_path / "e").exists()


def test_a_failing_evaluate_leaves_no_output_folder(tiny_model_dir, e2e_dir, tmp_path, capsys, monkeypatch):
    """A disk that fills while the outputs are written: one line, and no half-written folder."""
    from superlora.tasks.e2e.task import E2ETask

    real = E2ETask.write_outputs

    def fill_disk(self, out, items, outputs, report):
        real(self, out, items, outputs, report)  # some files are written...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(E2ETask, "write_outputs", fill_disk)
    out = tmp_path / "eval"
    argv = ["evaluate", f"model={tiny_model_dir('llama')}", f"task.source={e2e_dir}", "limit=2"]
    argv += ["decode.num_beams=1", "decode.max_new_tokens=3", f"out={out}", "--skip-meteor", "--quiet"]
    with pytest.raises(OSError):
        main(argv)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".eval")]


def test_evaluate_refuses_an_out_folder_that_is_not_an_earlier_report(tmp_path, capsys):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    assert main(["evaluate", "--skip-meteor", "--out", str(mine), "limit=1"]) == 2
    assert "is not an earlier evaluate report" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "keep me"


def test_a_huge_malformed_mr_is_quoted_short_and_named_by_file_and_line(tmp_path, capsys):
    """A 100,000-character MR: the error names the row and quotes 80 characters, not 100 KB."""
    folder = tmp_path / "e2e" / "cleaned"
    folder.mkdir(parents=True)
    with open(folder / "train-fixed.no-ol.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["mr", "ref", "fixed", "orig_mr"])
        writer.writerow(["name[A]", "A is a pub.", 0, "name[A]"])
        huge = "name[" + "x" * 100_000
        writer.writerow([huge, "ref", 0, huge])
    assert main(["data", "check", f"task.source={tmp_path / 'e2e'}", "--variant", "cleaned", "--split", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err) < 400 and "train-fixed.no-ol.csv line 3" in err and "(100,005 characters)" in err


def test_scores_json_is_written_whole(tiny_model_dir, e2e_dir, tmp_path):
    """The report folder appears in one rename, with every file."""
    out = tmp_path / "eval"
    argv = ["evaluate", f"model={tiny_model_dir('llama')}", f"task.source={e2e_dir}", "limit=2"]
    argv += ["decode.num_beams=1", "decode.max_new_tokens=3", f"out={out}", "--skip-meteor", "--quiet"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"scores.json", "summary.md", "outputs.tsv"}
    assert json.loads((out / "scores.json").read_text())["count"] == 2
    assert main(argv) == 0  # an earlier report is replaced
    assert Path(out / "summary.md").is_file()
