"""The DOE/SPC DSL: a few line-oriented statements that map one-to-one onto `dsl_executor` operations.

    design box_behnken factors Temperature(100,200) Pressure(10,50) Speed(50,150) center 3 seed 7
    chart xbar_r subgroups [[74.03, 74.00, 74.02], [73.99, 74.01, 74.00]] rules nelson
    analyze response [45, 71, 48, 65, 68, 60, 80, 65]

The grammar is written down in docs/tools-dsl.md (and below, in short). A script is parsed completely
before anything runs; a parse error names its line and column. Each statement becomes the same argument
dict a model would send to the `dsl_executor` tool, validated by the same JSON schema, so the DSL and the
tool calls cannot drift apart.

    script     = { [statement] [comment] (NEWLINE | ";") }
    statement  = design | chart | capability | analyze | surface | gauge | sampling | constants
    design     = "design" KIND "factors" factor {factor} {design_option}
    factor     = NAME "(" value "," value {"," value} ")"       two numbers = low, high; else levels
    chart      = "chart" CHART ("data" list | "subgroups" "[" list {"," list} "]") {chart_option}
                 CHART: xbar_r xbar_s imr p np c u (Shewhart), ewma, cusum
    capability = "capability" ("data" list | "mean" NUMBER "sigma" NUMBER) {("lsl" | "usl" | "target" |
                 "sigma_overall") NUMBER | "subgroup_size" INT | "constants" ("exact" | "table")}
    analyze    = "analyze" "response" list {"order" ("standard" | "run") | "max_order" INT | "alpha" NUMBER
                 | "plot" ("png" | "svg") | "plot_kind" ("main_effects" | "interaction")}
    surface    = "surface" "response" list {"order" ("standard" | "run") | "goal" GOAL | "target" NUMBER}
    gauge      = "gauge" "measurements" list "parts" labels "operators" labels {("tolerance" | "k") NUMBER}
    sampling   = "sampling" "n" INT "c" INT {"lot_size" INT | "p" list | ("aql" | "ltpd") NUMBER
                 | "distribution" ("binomial" | "hypergeometric")}
    constants  = "constants" INT ["exact" | "table"]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from havoc.errors import DSLError, ToolError

MAX_SCRIPT_CHARS = 100_000
MAX_STATEMENTS = 200
MAX_LIST = 250_000

DESIGN_KINDS = {"full_factorial", "fractional_factorial", "plackett_burman", "box_behnken", "central_composite", "ccd"}
CHART_KINDS = {"xbar_r", "xbar_s", "imr", "p", "np", "c", "u", "ewma", "cusum"}
MAX_LABELS = 100_000
STATEMENTS = "design, chart, capability, analyze, surface, gauge, sampling or constants"

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>\#[^\n]*)
  | (?P<newline>\n|;)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<punct>[()\[\],=\-])
""", re.VERBOSE)


@dataclass
class Token:
    kind: str  # name, number, string, punct, newline, eof
    text: str
    line: int
    col: int


def tokenize(text: str) -> list[Token]:
    """Split DSL text into tokens, each with its 1-based line and column.

    Args:
        text: the script.

    Returns:
        Tokens, ending with an "eof" token. Raises DSLError at the first character no token starts with.
    """
    if not isinstance(text, str):
        raise ToolError("a DSL script must be text")
    if len(text) > MAX_SCRIPT_CHARS:
        raise ToolError(f"the script is longer than {MAX_SCRIPT_CHARS} characters")
    tokens: list[Token] = []
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if not m:
            ch = text[pos]
            shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
            hint = " (strings use double quotes)" if ch == "'" else ""
            raise DSLError(f"unexpected character {shown}{hint}", line, col)
        kind = m.lastgroup
        if kind == "newline":
            tokens.append(Token("newline", m.group(), line, col))
            if m.group() == "\n":
                line, line_start = line + 1, m.end()
        elif kind not in ("ws", "comment"):
            tokens.append(Token(kind, m.group(), line, col))
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


