"""The per-call report of issue 15: how well the model writes its own tool calls.

For every task whose gold is a tool call, the model's *first try* at PRIME's main call is scored: greedy,
decoded under the tool's JSON schema (llguidance), in exactly the context PRIME builds (`generate_with_prime`
is run, and the first attempt of the call its compute/retrieve subgoal made is taken). Each call is run with
the read step's lead on (the data PRIME read from the prompt written into the context before the call) and
off (the model copies from the prompt alone).

Per call:
  - schema_valid: the text parses and its args validate against the registry's schema of the tool it names;
  - tool_right / operation_right / choice_right: the tool, the operation, and the string choices of the gold
    call (kind, chart, test, method, ...) as the gold call has them;
  - exact: the arguments equal the gold call's (numbers to 1e-9, numeric lists order-sensitive; settings
    that only shape the output, `randomize`/`seed`/`plot`, and arguments equal to the schema's default are
    dropped from both sides first);
  - values / copied: the gold call's data values, and how many the model wrote at the same place;
  - invented: numbers in the call that are neither in the prompt (as written, or as a percentage) nor in the
    gold call;
  - dropped: gold data values the call does not contain anywhere (multiset);
  - executable: the call runs and its result gives the gold's checked figures to 3 significant digits (or
    the gold's keywords, for retrieval);
  - recovered: PRIME finally took the arguments from the prompt (regex recovery) for this call.
A task where PRIME wrote no call (the reader chose no tool, or a direct answer) counts as a call that is
wrong on every count. Rates carry Wilson 95% intervals.

The scoring is a pure function of (task, text); `run_calls` takes any `writer(task, lead) -> Written`, so a
test can feed known calls and check the known figures.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from havoc.errors import PrimeError
from havoc.eval.sets import Task, TaskSet, _get, expected, get_set
from havoc.tools._common import wilson_interval

Z95 = 1.959963984540054
# Arguments that shape the output, not the computation's figures: never part of "exact".
IGNORED = frozenset({"randomize", "seed", "plot"})
CHOICE_KEYS = ("kind", "chart", "test", "method", "alternative")
FLAGS = ("called", "schema_valid", "tool_right", "operation_right", "choice_right", "exact", "executable",
         "invented_any", "dropped_any", "recovered")
LEADS = {"on": (True,), "off": (False,), "both": (True, False)}
SHORT_LIST = 10  # the goal for short lists: calls whose longest gold list has at most this many values


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials (None when n is 0)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise PrimeError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    return wilson_interval(k, n, z)


@dataclass
class Written:
    """What a writer produced for one task: the first try's text (None: no call was made) and how PRIME
    finally resolved the call (model, regenerated, recovered_from_prompt, failed; None without a call)."""

    text: str | None
    resolution: str | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ scoring
def _prompt_numbers(prompt: str) -> list[float]:
    from havoc.prime.parse import numbers_in
    from havoc.prime.prose import read_numbers

    return read_numbers(prompt).values() + numbers_in(prompt)


def _paths(value) -> dict[str, list[float]]:
    from havoc.prime.verify import SETTINGS, numeric_leaves

    out: dict[str, list[float]] = {}
    for path, v in numeric_leaves(value, skip=SETTINGS | IGNORED):
        out.setdefault(path, []).append(v)
    return out


def _longest(value) -> int:
    """The length of the longest list of numbers in a JSON value."""
    if isinstance(value, dict):
        return max((_longest(v) for v in value.values()), default=0)
    if isinstance(value, list):
        own = len(value) if value and all(isinstance(v, (int, float)) for v in value) else 0
        return max([own] + [_longest(v) for v in value])
    return 0


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _normalized(args: dict, schema: dict) -> dict:
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    out = {}
    for k, v in args.items():
        if k in IGNORED:
            continue
        default = (props.get(k) or {}).get("default", _MISSING)
        if default is not _MISSING and _same(v, default):
            continue
        if k == "factors" and isinstance(v, list):  # a factor without a range is coded -1 to +1
            v = [{fk: fv for fk, fv in f.items() if not (fk, fv) in (("low", -1), ("high", 1))}
                 if isinstance(f, dict) else f for f in v]
        out[k] = v
    return out


_MISSING = object()


def _same(a, b) -> bool:
    from havoc.prime.verify import _same as same

    return same(a, b)


def _sig3(a: float, b: float) -> bool:
    return float(f"{a:.3g}") == float(f"{b:.3g}")


def _executable(task: Task, call: dict, want: dict, registry) -> bool:
    out = registry.execute(call["tool"], call["args"])
    if not out["success"]:
        return False
    if "keywords" in want:
        blob = json.dumps(out["result"]).lower()
        return all(k.lower() in blob for k in want["keywords"])
    for path, value in want["figures"].items():
        try:
            got = _get(out["result"], path)
        except (KeyError, IndexError, TypeError):
            return False
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not _sig3(got, value):
            return False
    return True


def score_call(task: Task, text: str | None, *, registry=None, want: dict | None = None) -> dict:
    """Score one first-try call `text` (the JSON the model wrote) against the task's gold call.

    Args:
        task: a task whose check is a tool call.
        text: the call's text, or None when no call was written.
        registry: the tools (default: the built-in registry).
        want: the task's expected figures (default: computed by `expected`).

    Returns:
        One row: the flags of the module doc, values/copied/invented/dropped counts and the longest gold
        list's length (`list_len`).
    """
    from jsonschema import Draft202012Validator

    from havoc.tools import default_registry

    if "refuse" in task.check:
        raise PrimeError(f"task {task.id}: its gold is a refusal, not a tool call")
    registry = registry or default_registry()
    want = want if want is not None else expected(task, registry)
    gold_tool, gold = task.check["tool"], task.check["args"]
    gold_values = _paths(gold)
    n_values = sum(len(v) for v in gold_values.values())
    row = {"id": task.id, **{f: False for f in FLAGS}, "values": n_values, "copied": 0, "invented": 0,
           "dropped": n_values, "list_len": _longest(gold), "text": text}
    if text is None:
        return row
    row["called"] = True
    try:
        call = json.loads(text)
    except ValueError:
        return row
    args = call.get("args") if isinstance(call, dict) else None
    if not isinstance(args, dict) or not isinstance(call.get("tool"), str):
        return row
    tool, operation = call["tool"], args.get("operation")
    try:
        schema = registry.arguments_schema(tool, operation)
        row["schema_valid"] = Draft202012Validator(schema).is_valid(args)
    except Exception:  # an unknown tool or operation: not schema-valid
        schema = {}
    row["tool_right"] = tool == gold_tool
    row["operation_right"] = row["tool_right"] and operation == gold.get("operation")
    row["choice_right"] = row["operation_right"] and all(
        isinstance(args.get(k), str) and args[k].strip().lower() == gold[k].strip().lower()
        for k in CHOICE_KEYS if isinstance(gold.get(k), str))
    gold_schema = registry.arguments_schema(gold_tool, gold.get("operation")) if gold_tool in registry.names() else {}
    row["exact"] = row["tool_right"] and _same(_normalized(args, schema), _normalized(gold, gold_schema))
    got = _paths(args)
    row["copied"] = sum(_close(a, b) for path, want_vs in gold_values.items()
                        for a, b in zip(want_vs, got.get(path, [])))
    sources = _prompt_numbers(task.prompt) + [v for vs in gold_values.values() for v in vs]
    written = [v for vs in got.values() for v in vs]
    row["invented"] = sum(not any(_close(v, s) or _close(v * 100, s) or _close(v, s * 100) for s in sources)
                          for v in written)
    pool = Counter(round(v, 9) for v in written)
    dropped = 0
    for v in (v for vs in gold_values.values() for v in vs):
        if pool[round(v, 9)] > 0:
            pool[round(v, 9)] -= 1
        else:
            dropped += 1
    row["dropped"] = dropped
    row["invented_any"], row["dropped_any"] = row["invented"] > 0, dropped > 0
    row["executable"] = row["schema_valid"] and _executable(task, call, want, registry)
    return row


# ------------------------------------------------------------------------------------------ the writer
def prime_writer(llm, *, budget: str | None = None, max_new_tokens: int = 256, seed: int = 0,
                 pin_numbers: bool = True, copy_lists: bool = True) -> Callable:
    """A writer that runs PRIME (greedy, grammar on) and returns the first try at its main call: the call
    made by the compute (or retrieve) subgoal, in the context PRIME built for it. `pin_numbers=False` lets
    the grammar accept any number, `copy_lists=False` any order of the allowed ones (see
    `generate_with_prime`)."""
    from havoc.prime import generate_with_prime

    def write(task: Task, lead: bool) -> Written:
        t0 = time.perf_counter()
        res = generate_with_prime(task.prompt, llm=llm, budget=budget, max_new_tokens=max_new_tokens,
                                  temperature=0.0, seed=seed, read_lead=lead, pin_numbers=pin_numbers,
                                  copy_lists=copy_lists)
        main = {g["id"] for g in res.graph if g["kind"] in ("compute", "retrieve")}
        calls = [c for c in res.tool_calls if c["subgoal"] in main]
        seconds = round(time.perf_counter() - t0, 3)
        if not calls:
            return Written(None, None, seconds)
        first = calls[0]
        tries = [a for a in first["attempts"] if a["text"]]
        return Written(tries[0]["text"] if tries else None, first["resolution"], seconds)

    return write


# ------------------------------------------------------------------------------------------ the report
def _rate(k: int, n: int) -> dict:
    ci = wilson(k, n)
    return {"k": k, "n": n, "rate": round(k / n, 4) if n else None,
            "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None}


def summarize_calls(rows: Sequence[dict]) -> dict:
    """The rates of a list of scored rows (one lead setting): flags over all tool tasks, copy accuracy over
    the gold's data values, recovery over the calls PRIME made, and first-try exactness on short lists."""
    n = len(rows)
    out = {f: _rate(sum(r[f] for r in rows), n) for f in FLAGS if f != "recovered"}
    out["copy_accuracy"] = _rate(sum(r["copied"] for r in rows), sum(r["values"] for r in rows))
    called = [r for r in rows if r["called"]]
    out["recovered"] = _rate(sum(r["recovered"] for r in called), len(called))
    short = [r for r in rows if r["list_len"] <= SHORT_LIST]
    out["exact_short_lists"] = _rate(sum(r["exact"] for r in short), len(short))
    out["invented_numbers"] = sum(r["invented"] for r in rows)
    out["dropped_values"] = sum(r["dropped"] for r in rows)
    return out


