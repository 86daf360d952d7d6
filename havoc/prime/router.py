"""The router: how much reasoning a prompt gets (MICRO / LIGHT / MEDIUM / HEAVY) and what kind of task it is.

The budget comes from a score with named parts, each reported as a reason:

    score = tool_weight * [the task needs a tool] + number_weight * (numbers in the prompt)
            + word_weight * (words) + keyword_weight * (analysis keywords: compare, explain, why, ...)
            + part_weight * (extra questions or parts)

MICRO is a task without a tool below `light` (answered directly) or one no tool fits (PRIME says so); otherwise the score is compared with the
`medium` and `heavy` thresholds. All weights and thresholds live in `RouterConfig`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from havoc.errors import PrimeError
from havoc.prime.parse import TaskSpec, read_task

BUDGETS = ("MICRO", "LIGHT", "MEDIUM", "HEAVY")
KEYWORDS = ("compare", "explain", "why", "justify", "interpret", "assumption", "step by step", "thorough",
            "carefully", "robust", "verify", "significant", "recommend")


@dataclass
class RouterConfig:
    """Weights and thresholds of the router's score (see the module docstring)."""

    light: float = 1.0
    medium: float = 2.0
    heavy: float = 3.5
    tool_weight: float = 1.0
    number_weight: float = 0.05
    word_weight: float = 0.02
    keyword_weight: float = 0.75
    part_weight: float = 0.5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
                raise PrimeError(f"RouterConfig.{name} must be a number >= 0, got {value!r}")
        if not self.light <= self.medium <= self.heavy:
            raise PrimeError(
                f"RouterConfig thresholds must satisfy light <= medium <= heavy, got {self.light}, {self.medium}, {self.heavy}"
            )


@dataclass
class Route:
    """The router's decision.

    Attributes:
        budget: MICRO, LIGHT, MEDIUM or HEAVY.
        task_type: arithmetic, definition, statistics, doe, spc or general.
        score: the score the budget came from.
        reasons: one line per part of the decision.
        task: the prompt's reading (tool, stated arguments, numbers).
        forced: True when the caller chose the budget.
    """

    budget: str
    task_type: str
    score: float
    reasons: list[str]
    task: TaskSpec = field(repr=False)
    forced: bool = False

    def to_dict(self) -> dict:
        return {"budget": self.budget, "task_type": self.task_type, "score": round(self.score, 3),
                "reasons": list(self.reasons), "tool": self.task.tool, "operation": self.task.operation,
                "forced": self.forced}


def route(prompt: str, config: RouterConfig | None = None, *, budget: str | None = None) -> Route:
    """Choose the reasoning budget and task type of a prompt.

    Args:
        prompt: the user's request (non-empty text).
        config: weights and thresholds (default `RouterConfig()`).
        budget: force a budget (MICRO/LIGHT/MEDIUM/HEAVY, any case); the reasons still say what the score was.

    Returns:
        The `Route`.

    Raises:
        PrimeError: an empty prompt or an unknown budget.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PrimeError("the prompt is empty")
    config = config or RouterConfig()
    if budget is not None:
        if not isinstance(budget, str) or budget.upper() not in BUDGETS:
            raise PrimeError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        budget = budget.upper()
    task = read_task(prompt)
    low = prompt.lower()
    reasons = []
    if task.refusal:
        reasons.append(f"no tool fits: {task.refusal}")
    elif task.tool:
        reasons.append(f"task type {task.task_type}: matched {', '.join(repr(m) for m in task.matched)} -> tool "
                       f"{task.tool} ({task.operation})")
    else:
        reasons.append("task type general: no statistics, DOE, SPC, arithmetic or definition pattern matched")
    score = 0.0
    if task.tool:
        score += config.tool_weight
    n_numbers, n_words = len(task.numbers), len(low.split())
    score += config.number_weight * n_numbers + config.word_weight * n_words
    reasons.append(f"{n_numbers} numbers in {len(task.lists)} lists, {n_words} words")
    found = [k for k in KEYWORDS if re.search(rf"\b{k}", low)]
    if found:
        score += config.keyword_weight * len(found)
        reasons.append(f"analysis keywords: {', '.join(found)}")
    parts = max(0, low.count("?") - 1) + len(re.findall(r"\b(?:then|also|additionally)\b", low))
    if parts:
        score += config.part_weight * parts
        reasons.append(f"{parts} further parts or questions")
    if task.refusal:
        chosen = "MICRO"
        reasons.append("no tool to run: PRIME says so instead of answering with the model's own figures")
    elif not task.tool and score < config.light:
        chosen = "MICRO"
        reasons.append(f"score {score:.2f} < light {config.light:g} and no tool needed: answer directly")
    elif score >= config.heavy:
        chosen = "HEAVY"
        reasons.append(f"score {score:.2f} >= heavy {config.heavy:g}")
    elif score >= config.medium:
        chosen = "MEDIUM"
        reasons.append(f"score {score:.2f} >= medium {config.medium:g}")
    else:
        chosen = "LIGHT"
        reasons.append(f"score {score:.2f} < medium {config.medium:g}")
    if budget is not None:
        reasons.append(f"budget {budget} chosen by the caller (the score alone gives {chosen})")
        chosen = budget
    return Route(chosen, task.task_type, score, reasons, task, forced=budget is not None)
