"""The `havoc` command line: diagnostics, bad input as one-line errors, real generation."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from havoc import _C, ops
from havoc.cli import main


def test_env_reports_versions_build_and_fast_paths(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"]
    ext = info["extension"]
    assert ext["loaded"] and ext["compiler"] and "openmp" in ext and ext["simd_runtime"]
    assert set(info["ops_cpu"]) == set(ops.OPS)  # every op, with the implementation CPU tensors get
    assert info["ops_cpu"]["paged_decode_attention"].startswith("fast (havoc.backends.cpu")
    assert info["ops_cpu"]["linear"].startswith("fast")
    # which decode-kernel variant runs and why; every other variant runs too or says what it lacks
    kernels = info["cpu_kernels"]
    auto = _C.linear_auto()
    assert kernels["variant"].startswith(auto) and kernels[f"  {auto}"] == "runs ('auto' picks it)"
    assert ("not " in kernels["variant"]) == (auto != _C.linear_isas()[-1])  # says why where it is not the widest
    assert all(kernels[f"  {v}"].startswith(("runs", "unavailable: ")) for v in _C.linear_variants())
    assert kernels["bfloat16 weights"] == _C.linear_kernel(auto, "bfloat16")
    threads = _C.max_threads()  # how a batch-1 step uses them
    assert kernels["batch-1 steps"].startswith(f"every layer in one parallel region of {threads} threads"
                                               if threads > 1 else "one thread")
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert "C++ extension (havoc._C)" in text and "Ops on CPU tensors" in text and "CPU decode kernels" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", ""], "the prompt is empty"),
        (["generate", "hi", "--temperature", "-1"], "temperature must be"),
        (["generate", "hi", "--top-p", "0"], "top_p must be"),
        (["generate", "hi", "--max-new-tokens", "0"], "max_new_tokens must be"),
        (["generate", "hi", "--model", "/no/such/model.gguf"], "/no/such/model.gguf"),
        (["generate", "hi", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["generate", "hi", "--dtype", "int3"], "unknown dtype 'int3'"),
        (["pull", "no-such-model"], "unknown model 'no-such-model'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("havoc: error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_corrupt_gguf_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    assert main(["generate", "hi", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.gguf" in err and "Traceback" not in err


def _havoc(*args, stdin=None):
    exe = shutil.which("havoc") or os.path.join(os.path.dirname(sys.executable), "havoc")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=600)


@pytest.mark.model
def test_generate_streams_the_same_text_as_no_stream(smollm2_gguf):
    streamed = _havoc("generate", "The three primary colors are", "-n", "12")
    assert streamed.returncode == 0, streamed.stderr
    whole = _havoc("generate", "The three primary colors are", "-n", "12", "--no-stream", "--stats")
    assert whole.returncode == 0, whole.stderr
    assert streamed.stdout == whole.stdout and streamed.stdout.strip()
    assert "tok/s" in whole.stderr


@pytest.mark.model
def test_chat_reads_turns_from_stdin(smollm2_gguf):
    out = _havoc("chat", "-n", "12", stdin="What is 2 + 2?\n/reset\nSay hi.\n/exit\n")
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2


def test_stats_go_to_the_stderr_of_the_moment(capsys):
    """--stats prints to sys.stderr as it is when printing (redirected, captured), not as it was at import."""
    from havoc.cli import _print_stats
    from havoc.generation import GenerationStats

    _print_stats(GenerationStats(prompt_tokens=5, generated_tokens=8, prefill_seconds=0.5, decode_seconds=2.0))
    assert "prompt 5 tok, 10.0 tok/s | generated 8 tok, 4.0 tok/s" in capsys.readouterr().err
