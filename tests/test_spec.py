"""The specification's usage examples (shared/spec, HAVOC-7B + PRIME v2.0, "Usage Examples" and "Tool-Calling
System"), run as written apart from the import path: `havoc_core.model.prime_model` / `havoc_core.config`
become `havoc`, and the spec's tool classes come from `havoc.spec`. The checkpoint the examples load is the
tiny test model saved where the spec says; the figures checked are the tools', which are right where the
spec's are not (Student's t = -1, p = 0.3466 for its t-test, not -2.236 and 0.048)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .gguf_files import write_tiny_gguf


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    """A folder holding checkpoints/phase3/final, as the spec's examples expect."""
    from havoc.llm import LLM

    root = tmp_path_factory.mktemp("spec")
    llm = LLM.load(write_tiny_gguf(root / "tiny.gguf", meta={"llama.context_length": 4096}))
    llm.save_pretrained(root / "checkpoints" / "phase3" / "final")
    llm.close()
    return root


@pytest.fixture
def in_spec_dir(spec_dir, monkeypatch):
    monkeypatch.chdir(spec_dir)
    return spec_dir


def test_example_1_direct_generation(in_spec_dir, capsys):
    from havoc import Havoc7BConfig, HavocPrimeModel

    # Load model
    config = Havoc7BConfig()
    model = HavocPrimeModel.from_pretrained("checkpoints/phase3/final")

    # Simple generation
    result = model.generate_with_prime(
        prompt="What is 2 + 2?",
        enable_prime=False,  # Disable PRIME for trivial task
        max_new_tokens=50
    )

    print(result["text"])
    assert capsys.readouterr().out.strip() == result["text"].strip()
    assert result["verification"]["mode"] == "direct" and result["stats"]["generated_tokens"] <= 50
    assert config.d_model == 4096 and config.attention.num_kv_heads == 8 and config.mlp.hidden_dim == 11008


def test_example_2_prime_reasoning(in_spec_dir):
    from havoc import HavocPrimeModel
    from havoc.spec import PythonMathEngine

    model = HavocPrimeModel.from_pretrained("checkpoints/phase3/final")
    # Stats question
    result = model.generate_with_prime(
        prompt="Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]",
        enable_prime=True,
        tools={
            "python_math": PythonMathEngine()
        },
        max_new_tokens=512
    )

    print(result["text"])
    assert "<reason>" in result["text"] and "<tool>" in result["text"]
    assert "t = -1, df = 8, p = 0.3466" in result["answer"]  # the spec prints t = -2.236, p = 0.048: wrong
    assert result["verification"]["passed"]
    assert set(result["stages"]) == {"MODE", "GROUND", "PLAN", "EXECUTE", "ARGUE", "ARBITER", "AUDIT", "ANSWER"}
    assert result["stages"]["EXECUTE"][0]["tool"] == "statistics"


def test_example_3_full_prime(in_spec_dir):
    from havoc import HavocPrimeModel
    from havoc.spec import DSLExecutor, RAGHelper

    model = HavocPrimeModel.from_pretrained("checkpoints/phase3/final")
    # Complex DOE design
    result = model.generate_with_prime(
        prompt="Design a Box-Behnken DOE for temperature (100-200°C), pressure (10-50 bar), and speed (50-150 RPM)",
        enable_prime=True,
        tools={
            "dsl_executor": DSLExecutor(),
            "rag_helper": RAGHelper()
        },
        max_new_tokens=1024
    )

    print(result["text"])
    # Access structured results
    print(result["workspace"].summarize())
    print(result["verification"])
    assert result["tool_calls"][0]["tool"] == "dsl_executor" and result["tool_calls"][0]["operation"] == "box_behnken"
    assert "15 runs for factors temperature, pressure, speed" in result["answer"]
    assert "tool:dsl_executor" in result["workspace"].summarize()


def test_the_spec_tool_calls_run_as_written():
    from havoc.spec import DSLExecutor, PythonMathEngine, RAGHelper
    from havoc.tools import default_registry

    reg = default_registry()
    calls = [
        {"tool": "python_math", "args": {"operation": "t_test", "group1": [1.2, 1.5, 1.3, 1.6],
                                         "group2": [2.1, 2.3, 2.0, 2.4]}},
        {"tool": "dsl_executor", "args": {"operation": "box_behnken", "factors": [
            {"name": "Temperature", "low": 100, "high": 200}, {"name": "Pressure", "low": 10, "high": 50},
            {"name": "Speed", "low": 50, "high": 150}]}},
        {"tool": "rag_helper", "args": {"query": "What is Box-Behnken design?", "top_k": 3}},
    ]
    for call in calls:
        out = reg.execute_call(json.dumps(call))
        assert out["success"], (call["tool"], out)
    t = reg.execute("python_math", calls[0]["args"])["result"]
    same = reg.execute("statistics", {"operation": "t_test", "kind": "two_sample", "x": [1.2, 1.5, 1.3, 1.6],
                                      "y": [2.1, 2.3, 2.0, 2.4]})["result"]
    assert t == same
    assert PythonMathEngine().execute(**calls[0]["args"]) == same  # the spec's tool objects
    assert len(DSLExecutor().execute(**calls[1]["args"])["runs"]) == 15
    assert RAGHelper().execute(query="What is Box-Behnken design?")["results"]
    text = 'Let me check. <tool>{"tool": "python_math", "args": {"operation": "derivative", "expr": "x^3"}}</tool>'
    assert reg.run_text(text)[0]["response"]["result"]["result"] == "3*x**2"


def test_havoc7bconfig_reads_through_the_spec_names():
    from havoc import Havoc7BConfig, ModelConfig

    c = Havoc7BConfig()
    assert c.to_dict() == ModelConfig.from_preset("havoc-7b").to_dict()
    assert (c.vocab_size, c.d_model, c.num_layers, c.max_seq_len) == (70000, 4096, 32, 4096)
    a = c.attention
    assert (a.num_heads, a.num_kv_heads, a.head_dim, a.rotary_dim, a.rope_theta, a.dropout, a.bias) == \
        (32, 8, 128, 128, 10000.0, 0.0, False)
    assert (c.mlp.hidden_dim, c.mlp.activation, c.mlp.bias) == (11008, "swiglu", False)
    assert (c.layer_norm_eps, c.pad_token_id, c.bos_token_id, c.eos_token_id) == (1e-5, 0, 2 - 1, 2)
    # the token list's ids, where the spec's config clashes with it (attack 15, pragmatist 16 there)
    assert (c.reason_start_token_id, c.tool_end_token_id, c.advocate_token_id, c.attack_token_id,
            c.pragmatist_token_id) == (10, 13, 14, 16, 18)
    assert c.num_parameters() == 5_957_685_248  # not the spec's "~6.96B"
    with pytest.raises(AttributeError):
        c.no_such_field


def test_the_cli_form_python_m_havoc_prompt(spec_dir):
    env = {**os.environ, "HAVOC_API_KEY": ""}
    out = subprocess.run([sys.executable, "-m", "havoc", "What is 17*23+4?", "--model",
                          str(spec_dir / "checkpoints" / "phase3" / "final"), "-n", "40"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "Answer: 17*23+4 = 395" in out.stdout and "[route]" in out.stdout
