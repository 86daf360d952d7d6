"""The answer's wording, built from tool results: every figure in it is a tool's, never the model's.

`summarize(tool, operation, result)` gives the line fed back into the model's context after a call and
the final answer's figures, as each tool words them (havoc/tools/summaries.py); `fmt` writes numbers to four
significant digits (what verification traces). `refusal` and `withheld` are what PRIME answers instead of
figures no tool computed.
"""

from __future__ import annotations

from havoc.tools.summaries import NO_TOOL
from havoc.tools.summaries import figure as fmt  # noqa: F401  (PRIME's name for it)


def refusal(why: str) -> str:
    """What PRIME answers when no tool fits (or the prompt's data cannot be read): no figures of its own."""
    return f"{NO_TOOL}: {why}. PRIME gives no figures it cannot compute with a tool."


def withheld() -> str:
    """The answer in place of a model's reply whose figures trace to no tool and not to the prompt."""
    return ("No answer: the model's reply (shown above, unverified) gives figures that no tool computed and the "
            "prompt does not state, so it is not presented as the answer.")


def is_refusal(answer: str) -> bool:
    """Whether an answer is PRIME saying no tool fits (or that no tool result could be had)."""
    return answer.startswith((NO_TOOL, "No answer"))


def summarize(tool: str, operation: str | None, result: dict, args: dict | None = None, registry=None) -> str:
    """One or two sentences with the result's key figures and the tool's own interpretation, as the tool words
    them (`ToolSpec.summarize`, havoc/tools/summaries.py).

    Args:
        tool, operation: the call's tool and operation.
        result: the tool's result.
        args: the call's arguments (an evaluated expression is shown as written).
        registry: the registry the tool is in (default: the built-in one).
    """
    if registry is None:
        from havoc.tools import default_registry

        registry = default_registry()
    return registry.summarize(tool, operation, result, args)