def _describe(tok: Token) -> str:
    return {"eof": "the end of the script", "newline": "the end of the line"}.get(tok.kind, repr(tok.text))


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.toks = tokens
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, message: str, tok: Token | None = None) -> DSLError:
        t = tok or self.tok
        return DSLError(message, t.line, t.col)

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        t = self.tok
        if t.kind != kind or (text is not None and t.text != text):
            raise self.error(f"expected {what or repr(text) if text else what or kind}, found {_describe(t)}")
        return self.next()

    def at_end_of_statement(self) -> bool:
        return self.tok.kind in ("newline", "eof")

    # ------------------------------------------------------------------------------------- values
    def number(self, what: str = "a number") -> float | int:
        t = self.tok
        if t.kind != "number":
            raise self.error(f"expected {what}, found {_describe(t)}")
        self.next()
        try:
            v = float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
        except ValueError:
            raise self.error(f"{t.text!r} is not a number", t) from None
        if abs(v) > 1.7e308:
            raise self.error("the number is out of range", t)
        return v

    def integer(self, what: str) -> int:
        t = self.tok
        v = self.number(what)
        if not isinstance(v, int):
            raise self.error(f"expected {what} (a whole number), found {t.text!r}", t)
        return v

    def word(self, choices: set[str] | None, what: str) -> str:
        t = self.tok
        if t.kind != "name" or (choices is not None and t.text not in choices):
            options = f": one of {', '.join(sorted(choices))}" if choices else ""
            raise self.error(f"expected {what}{options}, found {_describe(t)}")
        return self.next().text

    def value(self) -> Any:
        t = self.tok
        if t.kind == "number":
            return self.number()
        if t.kind == "name":
            return self.next().text
        if t.kind == "string":
            self.next()
            return re.sub(r"\\(.)", r"\1", t.text[1:-1])
        raise self.error(f"expected a level (number, name or \"string\"), found {_describe(t)}")

    def num_list(self) -> list[float]:
        self.expect("punct", "[", "'['")
        out: list[float] = []
        if self.tok.text == "]":
            self.next()
            return out
        while True:
            out.append(self.number("a number in the list"))
            if len(out) > MAX_LIST:
                raise self.error(f"lists hold at most {MAX_LIST} numbers")
            t = self.tok
            if t.text == "]" and t.kind == "punct":
                self.next()
                return out
            if not (t.kind == "punct" and t.text == ","):
                raise self.error(f"expected ',' or ']' in the list, found {_describe(t)}")
            self.next()

    def label_list(self) -> list:
        """A list of part or operator labels: numbers, names or "strings"."""
        self.expect("punct", "[", "'['")
        out: list = []
        if self.tok.text == "]":
            self.next()
            return out
        while True:
            out.append(self.value())
            if len(out) > MAX_LABELS:
                raise self.error(f"label lists hold at most {MAX_LABELS} labels")
            t = self.tok
            if t.text == "]" and t.kind == "punct":
                self.next()
                return out
            if not (t.kind == "punct" and t.text == ","):
                raise self.error(f"expected ',' or ']' in the list, found {_describe(t)}")
            self.next()

    def list_of_lists(self) -> list[list[float]]:
        self.expect("punct", "[", "'['")
        out = [self.num_list()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.next()
            out.append(self.num_list())
            if len(out) > 10_000:
                raise self.error("at most 10000 subgroups")
        self.expect("punct", "]", "',' or ']'")
        return out

    # --------------------------------------------------------------------------------- statements
    def script(self) -> list[tuple[Token, dict]]:
        out = []
        while self.tok.kind != "eof":
            if self.tok.kind == "newline":
                self.next()
                continue
            start = self.tok
            out.append((start, self.statement()))
            if len(out) > MAX_STATEMENTS:
                raise self.error(f"a script holds at most {MAX_STATEMENTS} statements", start)
            if not self.at_end_of_statement():
                raise self.error(f"unexpected {_describe(self.tok)}: expected the end of the statement")
        return out

    def statement(self) -> dict:
        t = self.tok
        if t.kind != "name":
            raise self.error(f"expected a statement ({STATEMENTS}), found {_describe(t)}")
        handler = {"design": self.design, "chart": self.chart, "capability": self.capability,
                   "analyze": self.analyze, "surface": self.surface, "gauge": self.gauge, "sampling": self.sampling,
                   "constants": self.constants}.get(t.text)
        if handler is None:
            raise self.error(f"unknown statement {t.text!r}: use {STATEMENTS}")
        self.next()
        return handler()

    def design(self) -> dict:
        kind = self.word(DESIGN_KINDS, "a design kind")
        args: dict[str, Any] = {"operation": "central_composite" if kind == "ccd" else kind}
        self.expect("name", "factors", "'factors'")
        factors = []
        while self.tok.kind == "name" and self.toks[self.i + 1].text == "(":
            factors.append(self.factor())
        if not factors:
            raise self.error("expected at least one factor like Temperature(100, 200)")
        args["factors"] = factors
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "a design option")
            if opt in ("center", "replicates", "seed", "runs"):
                args[opt] = self.integer(f"the {opt} count" if opt != "seed" else "a seed")
            elif opt == "randomize":
                args["randomize"] = True
            elif opt == "no_randomize":
                args["randomize"] = False
            elif opt == "fraction":
                args["fraction"] = True
            elif opt == "kind":
                args["kind"] = self.word({"circumscribed", "inscribed", "faced"}, "a CCD kind")
            elif opt == "alpha":
                args["alpha"] = self.number() if self.tok.kind == "number" else self.word({"rotatable", "orthogonal"}, "alpha")
            elif opt == "generators":
                gens = []
                while self.tok.kind == "name" and self.toks[self.i + 1].text == "=":
                    lhs = self.next().text
                    self.next()
                    sign = "-" if self.tok.text == "-" and self.tok.kind == "punct" else ""
                    if sign:
                        self.next()
                    rhs = self.word(None, "the generator's letters, like ABC")
                    gens.append(f"{lhs}={sign}{rhs}")
                if not gens:
                    raise self.error("expected generators like D=ABC")
                args["generators"] = gens
            else:
                raise self.error(f"unknown design option {opt!r}: center, replicates, seed, randomize, no_randomize, "
                                 "generators, runs, kind, alpha, fraction", t)
        return args

    def factor(self) -> dict:
        name = self.next().text
        self.expect("punct", "(", "'('")
        values = [self.value()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.next()
            values.append(self.value())
            if len(values) > 50:
                raise self.error("a factor has at most 50 levels")
        self.expect("punct", ")", "',' or ')'")
        if len(values) == 2 and all(isinstance(v, (int, float)) for v in values):
            return {"name": name, "low": values[0], "high": values[1]}
        if len(values) < 2:
            raise self.error(f"factor {name} needs low and high (or a list of levels)")
        return {"name": name, "levels": values}

    def chart(self) -> dict:
        kind = self.word(CHART_KINDS, "a chart kind")
        args: dict[str, Any] = ({"operation": f"{kind}_chart"} if kind in ("ewma", "cusum") else
                                {"operation": "control_chart", "chart": kind})
        numeric = {"ewma": {"lambda", "L", "target", "sigma"}, "cusum": {"target", "sigma", "k", "h", "headstart"}}.get(kind, set())
        shewhart = kind not in ("ewma", "cusum")
        options = ("data, subgroups, " + ("subgroup_size, sizes, n, rules, plot, constants" if shewhart else
                                         ", ".join(sorted(numeric)) + (", limits" if kind == "ewma" else "") + ", constants"))
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "a chart option")
            if opt == "data":
                args["data"] = self.num_list()
            elif opt == "subgroups":
                args["subgroups"] = self.list_of_lists()
            elif opt == "constants":
                args["constants"] = self.word({"exact", "table"}, "the constants' source")
            elif shewhart and opt == "sizes":
                args["sizes"] = self.num_list()
            elif shewhart and opt in ("subgroup_size", "n"):
                args[opt] = self.integer(opt)
            elif shewhart and opt == "rules":
                args["rules"] = self.word({"western_electric", "nelson", "both", "none"}, "a rule set")
            elif shewhart and opt == "plot":
                args["plot"] = self.word({"png", "svg"}, "a plot format")
            elif opt in numeric:
                args[opt] = self.number()
            elif kind == "ewma" and opt == "limits":
                args["limits"] = self.word({"exact", "asymptotic"}, "the kind of limits")
            else:
                raise self.error(f"unknown {kind} chart option {opt!r}: {options}", t)
        if "data" not in args and "subgroups" not in args:
            raise self.error("a chart needs data [...] or subgroups [[...], ...]")
        return args

    def capability(self) -> dict:
        args: dict[str, Any] = {"operation": "capability"}
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "a capability option")
            if opt == "data":
                args["data"] = self.num_list()
            elif opt in ("lsl", "usl", "target", "mean", "sigma", "sigma_overall"):
                args[opt] = self.number()
            elif opt == "subgroup_size":
                args[opt] = self.integer(opt)
            elif opt == "constants":
                args["constants"] = self.word({"exact", "table"}, "the constants' source")
            else:
                raise self.error(f"unknown capability option {opt!r}: data, mean, sigma, sigma_overall, lsl, usl, "
                                 "target, subgroup_size, constants", t)
        if "data" not in args and "mean" not in args:
            raise self.error("capability needs data [...], or mean and sigma")
        return args

    def analyze(self) -> dict:
        args: dict[str, Any] = {"operation": "analyze_factorial", "order": "standard"}
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "an analyze option")
            if opt == "response":
                args["response"] = self.num_list()
            elif opt == "order":
                args["order"] = self.word({"standard", "run"}, "the order the responses are listed in")
            elif opt == "max_order":
                args["max_order"] = self.integer(opt)
            elif opt == "alpha":
                args["alpha"] = self.number()
            elif opt == "plot":
                args["plot"] = self.word({"png", "svg"}, "a plot format")
            elif opt == "plot_kind":
                args["plot_kind"] = self.word({"main_effects", "interaction"}, "a plot kind")
            else:
                raise self.error(f"unknown analyze option {opt!r}: response, order, max_order, alpha, plot, plot_kind", t)
        if "response" not in args:
            raise self.error("analyze needs response [...]")
        return args

    def surface(self) -> dict:
        args: dict[str, Any] = {"operation": "response_surface", "order": "standard"}
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "a surface option")
            if opt == "response":
                args["response"] = self.num_list()
            elif opt == "order":
                args["order"] = self.word({"standard", "run"}, "the order the responses are listed in")
            elif opt == "goal":
                args["goal"] = self.word({"maximize", "minimize", "target"}, "a goal")
            elif opt in ("target", "alpha"):
                args[opt] = self.number()
            else:
                raise self.error(f"unknown surface option {opt!r}: response, order, goal, target, alpha", t)
        if "response" not in args:
            raise self.error("surface needs response [...]")
        return args

    def gauge(self) -> dict:
        args: dict[str, Any] = {"operation": "gauge_rr"}
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "a gauge option")
            if opt == "measurements":
                args["measurements"] = self.num_list()
            elif opt in ("parts", "operators"):
                args[opt] = self.label_list()
            elif opt in ("tolerance", "k", "alpha_interaction"):
                args[opt] = self.number()
            else:
                raise self.error(f"unknown gauge option {opt!r}: measurements, parts, operators, tolerance, k, "
                                 "alpha_interaction", t)
        for need in ("measurements", "parts", "operators"):
            if need not in args:
                raise self.error(f"gauge needs {need} [...]")
        return args

    def sampling(self) -> dict:
        args: dict[str, Any] = {"operation": "sampling_plan"}
        while not self.at_end_of_statement():
            t = self.tok
            opt = self.word(None, "a sampling option")
            if opt in ("n", "c", "lot_size"):
                args[opt] = self.integer(opt)
            elif opt == "p":
                args["p"] = self.num_list()
            elif opt in ("aql", "ltpd"):
                args[opt] = self.number()
            elif opt == "distribution":
                args["distribution"] = self.word({"binomial", "hypergeometric"}, "a distribution")
            else:
                raise self.error(f"unknown sampling option {opt!r}: n, c, lot_size, p, aql, ltpd, distribution", t)
        if "n" not in args or "c" not in args:
            raise self.error("sampling needs n and c (the sample size and acceptance number)")
        return args

    def constants(self) -> dict:
        args: dict[str, Any] = {"operation": "constants", "n": self.integer("a subgroup size")}
        if self.tok.kind == "name" and self.tok.text in ("exact", "table"):
            args["constants"] = self.next().text
        return args


