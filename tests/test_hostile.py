"""Hostile and careless input (issue 18): bad input never crashes, hangs or lies.

One test (or a few) per class of failure the issue found, then hypothesis suites over the CLI, the tool
schemas, the loaders (GGUF and safetensors files made here, small), the trainer's config and the
server's request bodies. What every one asserts: the CLI exits 2 with one line naming the argument,
the library raises one of havoc's clean exception types, time and memory stay bounded (subprocesses
with a timeout and an address-space limit where a run could blow up), and no file is left half-written.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from havoc import cli
from havoc.errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    HavocError,
    InsufficientMemoryError,
    TrainingDivergedError,
)
from havoc.tools import default_registry
from havoc.tools.registry import MAX_ERROR_CHARS, ToolRegistry, ToolSpec, extract_tool_calls, unbounded_numbers

from .gguf_files import TINY, tiny_weights, write_tiny_gguf
from .train_helpers import one_thread, tiny_config  # noqa: F401 - one_thread is an autouse fixture

REG = default_registry()
FAST = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("hostile") / "tiny.gguf")


def havoc_cli(*args: str, input: bytes | None = None, timeout: float = 120, memory_gb: float = 6,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`havoc ARGS` in a child with a wall-clock limit and an address-space cap: a hang or a blow-up
    fails the test instead of the machine."""
    limit = int(memory_gb * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", "havoc.cli", *args], input=input, capture_output=True,
                          timeout=timeout, preexec_fn=cap, cwd=cwd)


