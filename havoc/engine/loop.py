"""The engine in its own thread, shared by many callers: a blocking face for threads, an asyncio face for
servers.

    loop = EngineLoop(engine)
    stream = loop.submit(prompt_ids, SamplingParams(max_new_tokens=32))   # from any thread
    for out in stream:                       # RequestOutputs as the steps produce them
        print(out.text, end="")
    async for out in loop.submit_async(prompt_ids, params):   # from an event loop: never blocks it

The engine thread alone touches the engine: `submit` queues the request, the thread adds it between two
steps, runs steps while anything is unfinished and hands each output to its request's queue (a
`queue.Queue`, or the event loop's `call_soon_threadsafe` for asyncio streams). It sleeps on a condition
when idle. A stream that is closed early (a `break`, a disconnected HTTP client) aborts its request, whose
blocks go back at once. An exception inside a step ends the requests of that step with finish_reason
"error" and the loop goes on; bad arguments raise in the caller's thread, before anything is queued.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from havoc.engine.engine import Engine, Request, RequestOutput
from havoc.engine.sampling import SamplingParams
from havoc.errors import GenerationError, HavocError

_CLOSED = object()


class EngineClosedError(HavocError, RuntimeError):
    """The engine loop was closed."""


def _unwrap(stream, item) -> RequestOutput:
    """An item of a stream's queue: an output (the last one marks the stream done), or the error or
    closing that ends it, raised."""
    if isinstance(item, BaseException) or item is _CLOSED:
        stream._done = True
        if item is _CLOSED:
            raise EngineClosedError("the engine loop was closed before the request finished")
        raise item
    if item.finished:
        stream._done = True
    return item


class RequestStream:
    """The outputs of one request, in order, for a thread (iterate it; `close()` aborts).

    Attributes:
        request: the engine's `Request` (its totals: ids, text, finish_reason, times).
    """

    def __init__(self, loop: EngineLoop) -> None:
        self._loop = loop
        self._queue: queue.Queue = queue.Queue()
        self.request: Request | None = None
        self._done = False

    def _put(self, item) -> None:
        self._queue.put(item)

    def __iter__(self) -> Iterator[RequestOutput]:
        try:
            while not self._done:
                yield _unwrap(self, self._queue.get())
        finally:
            if not self._done:
                self.close()

    def result(self) -> Request:
        """Wait for the request to finish; returns its `Request`."""
        for _ in self:
            pass
        return self.request

    def close(self) -> None:
        """Abort the request if it is still running."""
        if not self._done:
            self._done = True
            self._loop._call(lambda eng: eng.abort(self.request) if self.request is not None else None)


class AsyncRequestStream:
    """`RequestStream` for asyncio: `async for out in stream`; `await stream.aclose()` aborts."""

    def __init__(self, loop: EngineLoop, aio: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._aio = aio
        self._queue: asyncio.Queue = asyncio.Queue()
        self.request: Request | None = None
        self._done = False

    def _put(self, item) -> None:
        try:
            self._aio.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening
            pass

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._iter()

    async def _iter(self):
        try:
            while not self._done:
                yield _unwrap(self, await self._queue.get())
        finally:
            if not self._done:
                self.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._loop._call(lambda eng: eng.abort(self.request) if self.request is not None else None)

    async def aclose(self) -> None:
        self.close()


_LOOPS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Stop engine threads before the interpreter tears down: a daemon thread inside a step at exit would
    # wake into a finalizing interpreter.
    for loop in list(_LOOPS):
        loop.close()


class EngineLoop:
    """Runs an `Engine` in a daemon thread (started on the first request).

    Args:
        engine: the engine; nothing else may drive it while the loop runs.
        on_step: called in the engine thread after each step with (engine, outputs) (metrics).
    """

    def __init__(self, engine: Engine, *, on_step: Callable | None = None) -> None:
        self.engine = engine
        self.on_step = on_step
        self._cv = threading.Condition()
        self._inbox: list[Callable[[Engine], None]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        _LOOPS.add(self)

    # -------------------------------------------------------------------------------------------- client side
    def submit(self, prompt_ids: Sequence[int], params: SamplingParams | None = None, **kwargs) -> RequestStream:
        """Queue a request (arguments as `Engine.add_request`); returns its stream. Raises
        GenerationError for bad arguments, in the caller's thread."""
        return self._submit(RequestStream(self), prompt_ids, params, kwargs)

    def submit_async(self, prompt_ids: Sequence[int], params: SamplingParams | None = None, **kwargs) -> AsyncRequestStream:
        """`submit` from a running event loop; the stream is consumed with `async for`."""
        return self._submit(AsyncRequestStream(self, asyncio.get_running_loop()), prompt_ids, params, kwargs)

    def _submit(self, stream, prompt_ids, params, kwargs):
        if self._closed:
            raise EngineClosedError("the engine loop is closed")
        req = self.engine.make_request(prompt_ids, params, **kwargs)  # bad input raises here
        req.sink = stream._put
        stream.request = req
        self._call(lambda eng: eng.enqueue(req))  # queued without waiting for the engine thread
        return stream

    def call(self, fn: Callable[[Engine], object]) -> object:
        """Run fn(engine) in the engine thread between two steps and return its result (e.g. `release`)."""
        done = threading.Event()
        box: list[tuple[bool, object]] = []

        def run(eng: Engine) -> None:
            try:
                box.append((True, fn(eng)))
            except BaseException as e:
                box.append((False, e))
            finally:
                done.set()

        self._call(run)
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _call(self, fn: Callable[[Engine], None]) -> None:
        with self._cv:
            if self._closed:
                raise EngineClosedError("the engine loop is closed")
            self._inbox.append(fn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="havoc-engine", daemon=True)
                self._thread.start()
            self._cv.notify()

    def close(self) -> None:
        """Stop the thread; requests still running end with EngineClosedError in their streams."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -------------------------------------------------------------------------------------------- engine thread
    def _run(self) -> None:
        eng = self.engine
        while True:
            with self._cv:
                while not self._inbox and not self._closed and not eng.has_unfinished():
                    self._cv.wait()
                inbox, self._inbox = self._inbox, []
                closed = self._closed
            for fn in inbox:
                fn(eng)
            if closed:
                for r in list(eng.waiting) + list(eng.running):
                    if r.sink is not None:
                        r.sink(_CLOSED)
                    eng.abort(r)
                return
            if not eng.has_unfinished():
                continue
            try:
                outputs = eng.step()
            except BaseException as e:  # the engine itself broke: fail everyone rather than hang
                for r in list(eng.waiting) + list(eng.running):
                    if r.sink is not None:
                        r.sink(GenerationError(f"the engine failed: {type(e).__name__}: {e}"))
                    eng.abort(r)
                eng.step()  # collect the aborts' outputs (their streams are already ended)
                continue
            for out in outputs:
                sink = out.request.sink
                if sink is not None:
                    sink(out)
            if self.on_step is not None:
                try:
                    self.on_step(eng, outputs)
                except Exception:  # metrics must never stop generation
                    pass


__all__ = ["AsyncRequestStream", "EngineClosedError", "EngineLoop", "RequestStream"]
