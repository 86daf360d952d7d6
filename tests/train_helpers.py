"""Shared by the training tests: a tokenizer trained once per process on the shipped corpus, tiny run configs."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch

from havoc.data.sources import PACKAGE_DIR
from havoc.train.config import TrainConfig

CORPUS_DIR = PACKAGE_DIR / "data" / "corpus"
KNOWLEDGE = str(PACKAGE_DIR / "tools" / "knowledge" / "*.md")


@pytest.fixture(autouse=True)
def one_thread():
    """Import into a test module to run it on one torch thread.

    NOTE: on our shared 2-core VM three tiny training steps took 0.66 s on one thread, 9.5 s on two.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@functools.lru_cache(maxsize=1)
def tokenizer_dir() -> Path:
    """A 1024-token tokenizer over the shipped corpus, trained once (about 3 s)."""
    from havoc.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    out = Path(tempfile.mkdtemp(prefix="havoc-test-tok-"))
    train_tokenizer(TokenizerTrainConfig(inputs=[str(CORPUS_DIR / "*.txt"), KNOWLEDGE], output=str(out), vocab_size=1024))
    return out


def tokenizer():
    from havoc.tokenizer import Tokenizer

    return Tokenizer.load(tokenizer_dir())


def tiny_config(out_dir, **sections) -> TrainConfig:
    """A tiny pretraining run on the shipped corpus; `sections` update the YAML-shaped dict per section."""
    data = {
        "phase": "pretrain",
        "model": {"preset": "tiny", "overrides": {"dim": 48, "n_heads": 3, "n_kv_heads": 1, "ffn_hidden": 100}},
        "tokenizer": str(tokenizer_dir()),
        "data": {"seq_len": 64, "batch_size": 2, "seed": 0, "sources": [
            {"name": "notes", "paths": [str(CORPUS_DIR / "quality_notes.txt"), KNOWLEDGE], "weight": 3},
            {"name": "stories", "paths": [str(CORPUS_DIR / "stories.txt")], "weight": 1},
        ]},
        "optim": {"name": "adamw", "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2, "weight_decay": 0.1, "grad_clip": 1.0},
        "train": {"steps": 6, "grad_accum": 1, "param_dtype": "float32", "log_every": 0, "save_every": 0,
                  "keep_last": 2, "out_dir": str(out_dir), "device": "cpu", "threads": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainConfig.from_dict(data)
