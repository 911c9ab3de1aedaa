"""What this machine can do, measured rather than assumed: the CPU, the cores this process may use, and
whether bf16 matmuls are faster than fp32 ones here.

Two CPUs with the same instruction-set names can differ 300x in bf16 speed (AMX multiplies bf16 ~6x faster
than fp32; an AVX2-only CPU emulates bf16 ~170x slower), and a core another job is using is not a core to
give a thread to. So ``speed.bf16: auto`` and ``speed.threads: auto`` are decided by:

- ``choose_threads``: the CPUs in this process's affinity mask and cgroup quota, minus the cores that other
  processes kept busy over a short sample of ``/proc/stat``, divided among the processes of a torchrun job;
- ``choose_bf16``: a probe timing fp32 and bf16 matmuls at the model's own shapes and thread count (well under a
  second, and capped so an emulated dtype cannot stall it); bf16 only when it measured at least
  ``BF16_MARGIN`` times faster. Results are cached per CPU, instruction-set limits and torch version.

Every choice carries a one-line reason with the numbers, which the run prints and records in ``run.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")  # change what is fast
BF16_MARGIN = 1.25  # bf16 autocast adds casts around every matmul: its matmuls must win by more than a hair
PROBE_BUDGET_S = 0.15  # per dtype; a dtype whose first tiny matmul says it cannot finish in time is cut short
CACHE_FILE = "machine-probe.json"

Auto = Literal["auto"]


# -----------------------------------------------------------------------------
# The CPU


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's name, the instruction-set flags that decide matmul speed, and torch's kernel level."""

    model: str
    flags: tuple[str, ...]
    capability: str  # torch's dispatch level: AVX512, AVX2, ... (lowered by ATEN_CPU_CAPABILITY)
    isa_limits: tuple[str, ...]  # ISA_LIMITS variables set in the environment, as NAME=value

    def label(self) -> str:
        limits = f"; limited by {' '.join(self.isa_limits)}" if self.isa_limits else ""
        return f"{self.model} [{' '.join(self.flags) or 'no avx2'}] (torch kernels: {self.capability}{limits})"


def cpu_info() -> CpuInfo:
    import torch

    model, flags = platform.processor() or "unknown CPU", ()
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        if name := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            model = name.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE):
            present = set(found.group(1).split())
            flags = tuple(f for f in CPU_FLAGS if f in present)
    capability = torch.backends.cpu.get_cpu_capability()
    limits = tuple(f"{name}={os.environ[name]}" for name in ISA_LIMITS if os.environ.get(name))
    return CpuInfo(model, flags, capability, limits)


# -----------------------------------------------------------------------------
# Threads


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota when there is one."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    return count