def refused(result, *names: str) -> str:
    """The CLI refused cleanly: exit 2, one line on stderr, naming every one of `names`."""
    err = result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == 2, (result.returncode, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and len(lines[0]) <= 700, err[-2000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def main_refuses(argv: list[str], capsys, *names: str) -> str:
    """In-process `havoc ARGV` (no model is loaded before the check): exit 2 and one line naming `names`."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 700, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- class 1: resources
def test_kv_pools_refuse_what_memory_cannot_hold_with_the_figures() -> None:
    from havoc.cache import PagedKVCache, StaticKVCache
    from havoc.config import ModelConfig

    config = ModelConfig.from_preset("tiny")
    t0 = time.monotonic()
    with pytest.raises(InsufficientMemoryError, match=r"paged KV pool of 4000000000 blocks .* needs [\d.]+ GiB .* available"):
        PagedKVCache(config, num_blocks=4_000_000_000, block_size=16)
    with pytest.raises(InsufficientMemoryError, match=r"static KV cache of 64 x 2000000000 tokens needs"):
        StaticKVCache(config, 64, 2_000_000_000)
    assert time.monotonic() - t0 < 2
    PagedKVCache(config, num_blocks=8, block_size=16)  # what fits is made


def test_a_claimed_two_billion_token_context_is_refused_or_clamped_not_oom(tmp_path) -> None:
    from havoc import hub
    from havoc.generation import SamplingParams, generate_ids

    path = write_tiny_gguf(tmp_path / "ctx.gguf", meta={"llama.context_length": 2**31})
    model, _ = hub.load(path)
    for cache in ("paged", "static"):
        with pytest.raises(InsufficientMemoryError, match="GiB"):
            generate_ids(model, [[5, 6, 7]], SamplingParams(max_new_tokens=10**9), cache=cache)
    # the CLI's engine sizes its pool by kv_cache_tokens, not the claim: it answers within its limits
    out = havoc_cli("generate", "hi", "-m", str(path), "-n", "1000000000", "--no-stream", memory_gb=6, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_layer_counts_are_compared_before_anything_is_built(tmp_path) -> None:
    from safetensors.torch import save_file

    from havoc import hub
    from havoc.io.checkpoint import load_pretrained
    from havoc.io.gguf import read_gguf

    t0 = time.monotonic()
    path = write_tiny_gguf(tmp_path / "layers.gguf", meta={"llama.block_count": 10**6})
    with pytest.raises(CheckpointError, match="says 1000000 layers but the tensors hold 2"):
        read_gguf(path)
    model, _ = hub.load(write_tiny_gguf(tmp_path / "ok.gguf"))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**model.config.to_dict(), "n_layers": 100_000}))
    with pytest.raises(CheckpointError, match="says 100000 layers but the tensors hold 2"):
        load_pretrained(folder)
    assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------------------- class 2: training
@pytest.mark.parametrize("section, message", [
    ({"optim": {"lr": math.inf}}, r"optim.lr must be a number in \(0, 10\], got inf"),
    ({"optim": {"lr": math.nan}}, r"optim.lr must be a number"),
    ({"optim": {"lr": -1.0}}, r"optim.lr"),
    ({"optim": {"betas": [0.9, 1.5]}}, r"optim.betas\[1\] must be a number in \[0, 1\)"),
    ({"optim": {"betas": [0.9]}}, r"optim.betas must be two numbers"),
    ({"optim": {"betas": "0.9, 0.95"}}, r"optim.betas must be list\[float\]"),
    ({"optim": {"warmup_steps": -5}}, r"optim.warmup_steps"),
    ({"optim": {"grad_clip": math.inf}}, r"optim.grad_clip"),
    ({"optim": {"eps": 0.0}}, r"optim.eps"),
    ({"train": {"steps": 1.5}}, r"train.steps must be int, got float"),
    ({"train": {"steps": True}}, r"train.steps must be int, got bool"),
    ({"train": {"steps": 0}}, r"train.steps must be a number in \[1,"),
    ({"data": {"seq_len": "64"}}, r"data.seq_len must be int, got str"),
    ({"data": {"batch_size": 0}}, r"data.batch_size"),
])
def test_hyper_parameters_are_validated(tmp_path, section, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, **section)


def test_seq_len_beyond_the_models_context_is_refused(tmp_path) -> None:
    from havoc.train.trainer import Trainer

    with pytest.raises(ConfigError, match=r"data.seq_len is 100000 but the model's context is"):
        Trainer(tiny_config(tmp_path, data={"seq_len": 100_000}), progress=False)


def test_a_diverged_model_is_never_saved_and_good_checkpoints_survive(tmp_path) -> None:
    from havoc.io.checkpoint import load_pretrained
    from havoc.train.trainer import Trainer

    cfg = tiny_config(tmp_path, train={"steps": 4, "save_every": 1, "keep_last": 1})
    trainer = Trainer(cfg, progress=False, log_stream=open(os.devnull, "w"))
    trainer.fit(stop_after=1)
    good = trainer.checkpoints()
    assert [p.name for p in good] == ["step_0000001"]
    with torch.no_grad():  # a divergence: the update made a weight NaN (what lr: .inf did)
        next(trainer.model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="step_0000001"):
        trainer.fit()
    with pytest.raises(TrainingDivergedError):
        trainer.save_checkpoint()
    assert trainer.checkpoints() == good and not (tmp_path / "final").exists()
    model = load_pretrained(good[0])  # the kept checkpoint is finite and loads
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [p.name for p in tmp_path.joinpath("checkpoints").iterdir()] == ["step_0000001"]  # no temporaries


def test_the_train_cli_refuses_bad_configs_in_one_line(tmp_path) -> None:
    import yaml

    base = tiny_config(tmp_path / "run").to_dict()
    cases = {
        "betas": ({"optim": {**base["optim"], "betas": [2, 0.9]}}, "optim.betas[0]"),
        "out_dir": ({"train": {**base["train"], "out_dir": str(tmp_path / "a_file" / "run")}}, "train.out_dir"),
    }
    (tmp_path / "a_file").write_text("not a folder")
    for name, (change, flag) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        refused(havoc_cli("train", "--config", str(path), "--no-progress", timeout=120), flag)


# ------------------------------------------------------------------------------ class 3: tool limits
def _spin(args, ctx):
    path = Path(args["path"])
    while True:
        with open(path, "a") as f:
            f.write("x")
        time.sleep(0.01)


def _huge_result(args, ctx):
    return {"values": [[float(i)] * 50 for i in range(400_000)]}  # ~80 MB of JSON: slow to serialize


def _hog(args, ctx):
    return len(bytearray(16 << 30))  # 16 GB: beyond the child's memory cap


def test_a_time_limit_stops_the_work_not_only_the_wait(tmp_path) -> None:
    reg = ToolRegistry(timeout=0.5)
    schema = {"type": "object", "properties": {"path": {"type": "string"}}, "additionalProperties": False}
    reg.register(ToolSpec("spin", "runs forever", _spin, schema))
    marker = tmp_path / "alive"
    t0 = time.monotonic()
    out = reg.execute("spin", {"path": str(marker)})
    assert not out["success"] and "did not finish within 0.5 s" in out["error"] and time.monotonic() - t0 < 2
    size = marker.stat().st_size
    time.sleep(0.5)
    assert marker.stat().st_size == size  # the work stopped with the answer


def test_serialization_and_memory_are_inside_the_limit() -> None:
    reg = ToolRegistry(timeout=1.0)
    reg.register(ToolSpec("huge", "big result", _huge_result, {"type": "object"}))
    reg.register(ToolSpec("hog", "allocates", _hog, {"type": "object"}))
    t0 = time.monotonic()
    out = reg.execute("huge", {})
    assert not out["success"] and ("within 1 s" in out["error"] or "too large" in out["error"])
    assert time.monotonic() - t0 < 3
    out = reg.execute("hog", {}, timeout=10)
    assert not out["success"] and "memory" in out["error"], out


def test_superlinear_costs_have_matching_caps() -> None:
    t0 = time.monotonic()
    out = REG.execute("statistics", {"operation": "anova_two_way", "y": list(range(4000)),
                                     "a": [str(i) for i in range(4000)], "b": [i % 2 for i in range(4000)]})
    assert not out["success"] and "a has 4000 levels" in out["error"] and time.monotonic() - t0 < 5
    def seconds(n: int) -> float:  # nested tags: each open is followed by another before any close
        gc.disable()  # the collector's passes over the test process's heap are not the parser's cost
        try:
            t0 = time.perf_counter()
            assert len(extract_tool_calls("<tool>" * n + "</tool>" * n)) == n
            return time.perf_counter() - t0
        finally:
            gc.enable()

    small, large = min(seconds(10_000) for _ in range(3)), seconds(100_000)
    assert large < 30 * small + 0.5, (small, large)  # linear: ~10x; the old quadratic scan: ~100x (30 s)


# ------------------------------------------------------------------------- class 4: poisoned files
def _patch_u64(path: Path, tensor_index: int, new_offset: int) -> None:
    import gguf

    reader = gguf.GGUFReader(str(path))
    t = reader.tensors[tensor_index]
    pos = t.field.offset + 8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4
    del reader
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(struct.pack("<Q", new_offset))


def _offset_of(path: Path, tensor_index: int) -> int:
    import gguf

    reader = gguf.GGUFReader(str(path))
    start = reader.tensors[0].data_offset
    return int(reader.tensors[tensor_index].data_offset - start)


def test_poisoned_gguf_files_are_refused(tmp_path) -> None:
    from havoc.io.gguf import load_gguf

    w = tiny_weights()
    w["norm.weight"] = torch.full_like(w["norm.weight"], float("nan"))
    with pytest.raises(CheckpointError, match="norm.weight holds NaN"):
        load_gguf(write_tiny_gguf(tmp_path / "nan.gguf", w))
    path = write_tiny_gguf(tmp_path / "misaligned.gguf")
    _patch_u64(path, 1, _offset_of(path, 1) + 4)
    with pytest.raises(CheckpointError, match="not a multiple of the alignment 32"):
        load_gguf(path)
    path = write_tiny_gguf(tmp_path / "overlap.gguf")
    _patch_u64(path, 2, _offset_of(path, 1))
    with pytest.raises(CheckpointError, match="overlap"):
        load_gguf(path)


def test_poisoned_safetensors_are_refused(tmp_path) -> None:
    from havoc import hub
    from havoc.io.checkpoint import load_pretrained, save_weights

    model, _ = hub.load(write_tiny_gguf(tmp_path / "t.gguf"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    nan = dict(state, **{"norm.weight": torch.full_like(state["norm.weight"], float("nan"))})
    save_weights(model.config, nan, tmp_path / "nan")
    with pytest.raises(CheckpointError, match="norm.weight holds NaN"):
        load_pretrained(tmp_path / "nan")
    int8 = dict(state, **{"norm.weight": torch.ones_like(state["norm.weight"], dtype=torch.int8)})
    save_weights(model.config, int8, tmp_path / "int8")
    with pytest.raises(CheckpointError, match="norm.weight has dtype int8"):
        load_pretrained(tmp_path / "int8")


def test_a_same_size_edit_with_the_mtime_restored_is_caught(tmp_path, monkeypatch) -> None:
    import hashlib

    from havoc import hub

    data = os.urandom(4096)
    fake = hub.KnownModel("fake", "pkg", "1", "pkg/fake.gguf", hashlib.sha256(data).hexdigest(), len(data), "test")
    monkeypatch.setitem(hub.KNOWN_MODELS, "fake", fake)
    monkeypatch.setenv("HAVOC_CACHE_DIR", str(tmp_path))
    path = hub.model_path("fake")
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert hub.verify_cached("fake") == (True, "verified by hash")
    assert hub.verify_cached("fake") == (True, "verified by stamp")
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"\0" * 16)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    ok, why = hub.verify_cached("fake")
    assert not ok and "SHA-256" in why


def test_a_torn_save_is_detected(tmp_path) -> None:
    from havoc import hub
    from havoc.io.checkpoint import load_pretrained, save_weights

    model, _ = hub.load(write_tiny_gguf(tmp_path / "t.gguf"))
    save_weights(model.config, model.state_dict(), tmp_path / "ckpt")
    # a kill between the two renames: new config beside old weights
    model.config.__class__.from_dict({**model.config.to_dict(), "norm_eps": 1e-3}).save(tmp_path / "ckpt" / "config.json")
    with pytest.raises(CheckpointError, match="different saves"):
        load_pretrained(tmp_path / "ckpt")


# -------------------------------------------------------------------- class 5: one line, exit 2
def test_cli_refusals_are_one_line(tmp_path, capsys) -> None:
    main_refuses(["generate", "hi", "--seed", str(2**70)], capsys, "seed")
    main_refuses(["generate", "hi", "--top-p", "nan"], capsys, "top_p")
    main_refuses(["generate", "hi", "--seed", "x"], capsys, "--seed")
    main_refuses(["generate", "hi", "--device", "cuda:x"], capsys, "device")
    main_refuses(["tool", "statistics", "--plot", str(tmp_path / "p.png"), "--args", "[" * 50_000 + "]" * 50_000],
                 capsys, "--args")
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    main_refuses(["generate", "hi", "-m", str(deep)], capsys, "nested too deeply")
    main_refuses(["eval", "smoke", "--output", str(tmp_path / "missing" / "r.json")], capsys, "--output", "does not exist")
    main_refuses(["eval", "smoke", "--output", str(tmp_path)], capsys, "--output", "is a folder")
    (tmp_path / "corpus.txt").write_text("some text\n" * 50)
    main_refuses(["tokenizer", "train", "--input", str(tmp_path / "corpus.txt"), "--vocab-size", "600",
                  "--output", str(tmp_path / "deep" / "config.json")], capsys, "output", "not a folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a device this machine lacks")
def test_devices_that_do_not_exist_and_non_utf8_prompts(tiny_gguf) -> None:
    refused(havoc_cli("generate", "hi", "-m", str(tiny_gguf), "--device", "cuda"), "device 'cuda'", "no CUDA")
    refused(havoc_cli("generate", "hi", "-m", str(tiny_gguf), "--device", "tpu"), "device 'tpu'")
    bad = os.fsdecode(b"\xff\xfe caf\xe9")
    refused(havoc_cli("generate", bad, "-m", str(tiny_gguf)), "argument prompt is not valid UTF-8")


def test_a_yaml_bomb_gets_a_short_error(tmp_path, capsys) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    line = main_refuses(["train", "--config", str(path)], capsys, "aliases")
    assert len(line) < 700


# ----------------------------------------------------------------------- class 6: undefined answers
@pytest.mark.parametrize("args, message", [
    ({"operation": "chi_square", "observed": [0, 0, 0]}, "all zero"),
    ({"operation": "regression", "y": [5, 5, 5, 5], "predictors": {"x": [1, 2, 3, 4]}}, "y is constant"),
    ({"operation": "describe", "data": [1e200, 2e200]}, "args.data[0]: numbers must be in [-1e100, 1e100]"),
])
def test_undefined_questions_are_refused(args, message) -> None:
    out = REG.execute("statistics", args)
    assert not out["success"] and message in out["error"], out


def test_extreme_but_allowed_values_get_finite_answers() -> None:
    from havoc.tools import doe

    out = REG.execute("statistics", {"operation": "describe", "data": [1e100, -1e100, 3, 7]})
    assert out["success"], out
    r = out["result"]
    assert all(r[k] is not None and math.isfinite(r[k]) for k in ("sd", "variance", "skewness", "kurtosis_excess"))
    assert doe.to_coded(1e307, -1.7e308, 1.7e308) == pytest.approx(1e307 / 1.7e308)
    assert doe.to_natural(doe.to_coded(12.5, 10, 20), 10, 20) == 12.5


def test_a_result_that_words_a_nan_is_refused() -> None:
    reg = ToolRegistry()
    reg.register(ToolSpec("liar", "interprets NaN", lambda a, c: {"p": float("nan"),
                                                                  "interpretation": "do not reject H0 (p = nan)"},
                          {"type": "object"}))
    out = reg.execute("liar", {})
    assert not out["success"] and "p is not a finite number" in out["error"]


# ------------------------------------------------------------------ class 7: named, bounded errors
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e308"])
def test_tool_timeouts_are_checked(value, capsys) -> None:
    main_refuses(["tool", "statistics", "--timeout", value, "--args", '{"operation": "describe", "data": [1, 2]}'],
                 capsys, "--timeout must be a number of seconds in (0, 3600]")


def test_every_schema_bounds_its_integers_and_every_number_is_bounded() -> None:
    for name in REG.names():
        spec = REG._tools[name]
        for schema in (spec.schema.values() if spec.discriminator else [spec.schema]):
            assert unbounded_numbers(schema) == [], name
    with pytest.raises(ValueError, match="integers without a minimum and a maximum"):
        ToolRegistry().register(ToolSpec("loose", "x", lambda a, c: {}, {"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 0}}}))
    out = REG.execute("statistics", {"operation": "proportion_test", "successes": 10**300, "trials": 10**301})
    assert not out["success"] and "args.successes" in out["error"] and len(out["error"]) < 200
    out = REG.execute("statistics", {"operation": "describe", "data": list(range(20_000)) + ["x" * 1000] * 300})
    assert not out["success"] and len(out["error"]) < 200 and "xxxxxxxxxx" not in out["error"], out
    out = REG.execute("statistics", {"operation": "describe", "data": [1] * 200_001})
    assert not out["success"] and "too large (200001 items; at most 200000 allowed)" in out["error"], out


# --------------------------------------------------------------------------- class 8: smaller losses
def test_chat_keeps_the_session_through_oversize_turns_and_long_histories(tiny_gguf) -> None:
    turns = b"hi\n" + b"word " * 2000 + b"\n\xff\xfe\n" + b"hello hello hello\n" * 12 + b"/exit\n"
    out = havoc_cli("chat", "-m", str(tiny_gguf), "-n", "4", input=turns, timeout=300)
    err = out.stderr.decode()
    assert out.returncode == 0, err[-2000:]
    assert "the context holds 128: not sent" in err and "not valid UTF-8" in err and "left the context" in err
    assert "Traceback" not in err
    assert out.stdout.count(b"\n") >= 13  # every turn that fit was answered


def test_token_ids_are_never_coerced(tiny_gguf) -> None:
    from havoc.generation import generate_ids
    from havoc.llm import LLM

    llm = LLM.load(tiny_gguf)
    try:
        for prompt, message in [([2**32 + 5], r"outside the vocabulary \[0, 264\): \[4294967301\]"),
                                ([1.5, 2], "must be token ids .integers., found float"),
                                ([True], "found bool"), ([10**6], "outside the vocabulary")]:
            with pytest.raises(GenerationError, match=message):
                llm.generate(prompt, max_new_tokens=1)
            with pytest.raises(GenerationError, match=message):
                generate_ids(llm.model, [prompt])
        assert llm.generate(np.array([5, 6], dtype=np.int64).tolist(), max_new_tokens=1).token_ids
    finally:
        llm.close()


def test_resume_does_not_repeat_log_records(tmp_path) -> None:
    from havoc.train.trainer import Trainer

    cfg = tiny_config(tmp_path, train={"steps": 4, "save_every": 2})
    Trainer(cfg, progress=False).fit(stop_after=3)  # step 3 is logged after the step-2 checkpoint: the "kill"
    Trainer(cfg, resume=True, progress=False).fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# ================================================================================ hypothesis suites
JSON_LEAF = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=20)


def _mutations(example: dict):
    """An operation's example call with one key replaced, removed or added."""
    keys = sorted(example)
    return st.one_of(
        st.tuples(st.sampled_from(keys), JSON).map(lambda kv: {**example, kv[0]: kv[1]}),
        st.sampled_from(keys).map(lambda k: {kk: v for kk, v in example.items() if kk != k or k == "operation"}),
        st.tuples(st.text(max_size=8), JSON).map(lambda kv: {**example, kv[0]: kv[1]}),
    )


EXAMPLE_CALLS = [(d["name"], e["args"]) for d in REG.describe() if d["name"] in ("statistics", "dsl_executor")
                 for e in d.get("examples", [])]


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_hypothesis_tool_calls_always_answer_in_the_envelope_within_the_limit(data) -> None:
    name, example = data.draw(st.sampled_from(EXAMPLE_CALLS))
    args = data.draw(_mutations(example))
    t0 = time.monotonic()
    out = REG.execute(name, args, timeout=5)
    assert time.monotonic() - t0 < 8
    assert set(out) in ({"success", "result"}, {"success", "error"})
    if not out["success"]:
        assert "\n" not in out["error"] and len(out["error"]) <= MAX_ERROR_CHARS
        assert "internal error" not in out["error"], (args, out)
    else:
        json.dumps(out["result"], allow_nan=False)


@FAST
@given(timeout=st.one_of(st.floats(), st.integers(min_value=-10, max_value=10**6).map(str)).map(str),
       args=JSON.map(json.dumps))
def test_hypothesis_tool_cli_flags(timeout, args, capsys) -> None:
    try:
        rc = cli.main(["tool", "statistics", "--timeout", timeout, "--args", args])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    assert rc in (0, 2)
    if rc == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) <= 700 and "Traceback" not in captured.err


@FAST
@given(section=st.sampled_from(["optim", "train", "data"]), key=st.text(min_size=1, max_size=12), value=JSON,
       existing=st.booleans())
def test_hypothesis_train_configs_are_built_or_refused_cleanly(tmp_path, section, key, value, existing) -> None:
    from havoc.train.config import TrainConfig

    base = tiny_config(tmp_path).to_dict()
    if existing:
        key = sorted(base[section])[hash(key) % len(base[section])]
    base[section][key] = value
    try:
        cfg = TrainConfig.from_dict(base)
    except ConfigError as e:
        assert len(str(e)) < 1000
        return
    for f in ("lr", "min_lr", "eps", "weight_decay", "grad_clip"):
        assert math.isfinite(getattr(cfg.optim, f))


@pytest.fixture(scope="module")
def tiny_gguf_bytes(tiny_gguf) -> bytes:
    return tiny_gguf.read_bytes()


@FAST
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=6100), st.integers(min_value=0, max_value=255)),
                      min_size=1, max_size=4))
