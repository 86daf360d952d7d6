"""Weighted, streamed, resumable data sources.

A `Source` is a list of files (paths or globs) read as documents, one at a time, never whole:

- `.jsonl` files: one record per line (a dict; pretraining takes its `text` field, SFT the whole record);
- other files (text): documents are separated by blank lines; a document longer than `max_doc_chars` bytes is
  handed out in pieces of about that size (cut between characters), so a 10 GB file with no blank line still streams.

A `Mixture` draws each next document from one of its sources with probability proportional to the
source's weight, from its own seeded RNG. Everything that decides the stream — the RNG state and, per
source, the file, the byte offset in it and the epoch — is in `state_dict()`, so a run resumed from a
checkpoint continues with exactly the documents the uninterrupted run would have seen.
"""

from __future__ import annotations

import glob
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from havoc.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def resolve_path(path: str, base: Path | None = None) -> str:
    """`pkg:REL` names a file inside the installed havoc package; relative paths are taken from `base`."""
    if path.startswith("pkg:"):
        return str(PACKAGE_DIR / path[4:])
    if base is not None and not Path(path).is_absolute():
        return str(base / path)
    return path


@dataclass
class Source:
    """One weighted source: files (paths or globs) and how to read them."""

    name: str
    paths: list[str]
    weight: float = 1.0
    max_doc_chars: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ConfigError(f"data source {self.name!r}: weight must be positive, got {self.weight!r}")
        files: list[str] = []
        for pattern in self.paths:
            matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
            matches = [m for m in matches if Path(m).is_file()]
            if not matches:
                raise ConfigError(f"data source {self.name!r}: {pattern!r} matches no file")
            files.extend(matches)
        self.files = files
        self.file_index = 0
        self.offset = 0  # byte offset of the next document in files[file_index]
        self.epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"files": list(self.files), "file_index": self.file_index, "offset": self.offset, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["files"] != self.files:
            raise ConfigError(
                f"data source {self.name!r}: the checkpoint was written over files {state['files'][:3]}..., "
                f"this config names {self.files[:3]}...; resume with the same data"
            )
        self.file_index, self.offset, self.epoch = state["file_index"], state["offset"], state["epoch"]

    def next_document(self) -> str | dict:
        """The next document (a str, or a dict for JSONL records); wraps around at the end (next epoch)."""
        for _ in range(2 * len(self.files) + 1):
            doc = self._read_one()
            if doc is not None:
                return doc
            self.file_index += 1
            self.offset = 0
            if self.file_index == len(self.files):
                self.file_index = 0
                self.epoch += 1
        raise ConfigError(f"data source {self.name!r}: its files {self.files[:3]} hold no documents")

    def _read_one(self) -> str | dict | None:
        path = self.files[self.file_index]
        jsonl = path.endswith(".jsonl")
        with open(path, "rb") as f:
            f.seek(self.offset)
            if jsonl:
                while True:
                    line = f.readline()
                    if not line:
                        return None
                    self.offset = f.tell()
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise ConfigError(f"{path}: invalid JSON at byte {self.offset - len(line)}: {e}") from None
                        if not isinstance(record, dict):
                            raise ConfigError(f"{path}: each line must be a JSON object")
                        return record
            parts: list[bytes] = []
            size = 0
            while True:
                line = _readline_utf8(f, self.max_doc_chars - size)
                if not line:
                    break
                if not line.strip():
                    if parts:
                        self.offset = f.tell()
                        break
                    continue
                parts.append(line)
                size += len(line)
                self.offset = f.tell()
                if size >= self.max_doc_chars:
                    break
            if not parts:
                self.offset = f.tell()
                return None
            return b"".join(parts).decode("utf-8", errors="replace").rstrip("\n")


def _readline_utf8(f, limit: int) -> bytes:
    """f.readline(limit), ending on a UTF-8 character boundary (a cut character is left for the next read)."""
    line = f.readline(max(1, limit))
    if line and not line.endswith(b"\n"):
        cut = len(line)
        while cut > 0 and cut > len(line) - 4 and (line[cut - 1] & 0xC0) == 0x80:
            cut -= 1  # back over continuation bytes to the lead byte
        if cut > 0 and line[cut - 1] >= 0xC0:  # a lead byte: is its character complete?
            need = 2 if line[cut - 1] < 0xE0 else 3 if line[cut - 1] < 0xF0 else 4
            if len(line) - (cut - 1) < need:
                f.seek(cut - 1 - len(line), 1)
                line = line[: cut - 1]
    return line


class Mixture:
    """Documents drawn from weighted sources, deterministic from `seed`, resumable (see module doc)."""

    def __init__(self, sources: list[Source], seed: int = 0) -> None:
        if not sources:
            raise ConfigError("data: at least one source is needed")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"data: source names must be unique, got {names}")
        self.sources = sources
        self.weights = [s.weight for s in sources]
        self.rng = random.Random(seed)

    def next_document(self) -> tuple[str, str | dict]:
        """(source name, document)."""
        source = self.rng.choices(self.sources, weights=self.weights)[0] if len(self.sources) > 1 else self.sources[0]
        return source.name, source.next_document()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state_to_json(self.rng.getstate()), "sources": {s.name: s.state_dict() for s in self.sources}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {s.name for s in self.sources} ^ set(state["sources"])
        if missing:
            raise ConfigError(f"data: the checkpoint's sources {sorted(state['sources'])} differ from the config's")
        self.rng.setstate(_rng_state_from_json(state["rng"]))
        for s in self.sources:
            s.load_state_dict(state["sources"][s.name])


def _rng_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
