"""The C++ extension under AddressSanitizer + UndefinedBehaviorSanitizer: `tools/sanitize.sh` rebuilds
havoc._C with both and runs the block manager's state machine and targeted tests, the paged kernels' tests
(every ISA variant), the attention and elementwise kernels' and the paged cache's on it; any sanitizer report or failing
test fails this test.

It needs what building the extension needs (cmake, a C++ compiler whose libasan is installed, pybind11 in
this environment); where one is missing it is skipped with the reason. HAVOC_SKIP_SANITIZE=1 skips it on
purpose (it rebuilds the extension: a few minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "sanitize.sh"


def _missing() -> str | None:
    if os.environ.get("HAVOC_SKIP_SANITIZE") == "1":
        return "HAVOC_SKIP_SANITIZE=1"
    if not sys.platform.startswith("linux"):
        return "the sanitizer build is set up for Linux (LD_PRELOAD of libasan)"
    if not SCRIPT.exists():
        return "tools/sanitize.sh is not in this tree (an installed havoc without its sources)"
    cxx = os.environ.get("CXX", "g++")
    for tool in ("cmake", cxx):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    asan = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(asan) or not os.path.exists(asan):
        return f"{cxx} has no libasan.so (install the compiler's sanitizer runtime, e.g. libasan8)"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed in this environment (pip install pybind11)"
    return None


def test_extension_runs_its_tests_clean_under_asan_and_ubsan():
    why = _missing()
    if why:
        pytest.skip(why)
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("LD_PRELOAD", None)
    run = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"tools/sanitize.sh failed ({run.returncode}):\n{run.stdout[-6000:]}\n{run.stderr[-6000:]}"
    assert " passed" in run.stdout and "sanitizer reports" not in run.stderr