def parse(text: str) -> list[dict]:
    """Parse a DSL script into `dsl_executor` argument dicts (nothing runs).

    Args:
        text: the script.

    Returns:
        One dict per statement, each with "operation" and "_line", "_col" (where the statement starts).
        Raises DSLError (line, column).
    """
    out = []
    for tok, args in _Parser(tokenize(text)).script():
        args["_line"], args["_col"] = tok.line, tok.col
        out.append(args)
    return out


def _design_rows(last_design: dict | None, args: dict) -> tuple[list[dict], list[list[float]]]:
    """The most recent design's factors and coded runs, in the order `args` says its responses are listed."""
    what = "analyze" if args["operation"] == "analyze_factorial" else "surface"
    if last_design is None:
        raise ToolError(f"{what} needs a design statement before it")
    runs = last_design["runs"]
    if args.pop("order") == "standard":
        runs = sorted(runs, key=lambda r: r["std_order"])
    if any(v is None for r in runs for v in r["coded"].values()):
        kind = "two-level" if what == "analyze" else "numeric"
        raise ToolError(f"{what} works on {kind} designs (categorical levels have no coded values)")
    if len(args["response"]) != len(runs):
        raise ToolError(f"the design has {len(runs)} runs but {len(args['response'])} responses were given")
    names = [f["name"] for f in last_design["factors"]]
    return last_design["factors"], [[r["coded"][n] for n in names] for r in runs]


