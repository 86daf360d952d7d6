"""The workspace: what PRIME knows while it works, each entry with where it came from.

Entries are facts (stated by the prompt), partial results (tool outputs, model text) and constraints
(what the answer must respect: the data to use, the figures it may quote). `compress` keeps what the
answer needs: the final tool results, the facts they used and every flag.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("fact", "partial", "constraint", "flag")


@dataclass
class Entry:
    """One thing known, and its provenance (`prompt`, `tool:NAME#i`, `model:SUBGOAL`, `recovered:prompt`)."""

    kind: str
    key: str
    value: Any
    source: str
    subgoal: str | None = None


@dataclass
class Workspace:
    entries: list[Entry] = field(default_factory=list)

    def add(self, kind: str, key: str, value: Any, source: str, subgoal: str | None = None) -> Entry:
        if kind not in KINDS:
            raise ValueError(f"workspace entry kind must be one of {KINDS}, got {kind!r}")
        entry = Entry(kind, key, value, source, subgoal)
        self.entries.append(entry)
        return entry

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def get(self, key: str) -> Entry | None:
        """The latest entry with this key."""
        return next((e for e in reversed(self.entries) if e.key == key), None)

    def flags(self) -> list[str]:
        return [str(e.value) for e in self.of_kind("flag")]

    def compress(self, keep_results: list[str]) -> dict:
        """The workspace reduced to what the answer needs.

        Args:
            keep_results: keys of the tool results the answer quotes.

        Returns:
            {"facts": {key: value}, "results": {key: {"value", "source"}}, "flags": [...]}: the prompt's
            facts, the chosen results with their sources, and every flag.
        """
        results = {}
        for key in keep_results:
            e = self.get(key)
            if e is not None:
                results[key] = {"value": e.value, "source": e.source}
        return {"facts": {e.key: e.value for e in self.of_kind("fact")}, "results": results, "flags": self.flags()}

    def summarize(self) -> str:
        """A few lines a person reads: the facts the prompt gave, each result with its source, the flags."""
        lines = []
        for e in self.entries:
            if e.kind == "constraint":
                continue
            value = e.value if isinstance(e.value, str) else json.dumps(e.value, default=str, separators=(",", ":"))
            if len(value) > 160:
                value = value[:157] + "..."
            lines.append(f"{e.kind:7} {e.key}: {value}  [{e.source}]")
        return "\n".join(lines) if lines else "(empty workspace)"

    def to_list(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Workspace({len(self.entries)} entries: {json.dumps([e.key for e in self.entries])[:200]})"
