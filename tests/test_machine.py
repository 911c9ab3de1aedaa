"""``auto`` speed choices: bf16 only where it measured faster, threads only on free cores, both said and recorded."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch

from superlora import machine
from superlora.machine import MatmulRate

SHAPES = [(480, 576, 576), (480, 576, 1536), (480, 1536, 576)]
# (fp32, bf16) GFLOP/s measured on the CPUs seen so far (1 thread, SmolLM2's shapes, see PLATFORM-NOTES)
MEASURED = {
    "AMD EPYC Zen 3, AVX2 only (bf16 emulated)": (85.0, 0.5),
    "Intel Xeon, AVX512-BF16 + AMX": (156.0, 995.0),
    "AMD EPYC Zen 4, AVX512-BF16, no AMX": (89.2, 198.4),
    "a CPU where bf16 barely wins": (100.0, 110.0),
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERLORA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / machine.CACHE_FILE


def inject(monkeypatch, fp32: float, bf16: float) -> list[torch.dtype]:
    """Replace the timed matmuls by fixed rates; returns the list of dtypes the probe asked for."""
    asked: list[torch.dtype] = []

    def fake(dtype, shapes, threads, budget_s):
        asked.append(dtype)
        return MatmulRate(fp32 if dtype == torch.float32 else bf16, 0.01)

    monkeypatch.setattr(machine, "matmul_rate", fake)
    return asked


@pytest.mark.parametrize("cpu", list(MEASURED))
def test_bf16_auto_follows_the_measurement_of_each_cpu_kind(cpu, cache, monkeypatch):
    fp32, bf16 = MEASURED[cpu]
    inject(monkeypatch, fp32, bf16)
    choice = machine.choose_bf16("auto", SHAPES, threads=1)
    assert choice.enabled is (bf16 >= machine.BF16_MARGIN * fp32)
    assert choice.enabled is {"AMD EPYC Zen 3": False, "Intel Xeon": True, "AMD EPYC Zen 4": True}.get(
        cpu.split(",")[0], False
    )
    assert choice.source == "probe" and (choice.fp32_gflops, choice.bf16_gflops) == (fp32, bf16)
    assert choice.reason.startswith(f"bf16 {'on' if choice.enabled else 'off'} (auto: bf16 matmul ")
    assert f"{bf16:,.1f} GFLOP/s vs fp32 {fp32:,.1f}" in choice.reason


def test_bf16_auto_never_chooses_a_dtype_the_probe_measured_slower(cache, monkeypatch):
    rng = random.Random(0)
    for _ in range(200):
        fp32, bf16 = rng.uniform(0.1, 1000), rng.uniform(0.1, 1000)
        inject(monkeypatch, fp32, bf16)
        choice = machine.choose_bf16("auto", SHAPES, threads=1, use_cache=False)
        assert not choice.enabled or bf16 > fp32
        assert choice.enabled or bf16 < machine.BF16_MARGIN * fp32


def test_bf16_true_or_false_is_used_as_given_without_a_probe(cache, monkeypatch):
    asked = inject(monkeypatch, 85.0, 0.5)
    assert machine.choose_bf16(True, SHAPES, 1).enabled is True
    assert machine.choose_bf16(False, SHAPES, 1).enabled is False
    assert asked == [] and not cache.exists()


def test_probe_is_cached_per_cpu_isa_limits_torch_and_threads(cache, monkeypatch):
    for name in machine.ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    asked = inject(monkeypatch, 100.0, 600.0)
    first = machine.choose_bf16("auto", SHAPES, threads=1)
    assert first.source == "probe" and len(asked) == 2
    again = machine.choose_bf16("auto", SHAPES, threads=1)
    assert again.source == "cache" and again.enabled and len(asked) == 2 and "cached" in again.reason
    (key,) = json.loads(cache.read_text())
    assert torch.__version__ in key and machine.cpu_info().model in key

    machine.choose_bf16("auto", SHAPES, threads=2)  # another thread count: measured again
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the math libraries limited: what is fast changes
    assert machine.choose_bf16("auto", SHAPES, threads=1).source == "probe"
    assert len(asked) == 6 and len(json.loads(cache.read_text())) == 3


def test_an_unwritable_cache_only_costs_a_probe(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SUPERLORA_CACHE", str(blocker / "cache"))
    inject(monkeypatch, 100.0, 50.0)
    assert machine.choose_bf16("auto", SHAPES, threads=1).enabled is False


def test_matmul_probe_is_capped_when_a_dtype_is_too_slow_to_time():
    """A matmul set that would take seconds at full size is timed on fewer rows, within about the budget."""
    huge = [(200_000, 1024, 1024)]  # 430 GFLOP: seconds on any CPU
    started = time.perf_counter()
    rate = machine.matmul_rate(torch.float32, huge, threads=1, budget_s=0.1)
    assert time.perf_counter() - started < 2.0
    assert rate.capped and rate.gflops > 1


def test_probe_turns_bf16_off_where_the_math_libraries_lack_bf16(tmp_path):
    """With the math libraries limited to AVX2 (as on an AVX2-only CPU), bf16 is emulated and the probe says off."""
    limits = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    env = {**os.environ, **limits, "SUPERLORA_CACHE": str(tmp_path)}
    code = (
        "import json, torch; from superlora import machine; "
        "c = machine.choose_bf16('auto', [(256, 576, 1536)], 1); "
        "print(json.dumps([c.enabled, c.fp32_gflops, c.bf16_gflops, c.reason]))"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    enabled, fp32, bf16, reason = json.loads(done.stdout.strip().splitlines()[-1])
    assert time.perf_counter() - started < 60
    assert bf16 < fp32 / 5, reason  # emulated: far slower (0.5-3 against 80-100 GFLOP/s on the CPUs seen)
    assert enabled is False and reason.startswith("bf16 off (auto:")


@pytest.mark.parametrize(
    ("cores", "busy", "processes", "expected"),
    [(2, 0.0, 1, 2), (2, 1.0, 1, 1), (2, 0.4, 1, 2), (2, 0.6, 1, 1), (2, 2.0, 1, 1), (2, 0.0, 2, 1), (16, 3.0, 2, 6)],
)
def test_threads_are_the_free_cores_shared_by_the_processes(cores, busy, processes, expected):
    assert machine.threads_for(cores, busy, processes) == expected


def test_threads_auto_honours_omp_and_torchrun(monkeypatch):
    monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
    monkeypatch.setattr(machine, "busy_elsewhere", lambda window_s=0.2: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert machine.choose_threads("auto").threads == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun --nproc_per_node 2: never 2 x 2 threads on 2 cores
    choice = machine.choose_threads("auto")
    assert choice.threads == 1 and "2 process(es)" in choice.reason
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert machine.choose_threads("auto") == machine.ThreadChoice(1, "auto: OMP_NUM_THREADS is set")
    assert machine.choose_threads(3).threads == 3


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_core_kept_busy_by_another_process_is_seen_and_left_to_it():
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        time.sleep(0.3)
        busy = machine.busy_elsewhere(window_s=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.6 < busy <= len(os.sched_getaffinity(0)) + 0.1
    assert machine.threads_for(len(os.sched_getaffinity(0)), busy, 1) == len(os.sched_getaffinity(0)) - 1


def test_cpu_info_names_the_flags_that_decide_matmul_speed():
    info = machine.cpu_info()
    assert info.model and info.capability
    assert set(info.flags) <= set(machine.CPU_FLAGS)
    assert info.capability in info.label()