def test_hypothesis_corrupted_gguf_headers_are_refused_cleanly(tmp_path, tiny_gguf_bytes, edits) -> None:
    from havoc.io.gguf import load_gguf

    raw = bytearray(tiny_gguf_bytes)
    for pos, byte in edits:  # the header and the tensor records: the first 6,016 bytes of the file
        raw[pos] = byte
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(raw))
    t0 = time.monotonic()
    with contextlib.suppress(HavocError):
        model, tok = load_gguf(path)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert time.monotonic() - t0 < 10


@FAST
@given(header=st.one_of(JSON.map(json.dumps), st.binary(max_size=64).map(lambda b: b.decode("latin-1"))),
       size=st.integers(min_value=0, max_value=2**64 - 1))
def test_hypothesis_crafted_safetensors_are_refused_cleanly(tmp_path, header, size) -> None:
    from havoc.io.checkpoint import load_pretrained

    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in TINY.items()} | {"vocab_size": 264}))
    blob = header.encode("utf-8", "surrogatepass")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", size) + blob + b"\0" * 64)
    with pytest.raises(HavocError):
        load_pretrained(folder)


@pytest.fixture(scope="module")
def client(tiny_gguf):
    from fastapi.testclient import TestClient

    from havoc.llm import LLM
    from havoc.serve.app import Server, ServerConfig, build_app

    llm = LLM.load(tiny_gguf)
    app = build_app(Server(llm, ServerConfig(model_name="tiny", request_timeout=10)))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    llm.close()


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "tiny", "prompt": "hi", "max_tokens": 2}


