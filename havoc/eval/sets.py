"""Task sets: a registry with the shipped smoke sets, and loading of one's own from JSON.

A task is {"id", "prompt", "check"}; its check names a tool call whose result holds the expected answer:

    {"tool": "statistics", "args": {...}, "fields": ["statistic", "p_value"]}   # figures the answer must show
    {"tool": "rag_helper", "args": {...}, "keywords": ["probability"]}          # words the answer must use
    {"refuse": "no tool forecasts"}                                             # no tool fits: PRIME must say so

The expected figures are computed by running the check's call (`expected`), so they are the tools' values,
never numbers copied into this file; keywords must occur in the tool's own result, or the task is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havoc.errors import PrimeError


@dataclass
class Task:
    id: str
    prompt: str
    check: dict

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise PrimeError(f"a task needs a non-empty string id, got {self.id!r}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise PrimeError(f"task {self.id}: the prompt is empty")
        c = self.check
        if isinstance(c, dict) and set(c) == {"refuse"}:
            if not isinstance(c["refuse"], str) or not c["refuse"]:
                raise PrimeError(f'task {self.id}: a refusal check is {{"refuse": "why no tool fits"}}')
            return
        if not isinstance(c, dict) or not isinstance(c.get("tool"), str) or not isinstance(c.get("args"), dict):
            raise PrimeError(f'task {self.id}: check must be {{"tool": NAME, "args": {{...}}, "fields" or "keywords"}}')
        if bool(c.get("fields")) == bool(c.get("keywords")):
            raise PrimeError(f"task {self.id}: check needs exactly one of fields (figures) or keywords (words)")
        unknown = set(c) - {"tool", "args", "fields", "keywords"}
        if unknown:
            raise PrimeError(f"task {self.id}: unknown check keys {sorted(unknown)}")


@dataclass
class TaskSet:
    name: str
    description: str
    tasks: list[Task] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tasks)


def _get(value: Any, path: str) -> Any:
    """`value` at a path such as "charts[0].ucl" or "coefficients[1].estimate"."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            value = value[part]
    return value