def _cpu_jiffies(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def _own_jiffies() -> int:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of every thread of this process


def busy_elsewhere(window_s: float = 0.2) -> float:
    """Cores' worth of CPU time that other processes used on our CPUs over ``window_s`` (0 if unknown)."""
    try:
        cpus = os.sched_getaffinity(0)
        busy0, total0, own0 = *_cpu_jiffies(cpus), _own_jiffies()
        time.sleep(window_s)
        busy1, total1, own1 = *_cpu_jiffies(cpus), _own_jiffies()
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    if total1 <= total0:
        return 0.0
    others = max(0, (busy1 - busy0) - (own1 - own0))
    return len(cpus) * others / (total1 - total0)


def threads_for(cores: int, busy: float, processes: int) -> int:
    """Threads per process: the cores nobody else keeps busy (a core counts as busy from half a core's load
    up), shared by the processes of this job, at least one each. Never more threads than free cores."""
    free = cores - int(busy + 0.5)
    return max(1, free // max(1, processes))


def local_processes() -> int:
    """Processes of this job on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or 1)


def choose_threads(setting: int | Auto | None) -> ThreadChoice:
    """``speed.threads``: a number is used as given, None keeps torch's default, ``auto`` measures."""
    import torch

    if isinstance(setting, int):
        return ThreadChoice(setting, "set in the recipe")
    if setting is None:
        return ThreadChoice(torch.get_num_threads(), "torch's default")
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return ThreadChoice(int(os.environ["OMP_NUM_THREADS"]), "auto: OMP_NUM_THREADS is set")
    cores, busy, processes = usable_cpus(), busy_elsewhere(), local_processes()
    threads = threads_for(cores, busy, processes)
    reason = f"auto: {cores} usable core(s), {busy:.1f} busy with other work"
    reason += f", {processes} process(es) on this machine" if processes > 1 else ""
    return ThreadChoice(threads, reason)


# -----------------------------------------------------------------------------
# bf16 or fp32


@dataclass(frozen=True)
class MatmulRate:
    """GFLOP/s of a dtype over a set of matmul shapes; ``capped`` when too slow to time at full size."""

    gflops: float
    seconds: float
    capped: bool = False


def matmul_rate(dtype: Any, shapes: list[tuple[int, int, int]], threads: int, budget_s: float) -> MatmulRate:
    """Time ``shapes`` (m, k, n) matmuls in ``dtype`` on ``threads`` threads for about ``budget_s``.

    A first matmul of 16 rows estimates the rate; when the full set would take longer than the budget (an
    emulated dtype: ~0.5 GFLOP/s), the rows are cut so that one pass fits, and the result says so.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        _, k, n = shapes[0]
        a, b = torch.randn(16, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # first call: kernel selection, page faults
        t0 = time.perf_counter()
        a @ b
        estimate = 2 * 16 * k * n / max(time.perf_counter() - t0, 1e-7)
        flops = sum(2 * m * k * n for m, k, n in shapes)
        scale = min(1.0, budget_s * estimate / 2 / flops)
        rows = [max(1, int(m * scale)) for m, _, _ in shapes]
        pairs = [
            (torch.randn(r, k, dtype=dtype), torch.randn(k, n, dtype=dtype))
            for r, (_, k, n) in zip(rows, shapes, strict=True)
        ]
        for x, w in pairs:  # warm-up at the real shapes
            x @ w
        done, spent, passes = 0.0, 0.0, 0
        while spent < budget_s / 2 or passes < 2:
            t0 = time.perf_counter()
            for x, w in pairs:
                x @ w
            spent += time.perf_counter() - t0
            done += sum(2 * x.shape[0] * x.shape[1] * w.shape[1] for x, w in pairs)
            passes += 1
            if scale < 1.0:
                break
        return MatmulRate(done / spent / 1e9, round(time.perf_counter() - started, 4), capped=scale < 1.0)
    finally:
        torch.set_num_threads(before)


@dataclass
class Bf16Choice:
    """Whether to train in bf16, how that was decided, and the measurements behind it."""

    enabled: bool
    reason: str
    source: Literal["recipe", "probe", "cache", "cuda"]
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None
    shapes: list[list[int]] = field(default_factory=list)
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bf16_pays(fp32_gflops: float, bf16_gflops: float, margin: float = BF16_MARGIN) -> bool:
    """The decision itself: bf16 only when its matmuls measured ``margin`` times faster than fp32's."""
    return bf16_gflops >= margin * fp32_gflops


def describe(enabled: bool, fp32_gflops: float, bf16_gflops: float, where: str) -> str:
    verdict = "on" if enabled else "off"
    return (
        f"bf16 {verdict} (auto: bf16 matmul {bf16_gflops:,.1f} GFLOP/s vs fp32 {fp32_gflops:,.1f} {where}; "
        f"bf16 needs {BF16_MARGIN:g}x)"
    )


def model_shapes(model: Any, blocks_path: str, rows: int) -> list[tuple[int, int, int]]:
    """(rows, in, out) of every distinct Linear/Conv1D weight of the model's first block (adapters left out)."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    block = next(iter(model.get_submodule(blocks_path)))
    shapes = []
    for name, module in block.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, nn.Linear):
            shape = (rows, module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shape = (rows, *module.weight.shape)  # stored [in, out]
        else:
            continue
        if shape not in shapes:
            shapes.append(shape)
    return shapes or [(rows, 1024, 1024)]


def _cache_path() -> Path:
    from superlora.models.aliases import cache_root

    return cache_root() / CACHE_FILE


def _cache_key(cpu: CpuInfo, shapes: list[tuple[int, int, int]], threads: int) -> str:
    import torch

    limits = ",".join(cpu.isa_limits) or "-"
    return f"{cpu.model}|{' '.join(cpu.flags)}|{cpu.capability}|{limits}|torch {torch.__version__}|{threads}|{shapes}"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, value: dict[str, Any]) -> None:
    """Add one entry (atomic replace; a cache that cannot be written is only a slower next run)."""
    path = _cache_path()
    data = _read_cache() | {key: value}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)


def choose_bf16(
    setting: bool | Auto,
    shapes: list[tuple[int, int, int]],
    threads: int,
    device: str = "cpu",
    use_cache: bool = True,
) -> Bf16Choice:
    """``speed.bf16``: true/false as given; ``auto`` from the device (CUDA) or the measured, cached probe."""
    import torch

    if isinstance(setting, bool):
        return Bf16Choice(setting, f"bf16 {'on' if setting else 'off'} (set in the recipe)", "recipe")
    if device == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name()
        reason = f"bf16 {'on' if ok else 'off'} (auto: {name} {'supports' if ok else 'lacks'} bf16)"
        return Bf16Choice(ok, reason, "cuda")
    cpu = cpu_info()
    key = _cache_key(cpu, shapes, threads)
    cached = _read_cache().get(key) if use_cache else None
    if cached and {"fp32_gflops", "bf16_gflops"} <= set(cached):
        fp32, bf16, source, where = cached["fp32_gflops"], cached["bf16_gflops"], "cache", "on this CPU, cached"
    else:
        fp32 = matmul_rate(torch.float32, shapes, threads, PROBE_BUDGET_S).gflops
        bf16 = matmul_rate(torch.bfloat16, shapes, threads, PROBE_BUDGET_S).gflops
        source, where = "probe", "on this CPU"
        _write_cache(key, {"fp32_gflops": fp32, "bf16_gflops": bf16, "cpu": cpu.label(), "at": time.time()})
    enabled = bf16_pays(fp32, bf16)
    shape_list = [list(s) for s in shapes]
    return Bf16Choice(enabled, describe(enabled, fp32, bf16, where), source, fp32, bf16, shape_list, threads)
