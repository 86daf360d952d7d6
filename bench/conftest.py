"""Shared pieces of the benchmark suites.

- `kernel_results` for the Triton kernel benchmarks: one table per run (time, GB/s or TFLOP/s, fractions
  of the device's peak and of its measured copy bandwidth, peak memory, speedups over eager and compile);
- SmolLM2 in havoc and in transformers on the same weights (`engines`), sample text, peak memory;
- `record(group, impl, ops_per_round, benchmark)` for C++-vs-Python suites: the terminal summary prints,
  per group, the median time per operation of each implementation and their ratio;
- machine info (CPU model, torch, threads, commit) in every JSON report.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import platform
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# `python -m pytest bench` from the repository root: benchmark the installed package, not the source tree
# (see tests/conftest.py).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]
# The same holds for the children tests start (`python -m havoc.cli serve`, `python -m havoc ...`) with the
# repository root as working directory: PYTHONSAFEPATH (3.11+) keeps it off their sys.path.
os.environ["PYTHONSAFEPATH"] = "1"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="session")
def smollm2():
    """(havoc model in fp32, tokenizer), pulled on first use."""
    from havoc import hub

    return hub.load("smollm2")


@pytest.fixture(scope="session")
def engines(smollm2):
    """get(engine, dtype) -> model; 'havoc' or 'transformers', built once per session."""
    made: dict[tuple[str, str], torch.nn.Module] = {}

    def get(engine: str, dtype: str) -> torch.nn.Module:
        key = (engine, dtype)
        if key not in made:
            if engine == "havoc":
                made[key] = copy.deepcopy(smollm2[0]).to(DTYPES[dtype]).eval()
            elif engine == "transformers":
                pytest.importorskip("transformers")
                from havoc.io.hf import to_transformers

                made[key] = to_transformers(get("havoc", dtype))
            else:
                raise ValueError(engine)
        return made[key]

    return get


@pytest.fixture(scope="session")
def memory_read_gb_s() -> float:
    """This machine's memory read bandwidth now: the best of 5 sums over a 512 MiB fp32 tensor (GB/s), on
    transparent huge pages where the OS collapses them, as the CPU decoder puts its weights (on 4 KiB pages
    the same sum read 18.6 GB/s against 26.6 on the AMX Xeon of RESULTS.md: the TLB, not the memory)."""
    import time

    from havoc import _C

    x = torch.ones(128 * 1024 * 1024)
    _C.collapse_hugepages(x.numpy())
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


@pytest.fixture(scope="session")
def llamacpp(smollm2, tmp_path_factory):
    """get(dtype, batch) -> bench.llamacpp.LlamaCppDecoder on SmolLM2's weights as F32/BF16/Q8_0 GGUF (one
    per dtype: "float32", "bfloat16", "int8"; sized for batch 32), on whichever llama.cpp binding loads (`llama_cpp` of llama-cpp-python,
    else `llama_cpp_py_sync`); skips when none does."""
    import importlib.util

    from havoc import hub

    # --import-mode=importlib (pyproject) puts no test folder on sys.path: load bench/llamacpp.py by path
    spec = importlib.util.spec_from_file_location("havoc_bench_llamacpp", Path(__file__).with_name("llamacpp.py"))
    llamacpp_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(llamacpp_mod)
    LlamaCppDecoder, export_gguf = llamacpp_mod.LlamaCppDecoder, llamacpp_mod.export_gguf
    try:
        llamacpp_mod.load_llama()
    except ImportError as e:
        pytest.skip(str(e))

    made: dict[tuple[str, int], LlamaCppDecoder] = {}

    def get(dtype: str, batch: int, context: int = 256) -> LlamaCppDecoder:
        """A decoder for up to 32 sequences of `context` tokens (one of 1024 for a 512-token prefill)."""
        seqs = 32 if context <= 256 else 1
        if (dtype, seqs) not in made:
            name = {"float32": "F32", "bfloat16": "BF16", "int8": "Q8_0"}[dtype]
            path = export_gguf(hub.pull("smollm2"), tmp_path_factory.getbasetemp() / f"smollm2-{name}.gguf", name)
            # each sequence gets its own n_ctx / n_seq_max KV cells, which llama.cpp pads to 256. Q8_0 runs
            # without llama.cpp's extra buffer types where its AMX Q8_0 product crashes (LlamaCppDecoder).
            from havoc import _C

            amx = "amx_int8" in _C.cpu_features()
            made[dtype, seqs] = LlamaCppDecoder(
                path, max_batch=seqs, n_ctx=seqs * max(256, context), threads=torch.get_num_threads(),
                extra_bufts=not (name == "Q8_0" and amx),
            )
        assert batch <= seqs
        return made[dtype, seqs]

    yield get
    for d in made.values():
        d.close()


@pytest.fixture(scope="session")
def sample_text() -> str:
    # Real text with code, digits and prose, long enough for a 512-token prompt.
    para = (
        "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon; the crew "
        "returned on July 24. def mean(xs): return sum(xs) / len(xs)  # average of 3, 5 and 8 is 5.333. "
        "Statistical process control charts track a process over time and flag points outside the limits. "
    )
    return para * 40


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_model"] = cpu_name()
    machine_info["havoc_commit"] = os.environ.get("HAVOC_COMMIT", "")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Peak resident memory of a piece of work, in-process (Linux): the kernel's high-water mark (VmHWM) is
# reset through /proc/self/clear_refs, the work runs, and the peak above the resident set before it is
# the memory the work itself needed (KV cache, activations, logits), weights excluded.
try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _libc = None


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_extra_mb(work: Callable[[], object]) -> float | None:
    """Peak RSS during `work()` minus RSS before it, in MiB (None where the OS cannot say)."""
    gc.collect()
    if _libc is not None:  # hand freed heap pages back, or earlier runs' garbage hides this run's peak
        _libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kb("VmRSS")
    work()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024


@pytest.fixture(scope="session")
def peak_extra_mb():
    return _peak_extra_mb


_results: dict[str, dict[str, float]] = defaultdict(dict)


@pytest.fixture
def record():
    """Return a function that files a finished benchmark's median seconds per operation."""

    def _record(group: str, impl: str, ops_per_round: int, benchmark, baseline_times: list[float] | None = None) -> None:
        """`baseline_times`: per-round seconds of the Python baseline timed alongside this benchmark's
        rounds (alternating), filed in the same benchmark's extra_info as impl "py"."""
        if benchmark.stats is None:  # --benchmark-disable
            return
        median = benchmark.stats.stats.median / ops_per_round
        benchmark.extra_info.update(kind="cpp_vs_baseline", group=group, impl=impl, ops_per_round=ops_per_round,
                                    median_per_op_s=median)
        _results[group][impl] = median
        if baseline_times:
            base = statistics.median(baseline_times) / ops_per_round
            benchmark.extra_info.update(baseline_median_per_op_s=base, baseline_rounds=len(baseline_times))
            _results[group]["py"] = base

    return _record


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:10.2f}us"