def run_calls(task_set: str | TaskSet, writer: Callable[[Task, bool], Written], *, lead: str = "both",
              limit: int | None = None, registry=None, on_row: Callable[[dict], None] | None = None) -> dict:
    """Score the first-try calls a writer makes on every tool task of a set.

    Args:
        task_set: a `TaskSet` or a registered name.
        writer: writer(task, lead) -> `Written` (`prime_writer(llm)` for the model through PRIME).
        lead: "on", "off" or "both": the read step's lead in the context before the call.
        limit: only the first `limit` tool tasks.
        registry: the tools (default: the built-in registry).
        on_row: called with each scored row (progress).

    Returns:
        {"set", "tasks", "skipped_refusals", "summary": {"lead_on"/"lead_off": rates}, "rows": [...]}.
    """
    from havoc.eval.understand import family_of
    from havoc.tools import default_registry

    if lead not in LEADS:
        raise PrimeError(f"lead must be one of {', '.join(LEADS)}, got {lead!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise PrimeError(f"limit must be a positive integer, got {limit!r}")
    ts = get_set(task_set) if isinstance(task_set, str) else task_set
    if not isinstance(ts, TaskSet):
        raise PrimeError(f"task_set must be a name or a TaskSet, got {type(task_set).__name__}")
    registry = registry or default_registry()
    tools = [t for t in ts.tasks if "refuse" not in t.check]
    tools = tools[:limit] if limit else tools
    wants = {t.id: expected(t, registry) for t in tools}  # every gold call runs before the model does
    rows = []
    for on in LEADS[lead]:
        for task in tools:
            w = writer(task, on)
            if not isinstance(w, Written):
                raise PrimeError(f"the writer must return a Written, got {type(w).__name__}")
            row = score_call(task, w.text, registry=registry, want=wants[task.id])
            row.update(family=family_of(task.id), lead="on" if on else "off", resolution=w.resolution,
                       recovered=w.resolution == "recovered_from_prompt", seconds=w.seconds)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    summary = {f"lead_{'on' if on else 'off'}": summarize_calls([r for r in rows if r["lead"] == ("on" if on else "off")])
               for on in LEADS[lead]}
    return {"set": ts.name, "tasks": len(tools), "skipped_refusals": len(ts.tasks) - len([t for t in ts.tasks
                                                                                          if "refuse" not in t.check]),
            "summary": summary, "rows": rows}


_LABELS = (("called", "a call written"), ("schema_valid", "schema-valid"), ("tool_right", "tool right"),
           ("operation_right", "operation right"), ("choice_right", "tool/operation/kind right"),
           ("exact", "exact arguments"), ("exact_short_lists", f"exact, lists <= {SHORT_LIST}"),
           ("copy_accuracy", "values copied (per value)"), ("invented_any", "calls with invented numbers"),
           ("dropped_any", "calls with dropped values"), ("executable", "executable accuracy"),
           ("recovered", "regex recovery (of calls)"))


def format_calls(report: dict) -> str:
    """`run_calls`' summary as a text table: k/n, rate and Wilson 95% interval per lead setting."""
    leads = list(report["summary"])
    lines = [f"set {report['set']}: first-try calls on {report['tasks']} tool tasks (greedy, grammar on); "
             f"{report['skipped_refusals']} refusal tasks skipped",
             f"{'':30}" + "".join(f"{lead:>28}" for lead in leads)]
    for key, label in _LABELS:
        cells = []
        for lead in leads:
            r = report["summary"][lead][key]
            cells.append("n/a" if r["rate"] is None else
                         f"{r['k']}/{r['n']} {100 * r['rate']:.0f}% [{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}]")
        lines.append(f"{label:30}" + "".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)
