"""Run a function in a forked child that is killed at a deadline.

A thread cannot be stopped: a sympy `integrate` that never returns would burn a core for as long as the
process lives. A forked child can be killed, and its memory is capped, so a runaway call costs at most
its time limit. Fork (not spawn) because it is fast (~10 ms, nothing to re-import) and the child only
runs pure-Python code (sympy) that never touches the OpenMP or BLAS pools the parent may hold.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import warnings
from collections.abc import Callable
from typing import Any

from havoc.errors import ToolError

# Extra address space a child may take on top of what it inherits: sympy on a hostile expression can
# otherwise eat the machine's memory before the deadline.
CHILD_EXTRA_MEMORY = 2 << 30


def fork_available() -> bool:
    """Whether this platform can fork (Linux, macOS); elsewhere isolated calls run in-process."""
    return "fork" in mp.get_all_start_methods()


def _limit_memory() -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + CHILD_EXTRA_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):  # no /proc or no resource module: run without the cap
        pass


def _child(conn, fn: Callable[..., Any], kwargs: dict, timeout: float) -> None:
    try:
        # Backstop: SIGALRM's default action ends the process, so the child dies on its own even if the
        # parent that should kill it is gone.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(math.ceil(timeout) + 2)
        _limit_memory()
        try:
            conn.send(("ok", fn(**kwargs)))
        except ToolError as e:
            conn.send(("tool_error", str(e)))
        except MemoryError:
            conn.send(("tool_error", "the computation ran out of its memory allowance"))
        except RecursionError:
            conn.send(("tool_error", "the expression is nested too deeply to compute"))
        except Exception as e:  # noqa: BLE001 - everything becomes a message for the parent
            conn.send(("error", f"{type(e).__name__}: {str(e)[:500]}"))
    finally:
        conn.close()
        os._exit(0)  # skip atexit handlers and buffers inherited from the parent


def run_isolated(fn: Callable[..., Any], kwargs: dict, timeout: float, what: str = "the computation") -> Any:
    """fn(**kwargs) in a forked child, killed after `timeout` seconds.

    Args:
        fn: a module-level function returning something picklable.
        kwargs: its keyword arguments.
        timeout: seconds before the child is killed.
        what: how to name the work in messages.

    Returns:
        What fn returned. Raises ToolError for the function's own ToolErrors, a timeout, or a child that
        died without answering (killed for memory, say).
    """
    if not fork_available():
        return fn(**kwargs)
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    # Not a daemon: daemonic processes may not start children, and an isolated call may isolate a part
    # of itself (sympy's closed-form search inside a definite integral). The parent always kills and
    # joins it, and the child's own alarm ends it if the parent cannot.
    proc = ctx.Process(target=_child, args=(send, fn, kwargs, timeout), daemon=False)
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child runs only pure Python and
        # exits through os._exit, so the locks it might inherit are never taken.
        warnings.simplefilter("ignore", DeprecationWarning)
        proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise ToolError(f"{what} did not finish within {timeout:g} s and was stopped")
        try:
            kind, payload = recv.recv()
        except (EOFError, OSError):
            raise ToolError(f"{what} stopped without a result (it probably exceeded its memory allowance)") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    if kind == "ok":
        return payload
    if kind == "tool_error":
        raise ToolError(payload)
    raise ToolError(f"internal error in {what}: {payload}")
