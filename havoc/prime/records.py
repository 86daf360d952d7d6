"""What a PRIME run records, as types: the model's tries at a tool call, the call, and the checks of
verification. PrimeResult and the "tool_call" event carry them as dicts (`to_dict`), the form the server,
the chat page and `havoc ask --json` already read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RESOLUTIONS = ("model", "regenerated", "recovered_from_prompt", "failed")


@dataclass
class Attempt:
    """One try by the model at a tool call.

    Attributes:
        text: the call as the model wrote it ("" when no try was made).
        tokens: tokens generated; forced: of those, tokens the grammar forced.
        json_valid: the text parsed as JSON under the schema.
        executed: it ran and the tool succeeded.
        problems: why it was not taken (empty when it was).
    """

    text: str = ""
    tokens: int = 0
    forced: int = 0
    json_valid: bool = False
    executed: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class ToolCall:
    """One tool call of a run, from the model's tries to its result.

    Attributes:
        index: 1-based, in the order the calls were resolved.
        subgoal: the subgoal that made it; tool, operation: what was called; label: e.g. "group 1".
        attempts: the model's tries.
        args: the arguments run (the model's, or the prompt's when recovered; None when it failed).
        resolution: model, regenerated, recovered_from_prompt or failed.
        result, summary, source: the tool's result, its answer line and its provenance ("tool:NAME#i").
        plot: the picture drawn, when asked for; error: the tool's error on recovered arguments.
    """

    index: int
    subgoal: str
    tool: str
    operation: str | None
    label: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    args: dict | None = None
    resolution: str = "failed"
    result: dict | None = None
    summary: str | None = None
    source: str | None = None
    plot: dict | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """The call has a result."""
        return self.resolution != "failed" and self.error is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "subgoal": self.subgoal, "tool": self.tool,
                               "operation": self.operation, "label": self.label,
                               "attempts": [asdict(a) for a in self.attempts], "args": self.args,
                               "resolution": self.resolution}
        for key in ("result", "summary", "source", "plot", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class Check:
    """One check of verification: its name, whether it passed, and what it found."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
