"""havoc.eval: task sets with tool-checked answers, and a harness that measures PRIME against plain
generation and self-consistency at the same token budget.

    from havoc.eval import run_eval, format_table
    report = run_eval("ttest")                # or "smoke", a registered set, a .json file
    print(format_table(report))
"""

from havoc.eval.harness import METHODS, format_table, is_correct, run_eval, run_task, self_consistency
from havoc.eval.sets import Task, TaskSet, expected, get_set, list_sets, load_set, register_set

__all__ = ["METHODS", "Task", "TaskSet", "expected", "format_table", "get_set", "is_correct", "list_sets", "load_set",
           "register_set", "run_eval", "run_task", "self_consistency"]
