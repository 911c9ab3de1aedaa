"""Tests for superlora.data.e2e: real-data counts and grouping, MR round-trip, error lines."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import pytest

from superlora.errors import SuperloraError
from superlora.tasks.e2e import data as e2e
from superlora.tasks.e2e.data import (
    E2EExample,
    build_prompt,
    format_mr,
    group_references,
    load_split,
    parse_mr,
    parse_mr_pairs,
    slot_values,
    tokenize_example,
    tokenize_prompt,
)

ALL_CSVS = [
    "original/trainset.csv",
    "original/devset.csv",
    "original/testset_w_refs.csv",
    "original/testset.csv",
    "cleaned/train-fixed.no-ol.csv",
    "cleaned/devel-fixed.no-ol.csv",
    "cleaned/test-fixed.csv",
]


@functools.cache
def _load(root: Path, split: str, variant: str) -> list[E2EExample]:
    return load_split(split, variant, root)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [row for row in reader if row]


# ----------------------------------------------------------------------------- real data


@pytest.mark.real
@pytest.mark.parametrize(
    ("variant", "split", "count"),
    [
        ("original", "train", 42_061),
        ("original", "validation", 4_672),
        ("original", "test", 4_693),
        ("cleaned", "train", 33_525),
        ("cleaned", "validation", 4_299),
        ("cleaned", "test", 4_693),
    ],
)
def test_row_counts(e2e_dir, variant, split, count):
    examples = _load(e2e_dir, split, variant)
    assert len(examples) == count
    if variant == "original":
        assert all(ex.orig_mr == ex.mr for ex in examples)


@pytest.mark.real
@pytest.mark.parametrize("variant", ["original", "cleaned"])
def test_test_set_has_630_reference_groups(e2e_dir, variant):
    groups = group_references(_load(e2e_dir, "test", variant))
    assert len(groups) == 630
    assert sum(len(refs) for _, refs in groups) == 4_693


@pytest.mark.real
def test_original_test_groups_follow_testset_mr_order(e2e_dir):
    header, rows = _read_rows(e2e_dir / "original" / "testset.csv")
    assert header == ["MR"]
    groups = group_references(_load(e2e_dir, "test", "original"))
    assert [mr for mr, _ in groups] == [row[0] for row in rows]


@pytest.mark.real
def test_cleaned_test_groups_by_orig_mr(e2e_dir):
    examples = _load(e2e_dir, "test", "cleaned")
    # Grouping by the cleaned MR instead would split the 630 items.
    assert len({ex.mr for ex in examples}) > 630
    mrs_per_group: dict[str, set[str]] = {}
    for ex in examples:
        mrs_per_group.setdefault(ex.orig_mr, set()).add(ex.mr)
    mixed = [key for key, mrs in mrs_per_group.items() if len(mrs) > 1]
    assert mixed, "expected some original MR whose references carry different cleaned MRs"
    groups = dict(group_references(examples))
    key = mixed[0]
    assert groups[key] == [ex.ref for ex in examples if ex.orig_mr == key]


@pytest.mark.real
def test_cleaned_and_original_test_rows_line_up(e2e_dir):
    # The Hub fallback recovers cleaned orig_mr from the original test set on this basis.
    original = _load(e2e_dir, "test", "original")
    cleaned = _load(e2e_dir, "test", "cleaned")
    assert [(ex.mr, ex.ref) for ex in original] == [(ex.orig_mr, ex.ref) for ex in cleaned]


# Cells of the cleaned `mr` column that repeat a slot, e.g. "eatType[pub], eatType[restaurant]".
REPEATED_SLOT_MRS = {
    "cleaned/train-fixed.no-ol.csv": 1443,
    "cleaned/devel-fixed.no-ol.csv": 226,
    "cleaned/test-fixed.csv": 163,
}


@pytest.mark.real
@pytest.mark.parametrize("name", ALL_CSVS)
def test_mr_round_trip_on_every_row(e2e_dir, name):
    header, rows = _read_rows(e2e_dir / name)
    mr_columns = [i for i, column in enumerate(header) if column.lower() in ("mr", "orig_mr")]
    assert mr_columns
    repeated = 0
    for row in rows:
        for i in mr_columns:
            mr = row[i]
            assert format_mr(parse_mr_pairs(mr)) == mr
            try:
                slots = parse_mr(mr)
            except ValueError as exc:
                assert "duplicate slot" in str(exc)
                assert header[i] == "mr"  # only cleaned MRs repeat slots
                repeated += 1
            else:
                assert format_mr(slots) == mr
    assert repeated == REPEATED_SLOT_MRS.get(name, 0)


@pytest.mark.real
def test_slot_values_on_original_train(e2e_dir):
    values = slot_values(_load(e2e_dir, "train", "original"))
    assert list(values) == list(e2e.SLOTS)
    assert values["eatType"] == ["coffee shop", "pub", "restaurant"]
    assert values["familyFriendly"] == ["no", "yes"]
    assert "more than £30" in values["priceRange"]
    assert "Café Adriatic" in values["near"]


@pytest.mark.real
def test_multiline_reference_is_kept_whole(e2e_dir):
    # trainset.csv has quoted references that span two physical lines.
    refs = [ex.ref for ex in _load(e2e_dir, "train", "original") if "\n" in ex.ref]
    assert len(refs) == 2
    assert refs[0].startswith("Giraffe is a coffee shop")


# ----------------------------------------------------------------------------- MR parsing


def test_parse_mr_keeps_order_and_tolerates_spaces():
    assert list(parse_mr("near[X], name[Y]")) == ["near", "name"]
    assert parse_mr(" name[ A ] ,eatType[pub] ") == {"name": "A", "eatType": "pub"}
    assert format_mr({"name": "A", "customer rating": "5 out of 5"}) == ("name[A], customer rating[5 out of 5]")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name[Foo, eatType[pub]", "unbalanced brackets"),
        ("name[Foo]]", "unbalanced brackets"),
        ("name[A], colour[red]", 'unknown slot "colour"'),
        ("", "empty MR"),
        ("   ", "empty MR"),
        ("name[A], name[B]", 'duplicate slot "name"'),
        ("name[]", "empty value"),
        ("name[A] eatType[pub]", "malformed MR"),
        ("name[A],", "malformed MR"),
    ],
)
def test_parse_mr_rejects(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_mr(text)


# ----------------------------------------------------------------------------- bad files


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


# Lines 2-3 hold one record whose quoted reference spans two lines, so the bad record
# below it starts on physical line 4 (reader row 3): line numbers must count lines.
GOOD = '"name[A], eatType[pub]","A is a pub.\r\nIt is nice."\r\n'


@pytest.mark.parametrize(
    ("variant", "text", "line", "reason"),
    [
        ("original", "mr,text\r\n" + GOOD, 1, "missing column ref"),
        ("cleaned", "mr,ref,fixed\r\n", 1, "missing column orig_mr"),
        ("original", "mr,ref\r\n" + GOOD + '"name[Foo, eatType[pub]",Foo.\r\n', 4, "unbalanced"),
        ("original", "mr,ref\r\n" + GOOD + '"name[A], colour[red]",A.\r\n', 4, "unknown slot"),
        ("original", "mr,ref\r\n" + GOOD + '"name[A]",\r\n', 4, "empty reference"),
        ("original", "mr,ref\r\n" + GOOD + '"name[A]","  "\r\n', 4, "empty reference"),
        # The bad record itself spans lines 4-5: the error names the line it starts on.
        ("original", "mr,ref\r\n" + GOOD + '"name[A]","\r\n"\r\n', 4, "empty reference"),
        ("original", "mr,ref\r\n" + GOOD + '"name[A], colour[red]","A.\r\nB."\r\n', 4, "unknown slot"),
        ("original", "mr,ref\r\n" + GOOD + '"name[A]"\r\n', 4, "expected 2 fields"),
        ("original", "mr,ref\r\n" + GOOD + "\r\n" + '"",A.\r\n', 5, "empty MR"),
        (
            "cleaned",
            "mr,ref,fixed,orig_mr\n" + '"name[A]",A.,1,"name[A"\n',
            2,
            "unbalanced brackets",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, variant, text, line, reason):
    name = e2e.SPLIT_FILES[variant]["train"]
    path = _write(tmp_path, name, text)
    with pytest.raises(SuperloraError) as info:
        load_split("train", variant, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} line {line}: ")
    assert reason in message


def test_good_multiline_file_loads(tmp_path):
    _write(tmp_path, "original/trainset.csv", "mr,ref\r\n" + GOOD + GOOD)
    examples = load_split("train", "original", tmp_path)
    assert examples == [E2EExample("name[A], eatType[pub]", "A is a pub.\r\nIt is nice.", "name[A], eatType[pub]")] * 2


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(SuperloraError, match="folder not found: .*nowhere"):
        load_split("train", "original", tmp_path / "nowhere")
    with pytest.raises(SuperloraError, match=r"file not found: .*devel-fixed\.no-ol\.csv"):
        load_split("validation", "cleaned", tmp_path)


def test_env_var_is_used_when_no_source(tmp_path, monkeypatch):
    _write(tmp_path, "original/devset.csv", 'mr,ref\n"name[A]",A.\n')
    monkeypatch.setenv("SUPERLORA_E2E_DIR", str(tmp_path))
    assert load_split("validation", "original") == [E2EExample("name[A]", "A.", "name[A]")]
    monkeypatch.setenv("SUPERLORA_E2E_DIR", str(tmp_path / "gone"))
    with pytest.raises(SuperloraError, match="SUPERLORA_E2E_DIR"):
        load_split("validation", "original")


def test_bad_split_and_variant():
    with pytest.raises(SuperloraError, match="unknown E2E split"):
        load_split("dev", "original", ".")
    with pytest.raises(SuperloraError, match="unknown E2E variant"):
        load_split("train", "fixed", ".")


# ----------------------------------------------------------------------------- Hub fallback


def test_unreachable_hub_says_how_to_use_local_data(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'tuetschek/e2e_nlg' on the Hub\n(offline)")

    monkeypatch.delenv("SUPERLORA_E2E_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SuperloraError) as info:
        load_split("test")
    message = str(info.value)
    assert "\n" not in message
    assert "SUPERLORA_E2E_DIR" in message and "--data" in message


def test_hub_rows_become_examples(monkeypatch):
    import datasets

    refs = ["A is a pub.", "A, a pub.", "B is cheap."]
    hub = {  # repo -> (MRs, references)
        "tuetschek/e2e_nlg": (["name[A], eatType[pub]"] * 2 + ["name[B], priceRange[cheap]"], refs),
        "tuetschek/e2e_nlg_cleaned": (["name[A], eatType[pub]", "name[A]", "name[B]"], list(refs)),
    }
    calls = []

    def fake(repo, split, revision=None):
        calls.append((repo, split))
        mrs, references = hub[repo]
        return datasets.Dataset.from_dict({"meaning_representation": mrs, "human_reference": references})

    monkeypatch.delenv("SUPERLORA_E2E_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    original = load_split("test", "original")
    assert calls == [("tuetschek/e2e_nlg", "test")]
    assert [ex.orig_mr for ex in original] == [ex.mr for ex in original]
    cleaned = load_split("test", "cleaned")
    assert [ex.mr for ex in cleaned] == hub["tuetschek/e2e_nlg_cleaned"][0]
    assert [ex.orig_mr for ex in cleaned] == hub["tuetschek/e2e_nlg"][0]
    assert [ex.ref for ex in cleaned] == refs
    assert len(group_references(cleaned)) == 2

    refs[1] = "Something else."  # the original test set no longer lines up with the cleaned one
    with pytest.raises(SuperloraError, match="do not line up"):
        load_split("test", "cleaned")


# ----------------------------------------------------------------------------- tokenization


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [build_prompt("name[The Vaults], eatType[pub]"), "The Vaults is a pub near you."]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]")


def test_tokenize_example_masks_prompt_and_ends_with_eos(tokenizer):
    mr, ref = "name[The Vaults], eatType[pub]", "The Vaults is a pub."
    out = tokenize_example(tokenizer, mr, ref)
    prompt = tokenize_prompt(tokenizer, mr)
    ids, labels = out["input_ids"], out["labels"]
    n = len(prompt)
    assert 0 < n < len(ids) == len(labels) == len(out["attention_mask"])
    assert ids[:n] == prompt
    assert labels[:n] == [-100] * n
    assert labels[n:] == ids[n:]
    assert -100 not in labels[n:]
    assert labels[-1] == ids[-1] == tokenizer.eos_token_id
    assert out["attention_mask"] == [1] * len(ids)
    assert tokenizer.decode(ids[n:-1]) == "The Vaults is a pub ."
    assert tokenizer.unk_token_id not in ids


def test_tokenize_example_truncates_the_target_end(tokenizer):
    mr, ref = "name[The Vaults], eatType[pub]", "The Vaults is a pub near you."
    n = len(tokenize_prompt(tokenizer, mr))
    full = tokenize_example(tokenizer, mr, ref)
    short = tokenize_example(tokenizer, mr, ref, max_length=n + 3)
    assert len(short["input_ids"]) == n + 3
    assert short["input_ids"] == full["input_ids"][: n + 3]
    assert short["labels"][:n] == [-100] * n
    assert short["labels"][-1] != tokenizer.eos_token_id
    with pytest.raises(SuperloraError, match="max_length"):
        tokenize_example(tokenizer, mr, ref, max_length=n)


def test_cli_data_check_malformed_row_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "trainset.csv").write_text(
        'mr,ref\n"name[A], eatType[pub]",fine\n"name[B], eatType[pub",broken\n', encoding="utf-8"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "superlora",
            "data",
            "check",
            "--data",
            str(tmp_path),
            "--variant",
            "original",
            "--split",
            "train",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "trainset.csv line 3: unbalanced brackets" in errors[0]


@pytest.mark.real
def test_cli_data_check_counts_real_data(e2e_dir):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "superlora", "data", "check", "--data", str(e2e_dir), "--split", "test"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(r[0], r[2], r[4]) for r in rows] == [("original", "4,693", "630"), ("cleaned", "4,693", "630")]
