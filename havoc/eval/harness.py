"""The evaluation harness: PRIME against plain generation and self-consistency at the same token budget.

Per task and method it records whether the answer is right (the expected figures, computed by the tools,
appear in it to at least three significant digits; or the expected keywords do), the tokens the model
generated and the seconds taken; for PRIME also the share of the model's own tool calls (first tries and
re-generations) that were valid and matched the prompt, and whether verification passed. `format_table` prints the summary, `run_eval(...)["summary"]` is the JSON.

Methods:
  - prime: `generate_with_prime` with the router's budget (or the one given);
  - plain: the model alone, greedy, `max_new_tokens`;
  - self_consistency: `samples` sampled answers (temperature 0.7) sharing `max_new_tokens` between them,
    decoded as forks of one prompt context; the answer whose last number most samples agree on wins.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from havoc.errors import PrimeError
from havoc.eval.sets import Task, TaskSet, expected, get_set
from havoc.prime.parse import NUMBER_RE
from havoc.prime.verify import traces_to

METHODS = ("prime", "plain", "self_consistency")


def _sig_digits(shown: str) -> int:
    mantissa = shown.lower().lstrip("+-").split("e")[0]
    return len(mantissa.replace(".", "").lstrip("0"))


def is_correct(answer: str, want: dict) -> bool:
    """Whether `answer` carries the expected figures (each to >= 3 significant digits, or exactly) or keywords;
    for a task no tool fits, whether PRIME said so (and gave no figures)."""
    if "refuse" in want:
        from havoc.prime.answer import is_refusal

        return is_refusal(answer)
    if "keywords" in want:
        low = answer.lower()
        return all(k.lower() in low for k in want["keywords"])
    shown = [m.group(0).lstrip("+") for m in NUMBER_RE.finditer(answer)]
    for name, value in want["figures"].items():
        # a p-value under fp64's reach is written "p < 1e-16" (tools' fmt_p), which is what it is
        ok = "p_value" in name and 0 <= value < 1e-16 and "p < 1e-16" in answer
        for s in shown:
            for cand in (s, s.lstrip("-")) if s.startswith("-") else (s,):
                if float(cand) == value or (_sig_digits(cand) >= 3 and traces_to(cand, value)):
                    ok = True
        if not ok:
            return False
    return True


MAX_SAMPLES = 64  # forks of one prompt; each gets max_new_tokens / samples tokens


def check_samples(samples: int) -> int:
    """`samples` as an integer in [1, MAX_SAMPLES], or a PrimeError naming it."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise PrimeError(f"samples must be an integer in [1, {MAX_SAMPLES}], got {samples!r}")
    return samples


