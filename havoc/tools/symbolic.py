"""Symbolic derivative, integral, simplify, solve and evaluate, on untrusted expressions.

`sympy.sympify` and `parse_expr` call `eval` on their input, so text from a model never reaches them.
Instead the text is parsed by Python's `ast` (which only parses) and the tree is walked against a
whitelist — numbers, symbols, + - * / ** (and ^ as power), unary minus, calls of known functions — and
the sympy objects are built directly. Caps: expression length, tree size, exponent size, the magnitude
of exact numbers; each operation runs in a forked child with a time limit (`havoc.tools._isolate`).

Grammar of an expression (Python's, restricted):
    expr   := expr ("+" | "-" | "*" | "/" | "**" | "^") expr | ("-" | "+") expr | call | NAME | NUMBER | "(" expr ")"
    call   := FUNC "(" expr ["," expr] ")"
    FUNC   := sin cos tan cot sec csc asin acos atan sinh cosh tanh asinh acosh atanh exp log ln sqrt
              abs sign floor ceiling erf
    NAME   := a letter, then letters, digits or _ (at most 24); pi, E and e are the constants; oo and inf
              are infinity (for integral limits)
An equation for `solve` is `lhs = rhs` (or `==`); without `=`, the expression is set to zero.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from typing import Any

import sympy as sp

from havoc.errors import ToolError
from havoc.tools._isolate import run_isolated

MAX_CHARS = 500
MAX_NODES = 300
MAX_EXPONENT = 100
MAX_DIGITS = 1000  # exact numbers beyond 10**1000 are refused (and Python will not print them anyway)
DEFAULT_TIMEOUT = 10.0
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,23}")

_FUNCS = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
    "asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
    "asinh": sp.asinh, "acosh": sp.acosh, "atanh": sp.atanh, "exp": sp.exp, "log": sp.log, "ln": sp.log,
    "sqrt": sp.sqrt, "abs": sp.Abs, "sign": sp.sign, "floor": sp.floor, "ceiling": sp.ceiling, "erf": sp.erf,
}
_ARITY = {"log": (1, 2)}
_CONSTANTS = {"pi": sp.pi, "E": sp.E, "e": sp.E, "oo": sp.oo, "inf": sp.oo}


def _digits(num: sp.Expr) -> float:
    """log10 of |num| for an exact or float sympy number (0 for zero)."""
    if num == 0:
        return 0.0
    if isinstance(num, sp.Rational):
        return (abs(num.p).bit_length() - 1) * 0.30103 - (num.q.bit_length() - 1) * 0.30103
    return float(sp.log(abs(num), 10).evalf(5))


class _Builder:
    def __init__(self) -> None:
        self.nodes = 0

    def build(self, node: ast.AST) -> sp.Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ToolError(f"the expression is too large (more than {MAX_NODES} parts)")
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ToolError(f"only numbers are allowed as constants, found {v!r:.30}")
            if isinstance(v, float):
                if not math.isfinite(v):
                    raise ToolError("the number is too large")
                return sp.Float(repr(v))
            if abs(v).bit_length() > MAX_DIGITS * 3.33:
                raise ToolError("the number is too large")
            return sp.Integer(v)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.build(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            left, right = self.build(node.left), self.build(node.right)
            op = node.op
            if isinstance(op, ast.Add):
                return self.checked(left + right)
            if isinstance(op, ast.Sub):
                return self.checked(left - right)
            if isinstance(op, ast.Mult):
                return self.checked(left * right)
            if isinstance(op, ast.Div):
                if right == 0:
                    raise ToolError("division by zero")
                return self.checked(left / right)
            if isinstance(op, ast.Pow):
                return self.power(left, right)
            raise ToolError(f"operator {type(op).__name__} is not allowed: use + - * / ** ^")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ToolError("only calls of known functions by name are allowed")
            if node.func.id not in _FUNCS:
                raise ToolError(f"function {node.func.id!r} is not allowed; known functions: {', '.join(sorted(_FUNCS))}")
            if node.keywords:
                raise ToolError("functions take positional arguments only")
            lo, hi = _ARITY.get(node.func.id, (1, 1))
            if not lo <= len(node.args) <= hi or any(isinstance(a, ast.Starred) for a in node.args):
                raise ToolError(f"{node.func.id}() takes {lo if lo == hi else f'{lo} or {hi}'} argument(s)")
            return self.checked(_FUNCS[node.func.id](*(self.build(a) for a in node.args)))
        raise ToolError(f"{type(node).__name__} is not allowed in an expression")

    def name(self, ident: str) -> sp.Expr:
        if ident in _CONSTANTS:
            return _CONSTANTS[ident]
        if ident in _FUNCS:
            raise ToolError(f"{ident} is a function: call it as {ident}(...)")
        if not _NAME.fullmatch(ident):
            raise ToolError(f"symbol name {ident!r} is not allowed (letters, digits, _; at most 24)")
        return sp.Symbol(ident, real=True)

    def power(self, base: sp.Expr, exp: sp.Expr) -> sp.Expr:
        if exp.is_Number:
            if abs(float(exp)) > MAX_EXPONENT:
                raise ToolError(f"exponents are limited to +-{MAX_EXPONENT}")
            if base.is_Number and _digits(base) * abs(float(exp)) > MAX_DIGITS:
                raise ToolError(f"the number would have more than {MAX_DIGITS} digits")
        return self.checked(sp.Pow(base, exp))

    def checked(self, value: sp.Expr) -> sp.Expr:
        if value.is_Number and value.is_finite is not False and _digits(value) > MAX_DIGITS:
            raise ToolError(f"the number would have more than {MAX_DIGITS} digits")
        return value


def parse(text: Any) -> sp.Expr:
    """An untrusted expression string as a sympy expression, never through eval.

    Args:
        text: the expression, e.g. "x^2 + 3*sin(x)".

    Returns:
        The sympy expression. Raises ToolError naming what is not allowed.
    """
    if not isinstance(text, str):
        raise ToolError("the expression must be a string")
    text = text.strip()
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise ToolError(f"the expression is longer than {MAX_CHARS} characters")
    # ^ means power, as people write it. Replaced in the text, not mapped from ast.BitXor: Python's ^
    # binds more loosely than +, which would read x^3 + 1 as x^(3 + 1).
    text = text.replace("^", "**")
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: errors here, not warnings
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        col = f" at column {e.offset}" if e.offset else ""
        raise ToolError(f"cannot parse the expression{col}: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ToolError("the expression is nested too deeply") from None
    try:
        return _Builder().build(tree)
    except RecursionError:
        raise ToolError("the expression is nested too deeply") from None


def _variable(expr: sp.Expr, variable: str | None) -> sp.Symbol:
    if variable is not None:
        sym = _Builder().name(variable) if isinstance(variable, str) else None
        if not isinstance(sym, sp.Symbol):
            raise ToolError(f"variable must be a symbol name, got {variable!r}")
        return sym
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    if len(free) == 1:
        return free[0]
    if not free:
        return sp.Symbol("x", real=True)
    raise ToolError(f"the expression has several symbols ({', '.join(s.name for s in free)}): name the variable")


def _equation(text: str) -> tuple[sp.Expr, str]:
    if not isinstance(text, str):
        raise ToolError("the equation must be a string")
    if "==" in text:
        parts = text.split("==")
    else:
        parts = text.split("=")
    if len(parts) > 2:
        raise ToolError("an equation has one '=' sign")
    if len(parts) == 2:
        lhs, rhs = parse(parts[0]), parse(parts[1])
        return lhs - rhs, f"{parts[0].strip()} = {parts[1].strip()}"
    return parse(text), f"{text.strip()} = 0"


def _out(op: str, expr: sp.Expr, result: Any, method: str, interpretation: str, **extra: Any) -> dict:
    out = {"operation": op, "expression": str(expr), "result": str(result), "latex": sp.latex(result),
           "method": method, "interpretation": interpretation}
    out.update(extra)
    return out


def _numeric(value: sp.Expr) -> float | None:
    try:
        v = complex(value.evalf(17))
    except (TypeError, ValueError, OverflowError):
        return None
    if v.imag != 0 or not math.isfinite(v.real):
        return None
    return v.real


def _derivative(expression: str, variable: str | None = None, order: int = 1) -> dict:
    expr = parse(expression)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 10:
        raise ToolError("order must be a whole number from 1 to 10")
    var = _variable(expr, variable)
    res = sp.simplify(sp.diff(expr, var, order))
    mark = "'" * order if order <= 3 else f"^({order})"
    return _out("derivative", expr, res, "sympy.diff, then sympy.simplify",
                f"d{'^' + str(order) if order > 1 else ''}/d{var}{'^' + str(order) if order > 1 else ''} of {expr} = {res}",
                variable=var.name, order=order, notation=f"f{mark}({var})")


def _closed_form(expr: sp.Expr, var: sp.Symbol, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    return sp.integrate(expr, (var, lo, hi))


def _integral(expression: str, variable: str | None = None, lower: str | float | None = None,
              upper: str | float | None = None, _budget: float = DEFAULT_TIMEOUT) -> dict:
    expr = parse(expression)
    var = _variable(expr, variable)
    if (lower is None) != (upper is None):
        raise ToolError("a definite integral needs both lower and upper limits")
    if lower is None:
        res = sp.integrate(expr, var)
        if res.has(sp.Integral):
            raise ToolError(f"no closed-form antiderivative found for {expr}")
        return _out("integral", expr, res, "sympy.integrate (indefinite; constant of integration omitted)",
                    f"∫ {expr} d{var} = {res} + C", variable=var.name)
    lo, hi = (parse(str(v)) if not isinstance(v, (int, float)) or isinstance(v, bool) else sp.nsimplify(v)
              for v in (lower, upper))
    try:
        # sympy can search for a closed form for minutes; give it part of the budget (in a child of this
        # child, so it can be stopped) and integrate numerically if it has not found one by then.
        res = run_isolated(_closed_form, {"expr": expr, "var": var, "lo": lo, "hi": hi}, 0.6 * _budget,
                           what="the closed-form search")
    except ToolError:
        res = sp.Integral(expr, (var, lo, hi))
    if res.has(sp.Integral):
        num = sp.Integral(expr, (var, lo, hi)).evalf(15)
        value = _numeric(num)
        if value is None:
            raise ToolError(f"the integral of {expr} from {lo} to {hi} has no closed form and no finite numeric value")
        return _out("integral", expr, num, "no closed form: numerical quadrature (mpmath, 15 digits)",
                    f"∫ from {lo} to {hi} of {expr} d{var} ≈ {value:.12g}", variable=var.name, numeric=value,
                    lower=str(lo), upper=str(hi))
    value = _numeric(res)
    text = f"∫ from {lo} to {hi} of {expr} d{var} = {res}" + (f" ≈ {value:.12g}" if value is not None and not res.is_Integer else "")
    return _out("integral", expr, res, "sympy.integrate (definite)", text, variable=var.name, numeric=value,
                lower=str(lo), upper=str(hi))


def _simplify(expression: str) -> dict:
    expr = parse(expression)
    res = sp.simplify(expr)
    return _out("simplify", expr, res, "sympy.simplify", f"{expr} simplifies to {res}")


def _solve(equation: str, variable: str | None = None) -> dict:
    expr, shown = _equation(equation)
    var = _variable(expr, variable)
    sols = sp.solve(expr, var, dict=False)
    if len(sols) > 50:
        sols = sols[:50]
    values = [_numeric(s) for s in sols]
    listed = ", ".join(str(s) for s in sols) if sols else "no solution"
    return {
        "operation": "solve", "equation": shown, "variable": var.name, "solutions": [str(s) for s in sols],
        "latex": [sp.latex(s) for s in sols], "numeric": values,
        "method": "sympy.solve over the reals (symbols are declared real)",
        "interpretation": f"{shown} for {var}: {listed}",
    }


def _evaluate(expression: str, values: dict[str, float] | None = None) -> dict:
    expr = parse(expression)
    subs = {}
    for k, v in (values or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ToolError(f"value of {k!r} must be a finite number")
        subs[_Builder().name(k)] = sp.nsimplify(v) if isinstance(v, int) else sp.Float(repr(v))
    res = expr.subs(subs)
    if res.free_symbols:
        raise ToolError(f"no value given for {', '.join(sorted(s.name for s in res.free_symbols))}")
    value = _numeric(res)
    if value is None:
        raise ToolError(f"{expr} has no finite real value there")
    return _out("evaluate", expr, res, "sympy substitution, evaluated to 17 digits",
                f"{expr} = {value:.15g}", numeric=value)


_OPS = {"derivative": _derivative, "integral": _integral, "simplify": _simplify, "solve": _solve,
        "evaluate": _evaluate}


def run(operation: str, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> dict:
    """One symbolic operation in a time-limited child process.

    Args:
        operation: "derivative", "integral", "simplify", "solve" or "evaluate".
        timeout: seconds before the work is stopped.
        **kwargs: the operation's arguments (expression or equation, variable, order, lower, upper, values).

    Returns:
        operation, expression, result (string), latex, numeric value where there is one, method,
        interpretation.
    """
    if operation not in _OPS:
        raise ToolError(f"unknown symbolic operation {operation!r}: use {', '.join(_OPS)}")
    if operation == "integral":
        kwargs["_budget"] = timeout
    return run_isolated(_OPS[operation], kwargs, timeout, what=f"symbolic {operation}")


def derivative(expression: str, variable: str | None = None, order: int = 1, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """d^order/d variable^order of an expression (see `run`)."""
    return run("derivative", timeout, expression=expression, variable=variable, order=order)


def integral(expression: str, variable: str | None = None, lower: Any = None, upper: Any = None,
             timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Indefinite integral, or definite from lower to upper (see `run`)."""
    return run("integral", timeout, expression=expression, variable=variable, lower=lower, upper=upper)


def simplify(expression: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """sympy.simplify of an expression (see `run`)."""
    return run("simplify", timeout, expression=expression)


def solve(equation: str, variable: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Solutions of `lhs = rhs` (or expression = 0) for one variable (see `run`)."""
    return run("solve", timeout, equation=equation, variable=variable)


def evaluate(expression: str, values: dict[str, float] | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """The numeric value of an expression at the given symbol values (see `run`)."""
    return run("evaluate", timeout, expression=expression, values=values)