def expected(task: Task, registry=None) -> dict:
    """The task's expected answer, from its check's tool call.

    Returns:
        {"figures": {path: number}}, {"keywords": [...]} or {"refuse": why}.

    Raises:
        PrimeError: the call fails, a field is missing or not a number, or a keyword is not in the result.
    """
    from havoc.tools import default_registry

    c = task.check
    if "refuse" in c:
        return {"refuse": c["refuse"]}
    registry = registry or default_registry()
    out = registry.execute(c["tool"], c["args"])
    if not out["success"]:
        raise PrimeError(f"task {task.id}: the check's call failed: {out['error']}")
    if c.get("keywords"):
        blob = json.dumps(out["result"]).lower()
        missing = [k for k in c["keywords"] if k.lower() not in blob]
        if missing:
            raise PrimeError(f"task {task.id}: keywords {missing} are not in the tool's result")
        return {"keywords": list(c["keywords"])}
    figures = {}
    for path in c["fields"]:
        try:
            v = _get(out["result"], path)
        except (KeyError, IndexError, TypeError):
            raise PrimeError(f"task {task.id}: the result has no field {path!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PrimeError(f"task {task.id}: field {path!r} is {v!r}, not a number")
        figures[path] = v
    return {"figures": figures}


def _stat(args: dict, *fields: str) -> dict:
    return {"tool": "statistics", "args": args, "fields": list(fields)}


def _dsl(args: dict, *fields: str) -> dict:
    return {"tool": "dsl_executor", "args": args, "fields": list(fields)}


def _factors(*names: str) -> list[dict]:
    return [{"name": n, "low": -1, "high": 1} for n in names]


_SMOKE = {
    "ttest": ("t-tests: Student, paired, Welch", [
        Task("ttest-student", "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]",
             _stat({"operation": "t_test", "kind": "two_sample", "x": [1, 2, 3, 4, 5], "y": [2, 3, 4, 5, 6]},
                   "statistic", "p_value")),
        Task("ttest-paired", "Run a paired t-test on before [12.1, 11.8, 13.0, 12.6, 12.9] and after "
             "[11.5, 11.9, 12.2, 12.0, 12.1].",
             _stat({"operation": "t_test", "kind": "paired", "x": [12.1, 11.8, 13.0, 12.6, 12.9],
                    "y": [11.5, 11.9, 12.2, 12.0, 12.1]}, "statistic", "p_value")),
        Task("ttest-welch", "Welch t-test: group A [20.1, 22.3, 19.8, 21.5] vs group B [25.2, 24.8, 26.1, 23.9, 25.5]",
             _stat({"operation": "t_test", "kind": "welch", "x": [20.1, 22.3, 19.8, 21.5],
                    "y": [25.2, 24.8, 26.1, 23.9, 25.5]}, "statistic", "p_value")),
    ]),
    "anova": ("one-way ANOVA", [
        Task("anova-3", "One-way ANOVA on three groups: [4.1, 4.5, 3.9, 4.3], [5.2, 5.6, 5.1, 5.4], [6.3, 6.0, 6.6, 6.2]",
             _stat({"operation": "anova", "groups": [[4.1, 4.5, 3.9, 4.3], [5.2, 5.6, 5.1, 5.4], [6.3, 6.0, 6.6, 6.2]]},
                   "f", "p_value")),
        Task("anova-small", "Is there a difference between these groups (ANOVA)? [10, 12, 11], [14, 15, 13], [10, 11, 12]",
             _stat({"operation": "anova", "groups": [[10, 12, 11], [14, 15, 13], [10, 11, 12]]}, "f", "p_value")),
    ]),
    "regression": ("simple linear regression", [
        Task("regression-5", "Fit a linear regression of y = [2.1, 3.9, 6.2, 7.8, 10.1] on x = [1, 2, 3, 4, 5]",
             _stat({"operation": "regression", "y": [2.1, 3.9, 6.2, 7.8, 10.1], "predictors": {"x": [1, 2, 3, 4, 5]}},
                   "coefficients[1].estimate", "r_squared")),
        Task("regression-4", "Regression: x = [10, 20, 30, 40], y = [15, 24, 37, 45]",
             _stat({"operation": "regression", "y": [15, 24, 37, 45], "predictors": {"x": [10, 20, 30, 40]}},
                   "coefficients[1].estimate", "r_squared")),
    ]),
    "doe": ("designs of experiments: run counts", [
        Task("doe-full", "Create a 2^3 full factorial design for factors A, B, C",
             _dsl({"operation": "full_factorial", "factors": _factors("A", "B", "C"), "randomize": False}, "n_runs")),
        Task("doe-bbd", "Box-Behnken design for 3 factors with 3 center points",
             _dsl({"operation": "box_behnken", "factors": _factors("A", "B", "C"), "center": 3, "randomize": False},
                  "n_runs")),
        Task("doe-pb", "Plackett-Burman screening design for 7 factors in 8 runs",
             _dsl({"operation": "plackett_burman", "factors": _factors(*"ABCDEFG"), "runs": 8, "randomize": False},
                  "n_runs")),
    ]),
    "spc": ("SPC charts and constants", [
        Task("spc-imr", "Individuals control chart (I-MR) for [10.2, 9.8, 10.5, 10.1, 9.9, 10.3, 10.0]: what are the limits?",
             _dsl({"operation": "control_chart", "chart": "imr", "data": [10.2, 9.8, 10.5, 10.1, 9.9, 10.3, 10.0]},
                  "charts[0].center", "charts[0].ucl", "charts[0].lcl")),
        Task("spc-c", "c chart for defect counts [3, 5, 2, 6, 4, 3, 7]",
             _dsl({"operation": "control_chart", "chart": "c", "data": [3, 5, 2, 6, 4, 3, 7]},
                  "charts[0].center", "charts[0].ucl")),
        Task("spc-constants", "What are the control chart constants for subgroup size 5?",
             _dsl({"operation": "constants", "n": 5}, "A2", "D4")),
    ]),
    "definitions": ("definitions from the knowledge corpus", [
        Task("def-pvalue", "What is a p-value?",
             {"tool": "rag_helper", "args": {"query": "What is a p-value?", "top_k": 1},
              "keywords": ["probability", "null hypothesis"]}),
        Task("def-bbd", "What are Box-Behnken designs?",
             {"tool": "rag_helper", "args": {"query": "What are Box-Behnken designs?", "top_k": 1},
              "keywords": ["three levels", "centre points"]}),
        Task("def-paired", "Explain the paired t-test.",
             {"tool": "rag_helper", "args": {"query": "Explain the paired t-test.", "top_k": 1},
              "keywords": ["differences"]}),
    ]),
    "arithmetic": ("arithmetic", [
        Task("arith-1", "What is 17*23+4?",
             {"tool": "symbolic", "args": {"operation": "evaluate", "expression": "17*23+4"}, "fields": ["numeric"]}),
        Task("arith-2", "Compute (12.5*4)/2 - 3",
             {"tool": "symbolic", "args": {"operation": "evaluate", "expression": "(12.5*4)/2 - 3"}, "fields": ["numeric"]}),
        Task("arith-3", "What is 2^10 - 24?",
             {"tool": "symbolic", "args": {"operation": "evaluate", "expression": "2^10 - 24"}, "fields": ["numeric"]}),
    ]),
}

_REGISTRY: dict[str, TaskSet] = {name: TaskSet(name, desc, tasks) for name, (desc, tasks) in _SMOKE.items()}

# The toolbox of issue 22 asked in plain words, one published worked example per operation family (the
# figures are the tools' own, checked against the printed ones in tests/test_tools_toolbox.py). Not part of
# "smoke": `havoc eval toolbox` runs it.
_TOOLBOX = [
    Task("ewma-nist", "Make an EWMA chart of [52.0, 47.0, 53.0, 49.3, 50.1, 47.0, 51.0, 50.1, 51.2, 50.5, 49.6, 47.6, "
         "49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1] with lambda = 0.3, target 50 and sigma = 2.0539",
         _dsl({"operation": "ewma_chart", "data": [52.0, 47.0, 53.0, 49.3, 50.1, 47.0, 51.0, 50.1, 51.2, 50.5, 49.6,
                                                   47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1],
               "lambda": 0.3, "target": 50, "sigma": 2.0539}, "ucl_steady", "lcl_steady")),
    Task("capability-nist", "What is the process capability if USL = 20, LSL = 8, the mean is 16 and sigma = 2?",
         _dsl({"operation": "capability", "mean": 16, "sigma": 2, "lsl": 8, "usl": 20}, "cpk")),
    Task("sample-size", "What sample size per group is needed to detect a difference of 1 between two groups with "
         "sd 1 at alpha 0.05 and power 0.9?",
         _stat({"operation": "power", "test": "two_sample_t", "effect": 1, "sd": 1, "power": 0.9, "alpha": 0.05},
               "n")),
    Task("proportion", "Is the defect rate below 5%? We found 4 defectives out of 200.",
         _stat({"operation": "proportion_test", "successes": 4, "trials": 200, "p0": 0.05, "alternative": "less"},
               "statistic", "p_value")),
    Task("f-test", "Are the variances equal? F test on [1.2, 1.5, 1.1, 1.9] and [2.2, 2.9, 1.5, 3.1]",
         _stat({"operation": "variance_test", "kind": "f", "x": [1.2, 1.5, 1.1, 1.9], "y": [2.2, 2.9, 1.5, 3.1]},
               "statistic", "p_value")),
    Task("mann-whitney", "Mann-Whitney test: [19, 22, 16, 29, 24] vs [20, 11, 17, 12]",
         _stat({"operation": "rank_test", "kind": "mann_whitney", "x": [19, 22, 16, 29, 24], "y": [20, 11, 17, 12]},
               "p_value")),
    Task("correlation", "What is the correlation between x = [44.4, 45.9, 41.9, 53.3, 44.7, 44.1, 50.7, 45.2, 60.1] "
         "and y = [2.6, 3.1, 2.5, 5.0, 3.6, 4.0, 5.2, 2.8, 3.8]?",
         _stat({"operation": "correlation", "x": [44.4, 45.9, 41.9, 53.3, 44.7, 44.1, 50.7, 45.2, 60.1],
                "y": [2.6, 3.1, 2.5, 5.0, 3.6, 4.0, 5.2, 2.8, 3.8]}, "r", "p_value")),
    Task("weibull-nist", "Fit a Weibull to the failure times [54, 187, 216, 240, 244, 335, 361, 373, 375, 386]; 10 "
         "units were removed unfailed at 500 hours. What is the B10 life?",
         _stat({"operation": "life_data", "times": [54, 187, 216, 240, 244, 335, 361, 373, 375, 386, 500],
                "censored": [False] * 10 + [True], "counts": [1] * 10 + [10]}, "parameters.beta", "b10.life")),
    Task("sampling-plan", "Single sampling plan n = 89, c = 2, lot size 10000: what is the probability of acceptance "
         "at p = [0.01, 0.02]?",
         _dsl({"operation": "sampling_plan", "n": 89, "c": 2, "lot_size": 10000, "p": [0.01, 0.02]}, "oc[0].pa")),
]
_REGISTRY["toolbox"] = TaskSet("toolbox", "issue 22's operations asked in plain words (not in smoke)", _TOOLBOX)


def _register_understand() -> None:
    from havoc.eval.understand import understand_sets

    for ts in understand_sets():
        _REGISTRY[ts.name] = ts


_register_understand()


def register_set(task_set: TaskSet, *, replace: bool = False) -> None:
    """Add a task set to the registry (by its name)."""
    if not isinstance(task_set, TaskSet):
        raise PrimeError(f"register_set takes a TaskSet, got {type(task_set).__name__}")
    if task_set.name in _REGISTRY and not replace:
        raise PrimeError(f"a task set named {task_set.name!r} is already registered")
    _REGISTRY[task_set.name] = task_set


def list_sets() -> list[str]:
    """Registered set names, plus "smoke" (every shipped set)."""
    return sorted(_REGISTRY) + ["smoke"]


def load_set(path: str | Path) -> TaskSet:
    """A task set from a JSON file ({"name", "description", "tasks": [...]}) or JSONL (one task a line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PrimeError(f"cannot read task set {path}: {e}") from None
    try:
        if path.suffix == ".jsonl":
            data = {"name": path.stem, "description": str(path), "tasks": [json.loads(l) for l in text.splitlines() if l.strip()]}
        else:
            data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise PrimeError(f"{path} is not valid JSON: {str(e)[:200] or 'nested too deeply'}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise PrimeError(f'{path}: a task set is {{"name", "description", "tasks": [...]}} with at least one task')
    tasks = []
    for i, t in enumerate(data["tasks"]):
        if not isinstance(t, dict) or set(t) != {"id", "prompt", "check"}:
            raise PrimeError(f"{path}: task {i} must have exactly the keys id, prompt, check")
        tasks.append(Task(t["id"], t["prompt"], t["check"]))
    return TaskSet(str(data.get("name") or path.stem), str(data.get("description", "")), tasks)


def get_set(name: str) -> TaskSet:
    """A registered set by name, "smoke" (all shipped sets together), or a .json/.jsonl file."""
    if not isinstance(name, str) or not name:
        raise PrimeError("name a task set")
    if name == "smoke":
        return TaskSet("smoke", "every shipped smoke set", [t for s in _SMOKE for t in _REGISTRY[s].tasks])
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.endswith((".json", ".jsonl")):
        return load_set(name)
    raise PrimeError(f"unknown task set {name!r}; choose one of {', '.join(list_sets())} or give a .json file")