def self_consistency(prompt: str, llm, max_new_tokens: int, samples: int = 3, temperature: float = 0.7,
                     seed: int = 0) -> dict:
    """`samples` answers sharing `max_new_tokens`, decoded as forks of one prompt; majority vote on the last number."""
    from havoc.prime.parse import numbers_in
    from havoc.prime.pipeline import engine_for

    check_samples(samples)
    engine = engine_for(llm)
    ids = engine.encode(llm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True))
    root = engine.start(ids)
    forks = []
    try:
        engine.prefill(root)  # the prompt once; the samples fork it
        forks = [root.fork() for _ in range(samples)]
        gens = engine.generate_batch(forks, max(1, max_new_tokens // samples), temperature=temperature, seed=seed,
                                     repetition_penalty=1.1)
    finally:
        for c in [root, *forks]:
            c.free()
    texts = [g.text.strip() for g in gens]
    finals = [numbers_in(t)[-1] if numbers_in(t) else None for t in texts]
    votes = Counter(f for f in finals if f is not None)
    answer = texts[0]
    if votes:
        winner = votes.most_common(1)[0][0]
        answer = texts[finals.index(winner)]
    return {"answer": answer, "samples": texts, "tokens": sum(len(g.ids) for g in gens)}


def run_task(task: Task, method: str, llm, *, max_new_tokens: int, budget: str | None = None, samples: int = 3,
             seed: int = 0, want: dict | None = None, on_text: Callable[[str], None] | None = None) -> dict:
    """One task under one method; returns its row of the report."""
    from havoc.prime import generate_with_prime

    want = want if want is not None else expected(task)
    t0 = time.perf_counter()
    row = {"id": task.id, "method": method}
    if method == "self_consistency":
        out = self_consistency(task.prompt, llm, max_new_tokens, samples, seed=seed)
        row.update(answer=out["answer"], tokens=out["tokens"], tool_calls=0, attempts=0, attempts_valid=0,
                   verified=None)
    elif method in ("prime", "plain"):
        res = generate_with_prime(task.prompt, enable_prime=method == "prime", max_new_tokens=max_new_tokens,
                                  llm=llm, budget=budget, seed=seed, on_text=on_text)
        row.update(answer=res.answer, tokens=res.stats["generated_tokens"], budget=res.routing["budget"],
                   tool_calls=res.verification["tool_calls"], attempts=res.verification["model_attempts"],
                   attempts_valid=res.verification["model_attempts_valid"],
                   verified=res.verification["passed"] if method == "prime" else None,
                   recovered=res.verification["recovered"])
    else:
        raise PrimeError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["correct"] = is_correct(row["answer"], want)
    return row


def summarize(rows: Sequence[dict], methods: Sequence[str]) -> dict:
    out = {}
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        attempts = sum(r["attempts"] for r in rs)
        verified = [r["verified"] for r in rs if r["verified"] is not None]
        out[m] = {
            "tasks": len(rs),
            "accuracy": round(sum(r["correct"] for r in rs) / len(rs), 4),
            # share of the tool calls the model wrote (first tries and re-generations) that were valid JSON
            # under the schema, ran, and matched the prompt
            "tool_call_validity": round(sum(r["attempts_valid"] for r in rs) / attempts, 4) if attempts else None,
            "verification_pass_rate": round(sum(verified) / len(verified), 4) if verified else None,
            "tokens_per_task": round(sum(r["tokens"] for r in rs) / len(rs), 1),
            "seconds_per_task": round(sum(r["seconds"] for r in rs) / len(rs), 2),
        }
    return out


def run_eval(task_set: str | TaskSet, *, llm=None, methods: Sequence[str] = METHODS, max_new_tokens: int = 256,
             budget: str | None = None, samples: int = 3, seed: int = 0, limit: int | None = None,
             on_row: Callable[[dict], None] | None = None) -> dict:
    """Run every task of a set under each method.

    Args:
        task_set: a `TaskSet`, a registered name, "smoke", or a .json/.jsonl file.
        llm: the model (default SmolLM2-135M-Instruct).
        methods: any of "prime", "plain", "self_consistency".
        max_new_tokens: the token budget every method gets per task.
        budget: force PRIME's budget (MICRO/LIGHT/MEDIUM/HEAVY).
        samples: answers self-consistency draws (sharing the token budget).
        limit: run only the first `limit` tasks.
        on_row: called with each row as it is done (progress).

    Returns:
        {"set", "max_new_tokens", "summary": {method: figures}, "rows": [...]}.
    """
    from havoc.prime.pipeline import default_llm

    ts = get_set(task_set) if isinstance(task_set, str) else task_set
    if not isinstance(ts, TaskSet):
        raise PrimeError(f"task_set must be a name or a TaskSet, got {type(task_set).__name__}")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise PrimeError(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise PrimeError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if "self_consistency" in methods:
        check_samples(samples)  # before the first task: a billion forks of one prompt hung the whole run
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise PrimeError(f"limit must be a positive integer, got {limit!r}")
    tasks = ts.tasks[:limit] if limit else ts.tasks
    wants = {t.id: expected(t) for t in tasks}  # every expected answer is checked before the model runs
    llm = llm if llm is not None else default_llm()
    rows = []
    for task in tasks:
        for m in methods:
            row = run_task(task, m, llm, max_new_tokens=max_new_tokens, budget=budget, samples=samples, seed=seed,
                           want=wants[task.id])
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return {"set": ts.name, "tasks": len(tasks), "max_new_tokens": max_new_tokens, "budget": budget,
            "summary": summarize(rows, methods), "rows": rows}


def format_table(report: dict) -> str:
    """The summary as a text table."""
    head = ("method", "accuracy", "tool-call validity", "verification pass", "tokens/task", "s/task")
    lines = [f"set {report['set']}: {report['tasks']} tasks, {report['max_new_tokens']} new tokens per task and method",
             "  ".join(f"{h:>18}" for h in head)]
    for m, s in report["summary"].items():
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.0f}%"

        cells = (m, pct(s["accuracy"]), pct(s["tool_call_validity"]), pct(s["verification_pass_rate"]),
                 f"{s['tokens_per_task']:.0f}", f"{s['seconds_per_task']:.1f}")
        lines.append("  ".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the reading alone
# What a reading of a prompt leads to, without a model: the call PRIME would recover from the prompt is run
# and its summary (the answer's figures) scored. "model_alone" is the old failure of issue 15: no tool was
# read, so the model's own figures would have been the answer.
OUTCOMES = ("right", "wrong_tool", "wrong_operation", "wrong_data", "tool_error", "refused", "model_alone")
_CHOICES = ("operation", "kind", "chart", "test")


def read_row(task: Task, reader: Callable | None = None, registry=None, want: dict | None = None) -> dict:
    """One task scored on the prompt's reading alone (see `run_reading`)."""
    from havoc.prime.answer import refusal, summarize
    from havoc.prime.parse import read_task
    from havoc.tools import default_registry

    reader = reader or read_task
    registry = registry or default_registry()
    want = want if want is not None else expected(task)
    spec = reader(task.prompt)
    gold = task.check
    row = {"id": task.id, "family": task.id.split("/", 1)[0], "gold_tool": gold.get("tool"),
           "gold_operation": (gold.get("args") or {}).get("operation"), "tool": spec.tool,
           "operation": spec.args.get("operation") if spec.tool else None, "answer": ""}
    why = getattr(spec, "refusal", None)
    if spec.tool is None:
        row["outcome"] = ("right" if "refuse" in want else "refused") if why else "model_alone"
        row["answer"] = refusal(why) if why else ""
        return row
    out = registry.execute(spec.tool, spec.args)
    if not out["success"]:
        row.update(outcome="tool_error", error=out["error"])
        return row
    row["answer"] = summarize(spec.tool, spec.args.get("operation"), out["result"], spec.args, registry=registry)
    if "refuse" in want or spec.tool != gold["tool"]:  # a retrieval with no relevant passage says so
        row["outcome"] = "right" if "refuse" in want and is_correct(row["answer"], want) else "wrong_tool"
    elif is_correct(row["answer"], want):
        row["outcome"] = "right"
    elif any(str(spec.args.get(k, "")).lower() != str(gold["args"].get(k, "")).lower() for k in _CHOICES
             if isinstance(gold["args"].get(k, ""), str)):
        row["outcome"] = "wrong_operation"
    else:
        row["outcome"] = "wrong_data"
    return row


def run_reading(task_set: str | TaskSet, reader: Callable | None = None) -> dict:
    """Score a task set on the prompt reading alone: read each prompt, run the call read, compare.

    Args:
        task_set: a `TaskSet` or a registered name.
        reader: the prompt reader (default `havoc.prime.read_task`; any function returning a `TaskSpec`).

    Returns:
        {"set", "tasks", "summary": {...}, "families": {family: {"tasks", "right"}}, "rows": [...]}; the
        summary counts each outcome and gives accuracy, the share of tool tasks where a tool was read
        (tool_when_needed) and the rows where the model's own figures would have been the answer.
    """
    ts = get_set(task_set) if isinstance(task_set, str) else task_set
    rows = [read_row(t, reader) for t in ts.tasks]
    needed = [r for r in rows if r["gold_tool"] is not None]
    counts = Counter(r["outcome"] for r in rows)
    summary = {"tasks": len(rows), **{k: counts.get(k, 0) for k in OUTCOMES},
               "accuracy": round(counts.get("right", 0) / len(rows), 4) if rows else None,
               "tool_when_needed": round(sum(r["tool"] is not None for r in needed) / len(needed), 4) if needed else None}
    families: dict[str, dict] = {}
    for r in rows:
        f = families.setdefault(r["family"], {"tasks": 0, "right": 0})
        f["tasks"] += 1
        f["right"] += r["outcome"] == "right"
    return {"set": ts.name, "tasks": len(rows), "summary": summary, "families": families, "rows": rows}


def format_reading(report: dict) -> str:
    """`run_reading`'s report as text: the outcome counts, then right/total per family."""
    s = report["summary"]
    lines = [f"set {report['set']}: {s['tasks']} tasks read without a model",
             f"  right {s['right']}/{s['tasks']} ({100 * (s['accuracy'] or 0):.0f}%), tool read when needed "
             f"{100 * (s['tool_when_needed'] or 0):.0f}%",
             "  " + ", ".join(f"{k} {s[k]}" for k in OUTCOMES[1:])]
    for name, f in report["families"].items():
        lines.append(f"  {name:24} {f['right']:3}/{f['tasks']}")
    return "\n".join(lines)