_kernel_rows: list[dict] = []


@pytest.fixture(scope="session")
def kernel_results() -> list[dict]:
    """Rows of the Triton kernel benchmarks (bench/test_kernels.py), printed as one table at the end."""
    return _kernel_rows


def _kernel_summary(tr) -> None:
    device = _kernel_rows[0]["device"]
    tr.section(f"Triton kernels vs baselines, median per call — {device}")
    tr.write_line(
        f"{'benchmark':64} {'provider':16} {'ms':>9} {'GB/s':>8} {'TFLOP/s':>8} {'% peak':>7} {'% copy':>7} "
        f"{'MiB':>7} {'x eager':>8} {'x compile':>9}"
    )
    by_group: dict[str, list[dict]] = defaultdict(list)
    for row in _kernel_rows:
        by_group[row["group"]].append(row)

    def num(row, key, spec, scale=1.0):
        return format(row[key] * scale, spec) if row.get(key) is not None else "-"

    for group, rows in by_group.items():
        ms = {row["provider"]: row.get("ms") for row in rows}

        def speedup(row, baseline):  # how many times faster than the baseline provider of the same group
            return f"{ms[baseline] / row['ms']:.2f}" if ms.get(baseline) and row.get("ms") else "-"

        for row in rows:
            peak = row.get("frac_peak_bw", row.get("frac_peak_flops"))
            tr.write_line(
                f"{group:64} {row['provider']:16} {num(row, 'ms', '9.3f'):>9} {num(row, 'gb_s', '8.0f'):>8} "
                f"{num(row, 'tflop_s', '8.1f'):>8} {format(peak * 100, '6.1f') if peak is not None else '-':>7} "
                f"{num(row, 'frac_copy_bw', '6.1f', 100):>7} {num(row, 'peak_mib', '7.0f'):>7} "
                f"{speedup(row, 'eager'):>8} {speedup(row, 'compile'):>9}"
            )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _kernel_rows:
        _kernel_summary(terminalreporter)
    if not _results:
        return
    tr = terminalreporter
    # The baseline ("py") is the pure-Python block manager, or torch's own ops for the paged kernels.
    tr.section(f"C++ vs the Python/torch baseline, median per operation — {cpu_name()}")
    tr.write_line(f"{'operation':40} {'C++':>12} {'baseline':>12} {'C++ ops/s':>12} {'ratio':>8}")
    for group, by_impl in sorted(_results.items()):
        cpp, py = by_impl.get("cpp"), by_impl.get("py")
        ratio = f"{py / cpp:7.1f}x" if cpp and py else "-"
        ops = f"{1 / cpp:12,.0f}" if cpp else "-"
        tr.write_line(f"{group:40} {_us(cpp):>12} {_us(py):>12} {ops:>12} {ratio:>8}")
