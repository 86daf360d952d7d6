"""Every Triton kernel compiles for Hopper (sm_90) in the configurations its launcher picks on a GPU.

The other kernel tests run the kernels through Triton's CPU interpreter, which never meets the GPU
compiler's rules (tl.dot shapes and dtypes, constexpr use, shared memory). This one compiles them ahead of
time with Triton's bundled NVIDIA backend and ptxas (`havoc.kernels.aot`), no GPU needed, and fails on a
compile error or on shared memory past the H100's 227 KiB per block.

It runs in a subprocess: the test session imports the kernels under TRITON_INTERPRET=1 (tests/conftest.py),
where they are interpreter functions, and the compiler needs them as JIT functions. Triton's cache goes to
a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="the Triton kernels need the triton package (pip install '.[test]')")


def _skip_reason() -> str | None:
    from havoc.kernels.aot import nvidia_backend_available

    return nvidia_backend_available()


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90(tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(f"no ahead-of-time compilation for NVIDIA: {reason}")
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset; 1 is its default
    report = tmp_path / "aot.json"
    proc = subprocess.run(
        [sys.executable, "-m", "havoc.kernels.aot", "--quick", "--quiet", "--arch", "90",
         "--jobs", str(min(4, os.cpu_count() or 1)), "--json", str(report)],
        env=env, capture_output=True, text=True, timeout=900,
        cwd=tmp_path,  # not the repository root: `python -m` would import its uninstalled havoc/ first
    )
    assert report.exists(), f"the compile run did not finish (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(report.read_text())
    kernels = {r["kernel"] for r in results}
    # every kernel of every kernel file was reached by some scenario
    assert kernels >= {
        "_rms_norm_fwd_kernel", "_rms_norm_bwd_kernel", "_rope_kernel", "_swiglu_fwd_kernel", "_swiglu_bwd_kernel",
        "_attn_fwd_kernel", "_attn_bwd_delta_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel",
        "_paged_decode_kernel", "_paged_merge_kernel", "_write_kv_kernel", "_ce_rows_kernel",
    }, kernels
    failed = [f"{r['kernel']} [{r['label']}] ({', '.join(r['scenarios'])}): {r['error']}" for r in results if not r["ok"]]
    assert not failed, "kernels that do not compile for sm_90:\n" + "\n\n".join(failed)
    over = [
        f"{r['kernel']} [{r['label']}]: {r['shared']} B > {r['shared_limit']} B"
        for r in results if r["shared"] > r["shared_limit"]
    ]
    assert not over, "shared memory over the sm_90 limit:\n" + "\n".join(over)
    assert proc.returncode == 0, proc.stdout + proc.stderr
