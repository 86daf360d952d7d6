"""PRIME: budget-routed reasoning over the model and the tools (pure Python).

    from havoc.prime import generate_with_prime
    out = generate_with_prime("Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]")
    print(out.text)            # the visible reasoning, tool calls and results
    print(out.answer)          # figures from the tools
    print(out.verification)    # json_valid, args_match_prompt, answer_traceable, recoveries

Modules: parse (what the prompt states), router (MICRO/LIGHT/MEDIUM/HEAVY and task type), graph (the
subgoal DAG), engine (paged-cache contexts, forks, structured decoding with llguidance), workspace,
verify, answer, pipeline (`generate_with_prime`).
"""

from havoc.prime.engine import Context, Engine
from havoc.prime.graph import OperatorGraph, Subgoal, build_graph
from havoc.prime.parse import TaskSpec, numbers_in, read_task
from havoc.prime.pipeline import PrimeResult, generate_with_prime
from havoc.prime.router import BUDGETS, Route, RouterConfig, route
from havoc.prime.workspace import Entry, Workspace

__all__ = ["BUDGETS", "Context", "Engine", "Entry", "OperatorGraph", "PrimeResult", "Route", "RouterConfig", "Subgoal",
           "TaskSpec", "Workspace", "build_graph", "generate_with_prime", "numbers_in", "read_task", "route"]
