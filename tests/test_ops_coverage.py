"""Every op has what the project promises for it, checked from the code itself (issue 16, "the fast paths
in one place"):

- a reference implementation in havoc.kernels.reference;
- one name and one argument order: the positional parameters of ops.<op> open the signature of the
  reference, of every registered fast implementation, and of what that calls (the Triton kernel function
  of the same name, the C++ binding of the same name);
- for every registered fast implementation (op, backend): tests and a benchmark, i.e. a test module under
  tests/ and a benchmark under bench/ marked `pytest.mark.op(op, backend)`;
- for every Triton kernel: an ahead-of-time compile scenario named after the op (havoc.kernels.aot). The
  CPU backend's kernels are C++ compiled with the extension (and again with ASan/UBSan by
  tests/test_sanitize.py); they have no separate compile step to cover.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from havoc import _C, backends, ops
from havoc.kernels import reference

ROOT = Path(__file__).resolve().parent.parent


def _positional(fn) -> list[str]:
    return [
        p.name for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _binding_params(fn) -> list[str]:
    """Parameter names of a pybind11 function, from the signature line of its docstring."""
    first = fn.__doc__.splitlines()[0]
    inner = first[first.index("(") + 1 : first.rindex(")")]
    return [m.group(1) for m in re.finditer(r"(?:^|,\s*)\*?(\w+)\s*:", inner)]


def _marks(folder: str) -> set[tuple[str, str]]:
    """(op, backend) of every `pytest.mark.op("op", "backend")` in the folder's Python files."""
    out = set()
    for path in (ROOT / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "op"
                and ast.unparse(node.func.value) == "pytest.mark"
            ):
                out.add(tuple(ast.literal_eval(a) for a in node.args))
    return out


def _triton_kernel(op: str):
    pytest.importorskip("triton", reason="the Triton kernels need the triton package")
    from havoc.backends import triton as triton_backend

    module = importlib.import_module(f"havoc.kernels.{triton_backend.KERNELS[op][0]}")
    return getattr(module, op)


@pytest.mark.parametrize("op", ops.OPS)
def test_every_op_has_its_reference_and_one_argument_order(op):
    names = _positional(getattr(ops, op))
    assert names, op
    assert _positional(getattr(reference, op))[: len(names)] == names, f"reference.{op}"
    for impl in backends.implementations():
        if impl.op != op:
            continue
        assert _positional(impl.fn)[: len(names)] == names, f"{impl.backend}.{op}"
        if impl.backend == "triton":
            assert _positional(_triton_kernel(op))[: len(names)] == names, f"havoc.kernels ... {op}"
        if impl.backend == "cpu":
            assert _binding_params(getattr(_C, op))[: len(names)] == names, f"havoc._C.{op}"


def test_every_fast_implementation_has_tests_and_a_benchmark():
    tested, benched = _marks("tests"), _marks("bench")
    impls = {(i.op, i.backend) for i in backends.implementations()}
    if importlib.util.find_spec("triton") is None:
        impls = {i for i in impls if i[1] != "triton"}
    assert impls, "no fast implementation is registered"
    assert impls - tested == set(), "fast paths without a test module marked pytest.mark.op(op, backend)"
    assert impls - benched == set(), "fast paths without a benchmark marked pytest.mark.op(op, backend)"
    assert (tested | benched) - impls - {(o, "triton") for o in ops.OPS} == set(), "marks naming no registered op"


def test_every_triton_kernel_has_a_compile_scenario():
    pytest.importorskip("triton", reason="the Triton kernels need the triton package")
    from havoc.kernels import aot

    families = {name.split(" ")[0] for name, _ in aot._scenarios(full=True)}
    triton_ops = {i.op for i in backends.implementations() if i.backend == "triton"}
    assert triton_ops and triton_ops - families == set(), "Triton kernels without an AOT compile scenario"
    assert families - set(ops.OPS) == set(), "scenarios not named after an op"


def test_each_op_and_device_is_registered_once():
    impl = backends.fast("write_kv", "cpu")
    with pytest.raises(Exception, match="registered twice"):
        backends.register("write_kv", "cpu", "other", impl.fn, "a second write_kv")
    assert backends.fast("write_kv", "cpu") is impl
    with pytest.raises(Exception, match="unknown op"):
        backends.register("matmul", "cpu", "other", impl.fn, "not an op")
