"""The operator graph: the subgoals of a task as a DAG, run in dependency order.

A subgoal is one step: read the data, call a tool, check an assumption, argue, synthesise, conclude. Its
`deps` name the subgoals whose outputs it reads; `inputs` and `outputs` are filled as it runs. The graph
grows with the budget: LIGHT has 1-3 subgoals, MEDIUM adds assumption checks and the advocate / attack /
pragmatist debate, HEAVY adds a chrono-loop on the main computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from havoc.errors import PrimeError
from havoc.prime.router import Route


@dataclass
class Subgoal:
    """One node of the graph.

    Attributes:
        id: short name ("s1").
        kind: read, retrieve, compute, check, argue, synthesize, conclude or respond.
        goal: what the model is asked to reason about (shown in its `<reason>` lead-in).
        deps: ids of the subgoals it needs.
        tool: the tool it calls, or None.
        operation: the tool operation (for a discriminated tool).
        chrono: re-run under perturbed sampling until results agree (HEAVY).
        inputs, outputs: recorded as it runs.
    """

    id: str
    kind: str
    goal: str
    deps: list[str] = field(default_factory=list)
    tool: str | None = None
    operation: str | None = None
    chrono: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"


@dataclass
class OperatorGraph:
    subgoals: list[Subgoal]

    def __post_init__(self) -> None:
        ids = [s.id for s in self.subgoals]
        if len(set(ids)) != len(ids):
            raise PrimeError(f"subgoal ids repeat: {ids}")
        for s in self.subgoals:
            for d in s.deps:
                if d not in ids:
                    raise PrimeError(f"subgoal {s.id} depends on unknown subgoal {d!r}")
        self.order()  # refuses cycles now

    def __getitem__(self, sid: str) -> Subgoal:
        for s in self.subgoals:
            if s.id == sid:
                return s
        raise KeyError(sid)

    def __len__(self) -> int:
        return len(self.subgoals)

    def order(self) -> list[Subgoal]:
        """Subgoals in dependency order (Kahn's algorithm; ties keep their listed order).

        Raises:
            PrimeError: the dependencies have a cycle.
        """
        done: list[str] = []
        remaining = list(self.subgoals)
        while remaining:
            ready = [s for s in remaining if all(d in done for d in s.deps)]
            if not ready:
                raise PrimeError(f"the subgoals {[s.id for s in remaining]} depend on each other in a cycle")
            done.append(ready[0].id)
            remaining.remove(ready[0])
        return [self[i] for i in done]

    def to_list(self) -> list[dict]:
        return [{"id": s.id, "kind": s.kind, "goal": s.goal, "deps": s.deps, "tool": s.tool, "operation": s.operation,
                 "chrono": s.chrono, "status": s.status, "inputs": s.inputs, "outputs": s.outputs}
                for s in self.subgoals]


# What the model is asked to check before it trusts the main result, per operation: (tool args builder key, goal).
ASSUMPTIONS = {
    "t_test": "check that each group looks normal (Shapiro-Wilk) before trusting the t-test",
    "anova": "check that each group looks normal before trusting the ANOVA",
    "regression": "check that the response looks normal enough for OLS inference",
    "describe": "check the data for normality",
    "confidence_interval": "check the data for normality before a t interval",
}


def build_graph(route: Route) -> OperatorGraph:
    """The subgoals for a routed prompt.

    Args:
        route: the router's decision (budget, task type, the prompt's reading).

    Returns:
        The graph; MICRO and tool-less tasks get one `respond` subgoal.
    """
    task = route.task
    if route.budget == "MICRO" or task.tool is None:
        return OperatorGraph([Subgoal("s1", "respond", "answer the question directly")])
    op = task.operation or task.tool
    if task.tool == "rag_helper":
        subs = [Subgoal("s1", "retrieve", "find the definition in the knowledge corpus", tool="rag_helper"),
                Subgoal("s2", "conclude", "state the definition", deps=["s1"])]
    else:
        subs = [Subgoal("s1", "read", "identify the data and what is asked"),
                Subgoal("s2", "compute", f"compute the {op.replace('_', ' ')} with the {task.tool} tool", deps=["s1"],
                        tool=task.tool, operation=task.operation),
                Subgoal("s3", "conclude", "state the result", deps=["s2"])]
    if route.budget in ("MEDIUM", "HEAVY"):
        compute = subs[1] if task.tool != "rag_helper" else subs[0]
        conclude = subs[-1]
        if task.operation in ASSUMPTIONS and task.tool == "statistics":
            check = Subgoal("c1", "check", ASSUMPTIONS[task.operation], deps=["s1"], tool="statistics",
                            operation="normality")
            subs.insert(2, check)
        argue = Subgoal("a1", "argue", "advocate, attack and weigh the result", deps=[compute.id]
                        + [s.id for s in subs if s.kind == "check"])
        synth = Subgoal("a2", "synthesize", "settle the debate", deps=["a1"])
        conclude.deps = ["a2"]
        subs[-1:-1] = [argue, synth]
        if route.budget == "HEAVY":
            compute.chrono = True
    return OperatorGraph(subs)