@pytest.mark.parametrize("body, status, message", [
    ('{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "NaN is not a JSON number"),
    ('{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "surrogate"),
    ('{"model": "tiny", "prompt": [true, 2], "max_tokens": 1}', 400, "prompt"),
    ('{"tokens": [true]}', 400, "tokens"),
    ("[" * 100_000 + "]" * 100_000, 400, "not valid JSON"),
])
def test_server_refusals_found_by_probing(client, body, status, message) -> None:
    url = "/detokenize" if body.startswith('{"tokens"') else ("/v1/completions" if '"prompt"' in body else "/v1/chat/completions")
    r = client.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]["message"], r.text[:300]


@FAST
@given(which=st.sampled_from(["chat", "completion"]), key=st.text(max_size=24), value=JSON, existing=st.booleans())
def test_hypothesis_server_bodies_never_get_a_500(client, which, key, value, existing) -> None:
    body = dict(CHAT if which == "chat" else COMPLETION)
    if existing:
        key = sorted(body)[hash(key) % len(body)]
    body[key] = value
    if isinstance(body.get("max_tokens"), int) and not isinstance(body.get("max_tokens"), bool):
        body["max_tokens"] = min(body["max_tokens"], 4)  # keep generation short; the value's type still varies
    url = "/v1/chat/completions" if which == "chat" else "/v1/completions"
    t0 = time.monotonic()
    r = client.post(url, json=body)
    assert time.monotonic() - t0 < 15
    assert r.status_code in (200, 400, 404, 413, 422), (r.status_code, body, r.text[:300])
    if r.status_code != 200:
        assert set(r.json()["error"]) >= {"message", "type"} and len(r.json()["error"]["message"]) < 2000


# ------------------------------------------------------------------- found by the second round of probing
def test_second_round_flags(capsys, tmp_path) -> None:
    """`--threads 100000` was a segfault (OpenMP could not start the threads), `eval --samples 10^9` a hang,
    and `memory --gpu-gb nan` / `--batch-size -1` printed a budget as if they meant something."""
    main_refuses(["generate", "hi", "-m", str(tmp_path / "none.gguf"), "--threads", "100000"], capsys, "--threads must be in [1, ")
    main_refuses(["eval", "smoke", "--samples", "1000000000", "--limit", "1", "-m", str(tmp_path / "none.gguf")],
                 capsys, "samples must be an integer in [1, 64]")
    main_refuses(["memory", "--gpu-gb", "nan"], capsys, "--gpu-gb")
    main_refuses(["memory", "--batch-size", "-1"], capsys, "--batch-size")
    with pytest.raises(ConfigError, match=r"train.threads must be a number in \[0, 1024\]"):
        tiny_config(tmp_path, train={"threads": 100_000})


def test_engine_refuses_float_tensor_token_ids() -> None:
    from havoc import HavocModel, ModelConfig
    from havoc.engine import Engine

    model = HavocModel(ModelConfig.from_preset("tiny", max_seq_len=64)).eval()
    engine = Engine(model, None, kv_cache_tokens=64)
    with pytest.raises(GenerationError, match="integers"):
        engine.add_request([torch.tensor(1.5), 2])
