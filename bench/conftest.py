"""Shared pieces of the benchmark suites: the device line and a C++-vs-Python summary table.

Each benchmark calls `record(group, impl, ops_per_round, benchmark)` after it ran; the terminal summary
then prints, per group, the median time per operation of each implementation and their ratio.
"""

from __future__ import annotations

import platform
from collections import defaultdict

import pytest

_results: dict[str, dict[str, float]] = defaultdict(dict)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@pytest.fixture
def record():
    """Return a function that files a finished benchmark's median seconds per operation."""

    def _record(group: str, impl: str, ops_per_round: int, benchmark) -> None:
        if benchmark.stats is None:  # --benchmark-disable
            return
        median = benchmark.stats.stats.median / ops_per_round
        benchmark.extra_info.update(impl=impl, ops_per_round=ops_per_round, median_per_op_s=median)
        _results[group][impl] = median

    return _record


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:10.2f}us"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _results:
        return
    tr = terminalreporter
    tr.section(f"C++ vs Python, median per operation — {cpu_name()}")
    tr.write_line(f"{'operation':34} {'C++':>12} {'Python':>12} {'C++ ops/s':>12} {'ratio':>8}")
    for group, by_impl in sorted(_results.items()):
        cpp, py = by_impl.get("cpp"), by_impl.get("py")
        ratio = f"{py / cpp:7.1f}x" if cpp and py else "-"
        ops = f"{1 / cpp:12,.0f}" if cpp else "-"
        tr.write_line(f"{group:34} {_us(cpp):>12} {_us(py):>12} {ops:>12} {ratio:>8}")