def run_script(text: str, ctx=None) -> dict:
    """Parse and run a DSL script.

    `analyze` uses the most recent design's runs: responses in standard order by default, or
    `order run` for the randomised run order.

    Args:
        text: the script.
        ctx: a `havoc.tools.registry.ToolContext` for plots (default: the registry's temp folder).

    Returns:
        {"statements": [{"line", "operation", "result"}], "method", "interpretation"}.
    """
    from jsonschema import Draft202012Validator

    from havoc.tools.builtin import DSL_OPS, run_dsl_operation
    from havoc.tools.registry import ToolContext, ToolRegistry, _schema_message

    if ctx is None:
        ctx = ToolContext(ToolRegistry().plot_dir)
    statements = parse(text)
    if not statements:
        raise ToolError("the script has no statements")
    plottable = [s for s in statements if s["operation"] in ("control_chart", "analyze_factorial")]
    forced = ctx.plot_path  # the CLI's --plot FILE: every chart/analysis is drawn
    results = []
    last_design: dict | None = None
    for st in statements:
        line, col = st.pop("_line"), st.pop("_col")
        args = dict(st)
        try:
            if args["operation"] in ("analyze_factorial", "response_surface"):
                factors, coded = _design_rows(last_design, args)
                args["factors"] = factors if args["operation"] == "response_surface" else [f["name"] for f in factors]
                args["coded"] = coded
            if forced is not None and args["operation"] in ("control_chart", "analyze_factorial"):
                fmt = Path(forced).suffix.lstrip(".").lower() or "png"
                args["plot"] = fmt if fmt in ("png", "svg") else "png"
            errors = sorted(Draft202012Validator(DSL_OPS[args["operation"]]).iter_errors(args),
                            key=lambda e: len(e.absolute_path))
            if errors:
                raise ToolError(_schema_message(errors[0]).replace("args.", "", 1))
            sub_ctx = ctx
            if forced is not None and len(plottable) > 1:
                p = Path(forced)
                sub_ctx = type(ctx)(ctx.plot_dir, p.with_name(f"{p.stem}-line{line}{p.suffix}"))
            res = run_dsl_operation(args, sub_ctx)
        except DSLError:
            raise
        except ToolError as e:  # the statement parsed but cannot run: point at the statement
            raise DSLError(str(e), line, col) from None
        if args["operation"] in ("full_factorial", "fractional_factorial", "plackett_burman", "box_behnken",
                                 "central_composite"):
            last_design = res
        results.append({"line": line, "operation": args["operation"], "result": res})
    text_out = " | ".join(f"line {r['line']}: {r['result'].get('interpretation', r['operation'])}" for r in results)
    return {"statements": results, "method": "DOE/SPC DSL: each statement run as a dsl_executor operation",
            "interpretation": text_out}
