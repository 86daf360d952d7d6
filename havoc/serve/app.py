"""`havoc serve`: an OpenAI-compatible HTTP server, a thin skin over the engine.

    app = build_app(Server(LLM.load("smollm2"), ServerConfig(model_name="smollm2")))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: POST /v1/chat/completions and /v1/completions (streamed as server-sent events when asked), GET
/v1/models, GET /health, GET /metrics (Prometheus), POST /tokenize and /detokenize, and the chat page at GET /
(static files shipped in havoc/serve/static, a client of these same endpoints). The model `havoc-prime`
answers with PRIME: its visible reasoning streams as `reasoning_content` (llama.cpp's and DeepSeek's name)
and `reasoning` (vLLM's), the verified answer as `content`, the route, each tool call and verification
under `prime` (see `protocol.Prime`); the pictures its tool calls drew are at GET /v1/prime/plots/{id}.

Handlers turn a request body into engine requests and engine outputs into OpenAI's JSON; the engine steps
in its own thread (`havoc.engine.EngineLoop`) and hands tokens to the event loop, which never does model
work. Requests are refused with OpenAI's error envelope and a 4xx: a body that does not validate or is too
large (400/413), an unknown model (404), an unknown path or a method the path does not take (404/405), a
missing or wrong API key (401), a prompt longer than the context (400, code context_length_exceeded), a full
waiting queue (503 with Retry-After). A client that disconnects aborts its requests (their blocks go back at
once); a request past the time limit is aborted and answered with a 504 (an error event when streaming).
Streams never hold half a UTF-8 character or a tail that could still become a stop string, and end with
`data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from havoc.engine import GrammarConstraint, SamplingParams, ToolCallConstraint
from havoc.engine.constraint import ConstraintError, tool_call_schema
from havoc.errors import GenerationError, HavocError
from havoc.serve import protocol as P
from havoc.serve.metrics import Metrics
from havoc.serve.tool_calls import ToolCallParser, call_text, render_tools

PRIME_MODEL = "havoc-prime"
STATIC = Path(__file__).parent / "static"
# The page's own files only: no inline script or style, no other origin, pictures as blob: URLs made from
# this server's /v1/prime/plots responses.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PLOT_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


@dataclass
class ServerConfig:
    """What `havoc serve`'s flags set.

    Attributes:
        model_name: the id clients send as `model` (and /v1/models lists).
        api_key: when set, /v1/*, /tokenize, /detokenize and /metrics need `Authorization: Bearer KEY`.
        max_waiting: requests waiting for admission before new ones get 503.
        request_timeout: seconds a request may run before it is aborted (504).
        max_body_bytes: largest request body.
        max_tokens_default: completion tokens when a request names none (None: what the context leaves).
        prime: serve the `havoc-prime` model.
        prime_plots: the format ("png" or "svg") PRIME's tool calls draw their pictures in; None draws none.
        max_plots: pictures kept for GET /v1/prime/plots (the oldest are deleted past it).
    """

    model_name: str = "havoc"
    api_key: str | None = None
    max_waiting: int = 256
    request_timeout: float = 600.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_tokens_default: int | None = None
    prime: bool = True
    prime_plots: str | None = "png"
    max_plots: int = 256


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(P.error_body(self.message, self.type, self.param, self.code), status_code=self.status,
                            headers=self.headers)


class PlotStore:
    """The pictures PRIME's tool calls drew, each under an unguessable id, the newest `limit` kept.

    Only files the tool registry wrote into its plot folder are taken; an evicted picture's file is deleted.
    Thread-safe: PRIME runs add from their worker threads, requests read from the event loop.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = max(1, limit)
        self.files: OrderedDict[str, tuple[Path, str]] = OrderedDict()
        self.lock = threading.Lock()

    def add(self, plot: dict) -> str | None:
        """Register a record's plot ({"path", "format", ...}); returns its id, None if it is not one to serve."""
        from havoc.tools import default_registry

        fmt = plot.get("format")
        try:
            path = Path(plot["path"]).resolve(strict=True)
            root = default_registry().plot_dir.resolve(strict=True)
        except (KeyError, TypeError, OSError):
            return None
        if fmt not in PLOT_TYPES or path.parent != root or path.suffix != f".{fmt}":
            return None
        pid = secrets.token_urlsafe(16)
        with self.lock:
            self.files[pid] = (path, fmt)
            old = [self.files.popitem(last=False)[1][0] for _ in range(len(self.files) - self.limit)]
        for p in old:
            try:
                os.unlink(p)
            except OSError:
                pass
        return pid

    def get(self, pid: str) -> tuple[Path, str] | None:
        with self.lock:
            return self.files.get(pid)


class Server:
    """The served model and its engine.

    Args:
        llm: the `havoc.LLM` to serve (its engine loop serves every request).
        config: limits and names.
    """

    def __init__(self, llm, config: ServerConfig | None = None) -> None:
        self.llm = llm
        self.config = config or ServerConfig()
        self.loop = llm.loop
        self.engine = self.loop.engine
        self.tokenizer = llm.tokenizer
        self.max_len = self.engine.max_len
        self.metrics = Metrics(self.engine, self.config.model_name)
        self.loop.on_step = self.metrics.on_step
        self.created = int(time.time())
        self.prime_lock = threading.Lock()
        self.plots = PlotStore(self.config.max_plots)

    def prime_call(self, record: dict) -> P.PrimeToolCall:
        """A PRIME call record on the wire: its picture registered and named by URL (file work: call it from
        a worker thread)."""
        plot = None
        if record.get("plot"):
            pid = self.plots.add(record["plot"])
            if pid is not None:
                p = record["plot"]
                plot = P.PrimePlot(url=f"/v1/prime/plots/{pid}", format=p["format"], width_px=p["width_px"],
                                   height_px=p["height_px"], kind=p.get("kind", "plot"))
        attempts = [P.PrimeAttempt(text=a.get("text", ""), json_valid=a.get("json_valid", False),
                                   executed=a.get("executed", False), problems=a.get("problems", []))
                    for a in record.get("attempts", [])]
        return P.PrimeToolCall(
            index=record["index"], subgoal=record.get("subgoal"), tool=record["tool"], operation=record.get("operation"),
            label=record.get("label"), args=record.get("args"), resolution=record["resolution"],
            summary=record.get("summary"), result=record.get("result"), error=record.get("error"), plot=plot,
            attempts=attempts)

    # ---------------------------------------------------------------------------------------- prompts
    def chat_ids(self, messages: list[P.ChatMessage], tools: list[dict] | None) -> list[int]:
        """The conversation rendered with the model's chat template (tools listed in the system message)."""
        msgs = []
        for m in messages:
            role = "system" if m.role == "developer" else m.role
            text = m.text()
            if m.role == "assistant" and m.tool_calls:
                text += "".join(call_text(c.function.name, c.function.arguments) for c in m.tool_calls)
            if m.role == "tool":
                text = f"<result>{text}</result>"
            msgs.append({"role": role, "content": text})
        if tools:
            listing = render_tools(tools)
            if msgs and msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": msgs[0]["content"] + "\n\n" + listing}
            else:
                msgs.insert(0, {"role": "system", "content": listing})
        if self.tokenizer.chat_template is None:
            raise APIError(400, "this model has no chat template: use /v1/completions")
        try:
            text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True)
        except HavocError as e:
            raise APIError(400, f"the messages cannot be rendered with the chat template: {e}", param="messages") from None
        return self.tokenizer.encode(text, add_bos=False)

    def check_room(self, n_prompt: int, param: str) -> None:
        if n_prompt >= self.max_len:
            raise APIError(400, f"This model's maximum context length is {self.max_len} tokens. However, your "
                           f"{param} resulted in {n_prompt} tokens, which leaves no room for a completion.",
                           param=param, code="context_length_exceeded")

    def params(self, body: P._Sampling, max_tokens: int | None, n_prompt: int, *, logprobs: int | None,
               seed_offset: int = 0) -> SamplingParams:
        room = self.max_len - n_prompt
        want = max_tokens if max_tokens is not None else (self.config.max_tokens_default or room)
        top_k = body.top_k if body.top_k and body.top_k > 0 else 0
        seed = None if body.seed is None else body.seed + seed_offset
        try:
            return SamplingParams(
                max_new_tokens=max(1, min(want, room)), temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p, top_k=top_k,
                repetition_penalty=body.repetition_penalty or 1.0, presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty, seed=seed, stop=tuple(body.stop or ()), logprobs=logprobs,
                ignore_eos=body.ignore_eos,
            )
        except GenerationError as e:
            raise APIError(400, str(e)) from None

    def logit_bias_hook(self, bias: dict[str, float] | None):
        if not bias:
            return None
        V = self.engine.config.vocab_size
        ids = [int(k) for k in bias]
        bad = [i for i in ids if not 0 <= i < V]
        if bad:
            raise APIError(400, f"logit_bias names token ids outside the vocabulary [0, {V}): {bad[:5]}", param="logit_bias")
        import torch

        idx = torch.tensor(ids, dtype=torch.long)
        val = torch.tensor([bias[k] for k in bias], dtype=torch.float32)

        def hook(_ids, logits):
            logits.index_add_(0, idx, val)

        return hook

    def admit(self) -> None:
        if self.engine.num_waiting >= self.config.max_waiting:
            raise APIError(503, f"the server is busy: {self.engine.num_waiting} requests are waiting; retry shortly",
                           type_="server_busy", headers={"Retry-After": "1"})

    # ---------------------------------------------------------------------------------------- running
    async def run_choices(self, http: Request, prompt_ids: list[int], params_for, n: int, constraint_for,
                          hook) -> AsyncIterator[tuple[int, object]]:
        """Run n choices of one prompt (forks of one prefilled prompt when n > 1); yields (choice, output)
        as they come. Aborts every choice when the consumer stops or the client goes away."""
        streams = []
        try:
            if n == 1:
                streams.append(self.loop.submit_async(prompt_ids, params_for(0), constraint=constraint_for(),
                                                      logits_hook=hook))
            else:  # the prompt once, then n forks of it (copy-on-write)
                holder = self.loop.submit_async(prompt_ids, SamplingParams(max_new_tokens=1), hold=True, prefill_only=True)
                async for _ in holder:
                    pass
                parent = holder.request
                if parent.finish_reason not in ("length", "stop"):
                    raise APIError(500, f"the prompt could not be computed: {parent.error or parent.finish_reason}",
                                   type_="server_error")
                try:
                    for i in range(n):
                        streams.append(self.loop.submit_async([], params_for(i), parent=parent,
                                                              constraint=constraint_for(), logits_hook=hook))
                finally:
                    self.loop._call(lambda eng: eng.release(parent))
            queue: asyncio.Queue = asyncio.Queue()

            async def pump(i, s):
                try:
                    async for out in s:
                        await queue.put((i, out))
                except BaseException as e:  # noqa: BLE001 - handed to the consumer
                    await queue.put((i, e))
                finally:
                    await queue.put((i, None))

            tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
            watcher = asyncio.create_task(_watch_disconnect(http))
            done = 0
            deadline = time.monotonic() + self.config.request_timeout
            try:
                while done < n:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise APIError(504, f"the request ran past the server's time limit of "
                                       f"{self.config.request_timeout:g} s and was stopped", type_="timeout_error")
                    get = asyncio.create_task(queue.get())
                    finished, _ = await asyncio.wait({get, watcher}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                    if watcher in finished:
                        get.cancel()
                        raise asyncio.CancelledError("client disconnected")
                    if get not in finished:
                        get.cancel()
                        continue
                    i, item = get.result()
                    if item is None:
                        done += 1
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        yield i, item
            finally:
                watcher.cancel()
                for t in tasks:
                    t.cancel()
        finally:
            for s in streams:
                s.close()


async def _watch_disconnect(http: Request) -> None:
    # NOTE: a stream notices a gone client at its next send; this also catches one whose request is
    # still waiting for admission (no token sent yet), within 0.1 s.
    while not await http.is_disconnected():
        await asyncio.sleep(0.1)


def _text_logprobs(tokenizer, lp_list) -> P.ChoiceLogprobs:
    out = []
    for lp in lp_list:
        tok = tokenizer.decode([lp.token_id])
        out.append(P.TokenLogprobOut(
            token=tok, logprob=_finite(lp.logprob), bytes=list(tok.encode()),
            top_logprobs=[P.TopLogprob(token=(t := tokenizer.decode([i])), logprob=_finite(v), bytes=list(t.encode()))
                          for i, v in lp.top]))
    return P.ChoiceLogprobs(content=out)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0  # OpenAI's stand-in for -inf


def _usage(prompt_tokens: int, completion_tokens: int, cached: int) -> P.Usage:
    return P.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens,
                   prompt_tokens_details=P.PromptTokensDetails(cached_tokens=cached))


def _sse(obj: BaseModel | dict) -> bytes:
    data = obj.model_dump_json(exclude_none=True) if isinstance(obj, BaseModel) else json.dumps(obj)
    return f"data: {data}\n\n".encode()


_DONE = b"data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------------ the app
def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def build_app(server: Server) -> FastAPI:
    """The FastAPI application serving `server`."""
    cfg = server.config
    app = FastAPI(title="havoc", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    def endpoint(request: Request) -> str:
        # The route's template (/v1/prime/plots/{pid}), never the raw path: every distinct label value is a
        # Prometheus series kept for the server's life, and clients choose paths.
        route = request.scope.get("route")
        return getattr(route, "path", "unmatched")

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        server.metrics.http.labels(endpoint(request), str(exc.status)).inc()
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _routing_error(request: Request, exc: HTTPException):
        # Starlette's own refusals, before any handler runs: no route has the path (404), or none takes the
        # method (405, with Allow). OpenAI words the first "Invalid URL (GET /v1/nope)".
        where = f"{request.method} {request.url.path[:200]}"
        if exc.status_code == 404:
            message, code = f"Invalid URL ({where})", "not_found"
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow")
            message = f"Method not allowed ({where})" + (f"; this path takes {allow}" if allow else "")
            code = "method_not_allowed"
        else:
            message, code = f"{exc.detail} ({where})", None
        type_ = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        server.metrics.http.labels(endpoint(request), str(exc.status_code)).inc()
        return JSONResponse(P.error_body(message, type_, code=code), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # a bug: still OpenAI's envelope, and logged
        import logging

        logging.getLogger("havoc.serve").exception("internal error on %s", request.url.path)
        return JSONResponse(P.error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)

    def authorize(request: Request) -> None:
        if cfg.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if header != f"Bearer {cfg.api_key}":
            raise APIError(401, "invalid or missing API key: send Authorization: Bearer <key>",
                           type_="authentication_error", code="invalid_api_key")

    async def parse(request: Request, model: type[BaseModel]) -> BaseModel:
        authorize(request)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > cfg.max_body_bytes:
            raise APIError(413, f"the request body is {int(size)} bytes; the limit is {cfg.max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                raise APIError(413, f"the request body is over the limit of {cfg.max_body_bytes} bytes")
        try:
            data = json.loads(body, parse_constant=_no_constant)
            # A \ud800 escape parses to a lone surrogate, which is no text: the tokenizer raised TypeError (500).
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(400, "the request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not text") from None
        except (ValueError, RecursionError) as e:
            raise APIError(400, f"the request body is not valid JSON: {str(e)[:200]}") from None
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ())) or None
            raise APIError(400, f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"),
                           param=where) from None
        except RecursionError:
            raise APIError(400, "the request body is nested too deeply") from None

    def check_model(name: str) -> bool:
        """True for the PRIME model."""
        if name == PRIME_MODEL and cfg.prime:
            return True
        if name != cfg.model_name:
            known = [cfg.model_name] + ([PRIME_MODEL] if cfg.prime else [])
            raise APIError(404, f"The model `{name}` does not exist; this server has {', '.join(known)}",
                           param="model", code="model_not_found")
        return False

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    # ------------------------------------------------------------------------------------ the page
    # The chat page: static files of one flat folder, named here at start-up (no path from a request ever
    # reaches the file system). It needs no key: it holds nothing; its requests to /v1 send the user's.
    page_files = {f.name: f for f in STATIC.iterdir() if f.is_file() and f.suffix in _STATIC_TYPES} \
        if STATIC.is_dir() else {}

    @app.get("/")
    async def page():
        if "index.html" not in page_files:
            raise APIError(404, "the chat page is not installed with this copy of havoc", code="page_not_found")
        return FileResponse(page_files["index.html"], media_type=_STATIC_TYPES[".html"],
                            headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str):
        f = page_files.get(name)
        if f is None:
            raise APIError(404, f"no such file: /static/{name[:80]}", code="not_found")
        return FileResponse(f, media_type=_STATIC_TYPES[f.suffix], headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/v1/prime/plots/{pid}")
    async def prime_plot(request: Request, pid: str):
        authorize(request)
        hit = server.plots.get(pid)
        if hit is None or not hit[0].is_file():
            raise APIError(404, f"no such picture; the newest {cfg.max_plots} of PRIME's pictures are kept",
                           code="plot_not_found")
        path, fmt = hit
        # An SVG opened on its own runs nothing: no script, no other origin.
        return FileResponse(path, media_type=PLOT_TYPES[fmt], headers={
            "Cache-Control": "private, max-age=86400, immutable", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"})

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        cards = [P.ModelCard(id=cfg.model_name, created=server.created, max_model_len=server.max_len)]
        if cfg.prime:
            cards.append(P.ModelCard(id=PRIME_MODEL, created=server.created, max_model_len=server.max_len))
        return P.ModelList(data=cards).model_dump(exclude_none=True)

    @app.get("/metrics")
    async def metrics(request: Request):
        authorize(request)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await parse(request, P.TokenizeRequest)
        if body.messages is not None:
            ids = server.chat_ids(body.messages, None)
        else:
            ids = server.tokenizer.encode(body.prompt, add_bos=None if body.add_special_tokens else False)
        return {"tokens": ids, "count": len(ids), "max_model_len": server.max_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await parse(request, P.DetokenizeRequest)
        V = server.engine.config.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < V]
        if bad:
            raise APIError(400, f"token ids outside the vocabulary [0, {V}): {bad[:5]}", param="tokens")
        return {"prompt": server.tokenizer.decode(body.tokens)}

    # ------------------------------------------------------------------------------------ chat
    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body: P.ChatCompletionRequest = await parse(request, P.ChatCompletionRequest)
        if check_model(body.model):
            return await prime_chat(request, body)
        server.admit()
        choice = body.tool_choice or ("auto" if body.tools else "none")
        tools = [t.model_dump(exclude_none=True) for t in body.tools or []] if choice != "none" else []
        if isinstance(choice, P.NamedToolChoice):
            tools = [t for t in tools if t["function"]["name"] == choice.function.name]
        prompt_ids = server.chat_ids(body.messages, tools)
        server.check_room(len(prompt_ids), "messages")
        top = (body.top_logprobs or 0) if body.logprobs else None
        max_tokens = body.max_completion_tokens or body.max_tokens
        constraint_for = _constraint_factory(server, body, tools, choice)
        hook = server.logit_bias_hook(body.logit_bias)
        names = {t["function"]["name"] for t in tools}
        rid, created = P.new_id("chatcmpl"), P.now()

        def params_for(i):
            return server.params(body, max_tokens, len(prompt_ids), logprobs=top, seed_offset=i)

        params_for(0)  # bad parameters are refused before anything runs
        outputs = server.run_choices(request, prompt_ids, params_for, body.n, constraint_for, hook)
        if body.stream:
            return _stream_response(_chat_stream(server, body, outputs, rid, created, len(prompt_ids), names))
        parsers = [ToolCallParser(names) for _ in range(body.n)] if tools else None
        reqs: dict[int, object] = {}
        lps: dict[int, list] = {i: [] for i in range(body.n)}
        async for i, out in outputs:
            reqs[i] = out.request
            if out.logprobs:
                lps[i] += out.logprobs
        choices = []
        for i in range(body.n):
            r = reqs[i]
            if r.finish_reason == "error":
                raise APIError(500, f"generation failed: {r.error}", type_="server_error")
            text, calls = r.text or "", None
            if parsers is not None:
                parsers[i].feed(text)
                parsers[i].finish()
                text = parsers[i].content
                calls = [P.ToolCall(id=c.id, function=P.ToolCallFunction(name=c.name, arguments=c.arguments))
                         for c in parsers[i].calls] or None
            reason = "tool_calls" if calls and r.finish_reason == "stop" else r.finish_reason
            choices.append(P.ChatChoice(
                index=i, message=P.AssistantMessage(content=text if (text or not calls) else None, tool_calls=calls),
                logprobs=_text_logprobs(server.tokenizer, lps[i]) if body.logprobs else None,
                finish_reason=reason))
        completion_tokens = sum(r.num_output for r in reqs.values())
        resp = P.ChatCompletion(id=rid, created=created, model=body.model, choices=choices,
                                usage=_usage(len(prompt_ids), completion_tokens, reqs[0].num_cached_tokens))
        server.metrics.http.labels("/v1/chat/completions", "200").inc()
        return JSONResponse(resp.model_dump(exclude_none=True))

    # ------------------------------------------------------------------------------------ completions
    @app.post("/v1/completions")
    async def completions(request: Request):
        body: P.CompletionRequest = await parse(request, P.CompletionRequest)
        if check_model(body.model):
            raise APIError(400, f"{PRIME_MODEL} answers chat completions only", param="model")
        server.admit()
        prompts = _prompts(server, body.prompt)
        for ids in prompts:
            server.check_room(len(ids), "prompt")
        if body.stream and len(prompts) > 1:
            raise APIError(400, "streaming takes one prompt", param="prompt")
        hook = server.logit_bias_hook(body.logit_bias)
        rid, created = P.new_id("cmpl"), P.now()
        lp = body.logprobs
        if body.stream:
            ids = prompts[0]

            def params_for(i):
                return server.params(body, body.max_tokens, len(ids), logprobs=lp, seed_offset=i)

            params_for(0)
            outputs = server.run_choices(request, ids, params_for, body.n, lambda: None, hook)
            return _stream_response(_completion_stream(server, body, outputs, rid, created, ids))
        choices, usage = [], [0, 0, 0]
        for k, ids in enumerate(prompts):
            def params_for(i, ids=ids):
                return server.params(body, body.max_tokens, len(ids), logprobs=lp, seed_offset=i)

            params_for(0)
            reqs: dict[int, object] = {}
            lps: dict[int, list] = {i: [] for i in range(body.n)}
            async for i, out in server.run_choices(request, ids, params_for, body.n, lambda: None, hook):
                reqs[i] = out.request
                if out.logprobs:
                    lps[i] += out.logprobs
            prefix = server.tokenizer.decode(ids) if body.echo else ""
            for i in range(body.n):
                r = reqs[i]
                if r.finish_reason == "error":
                    raise APIError(500, f"generation failed: {r.error}", type_="server_error")
                choices.append(P.CompletionChoice(
                    index=k * body.n + i, text=prefix + (r.text or ""), finish_reason=r.finish_reason,
                    logprobs=_completion_logprobs(server.tokenizer, lps[i], len(prefix)) if lp is not None else None))
                usage[1] += r.num_output
            usage[0] += len(ids)
            usage[2] += reqs[0].num_cached_tokens
        resp = P.Completion(id=rid, created=created, model=body.model, choices=choices,
                            usage=_usage(usage[0], usage[1], usage[2]))
        server.metrics.http.labels("/v1/completions", "200").inc()
        return JSONResponse(resp.model_dump(exclude_none=True))

    # ------------------------------------------------------------------------------------ PRIME
    async def prime_chat(request: Request, body: P.ChatCompletionRequest):
        from havoc.prime import generate_with_prime

        users = [m for m in body.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise APIError(400, f"{PRIME_MODEL} needs a user message to answer", param="messages")
        if body.n != 1:
            raise APIError(400, f"{PRIME_MODEL} answers one choice (n=1)", param="n")
        prompt = users[-1].text()
        budget = body.max_completion_tokens or body.max_tokens or 384
        temperature = 0.0 if body.temperature is None else body.temperature
        rid, created = P.new_id("chatcmpl"), P.now()
        aio = asyncio.get_running_loop()
        # Text pieces (str) and structure (P.Prime) in the order the run produced them.
        pieces: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        wired: dict[int, P.PrimeToolCall] = {}  # call index -> its wire form (its picture registered once)

        def put(item) -> None:
            if cancelled.is_set():
                raise _Cancelled()
            aio.call_soon_threadsafe(pieces.put_nowait, item)

        def on_event(kind: str, data: dict) -> None:  # in the PRIME thread: file work stays off the loop
            if kind == "routing":
                put(P.Prime(routing=data))
            elif kind == "tool_call":
                wired[data["index"]] = call = server.prime_call(data)
                put(P.Prime(tool_call=call))

        def run():
            result = generate_with_prime(prompt, llm=server.llm, max_new_tokens=budget, temperature=temperature,
                                         seed=body.seed or 0, on_text=put, on_event=on_event,
                                         plots=cfg.prime_plots)
            for c in result.tool_calls:  # every call was sent as resolved; this only covers a listener's gap
                if c["index"] not in wired:
                    wired[c["index"]] = server.prime_call(c)
            return result

        task = asyncio.ensure_future(asyncio.to_thread(run))

        async def events():
            watcher = asyncio.create_task(_watch_disconnect(request))
            try:
                while True:
                    get = asyncio.create_task(pieces.get())
                    done, _ = await asyncio.wait({get, task, watcher}, return_when=asyncio.FIRST_COMPLETED)
                    if watcher in done:
                        get.cancel()
                        raise asyncio.CancelledError("client disconnected")
                    if get in done:
                        yield get.result()
                        continue
                    get.cancel()
                    while not pieces.empty():
                        yield pieces.get_nowait()
                    return
            finally:
                watcher.cancel()
                if not task.done():
                    cancelled.set()

        def finish(result) -> tuple[P.Prime, P.Usage]:
            extra = P.Prime(routing=result.routing, verification=result.verification,
                            tool_calls=[wired[c["index"]] for c in result.tool_calls], stats=result.stats)
            n_prompt = len(server.tokenizer.encode(prompt))
            return extra, _usage(n_prompt, result.stats["generated_tokens"], 0)

        if body.stream:
            async def stream():
                first = True
                async for item in events():
                    if isinstance(item, P.Prime):
                        delta, extra = P.Delta(), item
                    else:
                        delta, extra = P.Delta(reasoning_content=item, reasoning=item), None
                    if first:
                        delta.role, first = "assistant", False
                    yield _sse(P.ChatCompletionChunk(id=rid, created=created, model=body.model, prime=extra,
                                                     choices=[P.ChunkChoice(index=0, delta=delta)]))
                try:
                    result = await task
                except HavocError as e:
                    yield _sse(P.error_body(str(e), "invalid_request_error"))
                    yield _DONE
                    return
                extra, usage = finish(result)
                yield _sse(P.ChatCompletionChunk(
                    id=rid, created=created, model=body.model, prime=extra,
                    choices=[P.ChunkChoice(index=0, delta=P.Delta(role="assistant" if first else None,
                                                                  content=result.answer), finish_reason="stop")]))
                if body.stream_options and body.stream_options.include_usage:
                    yield _sse(P.ChatCompletionChunk(id=rid, created=created, model=body.model, choices=[], usage=usage))
                yield _DONE

            return _stream_response(stream())
        async for _ in events():
            pass
        try:
            result = await task
        except HavocError as e:
            raise APIError(400, str(e)) from None
        extra, usage = finish(result)
        msg = P.AssistantMessage(content=result.answer, reasoning_content=result.text, reasoning=result.text)
        resp = P.ChatCompletion(id=rid, created=created, model=body.model, usage=usage, prime=extra,
                                choices=[P.ChatChoice(index=0, message=msg, finish_reason="stop")])
        return JSONResponse(resp.model_dump(exclude_none=True))

    return app


_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


class _Cancelled(Exception):
    """Raised inside a PRIME run whose client went away: the run stops and frees its contexts."""


def _constraint_factory(server: Server, body: P.ChatCompletionRequest, tools: list[dict], choice):
    """A function making each choice's constraint (a grammar is stateful: one per request)."""
    fmt = body.response_format
    if fmt is not None and fmt.type != "text" and tools:
        raise APIError(400, "response_format and tools cannot be used together (set tool_choice to none)",
                       param="response_format")
    schema = None
    if fmt is not None and fmt.type == "json_object":
        schema = {"type": "object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = fmt.json_schema.schema_
    tok, V = server.tokenizer, server.engine.config.vocab_size
    try:
        if schema is not None:
            GrammarConstraint.json_schema(tok, schema, V)  # compile now: a bad schema is a 400, not a failed stream

            def make():
                return GrammarConstraint.json_schema(tok, schema, V)

            return make
        if tools:
            call_schema = tool_call_schema([t["function"] for t in tools])
            required = choice == "required" or isinstance(choice, P.NamedToolChoice)
            ToolCallConstraint(tok, call_schema, V, required=required)

            def make():
                return ToolCallConstraint(tok, call_schema, V, required=required)

            return make
    except ConstraintError as e:
        raise APIError(400, f"the schema cannot be used: {e}",
                       param="response_format" if schema is not None else "tools") from None
    return lambda: None


def _prompts(server: Server, prompt) -> list[list[int]]:
    V = server.engine.config.vocab_size

    def ids_of(p) -> list[int]:
        if isinstance(p, str):
            if not p:
                raise APIError(400, "prompt is empty", param="prompt")
            return server.tokenizer.encode(p)
        bad = [t for t in p if not 0 <= t < V]
        if bad or not p:
            raise APIError(400, f"prompt token ids must be in [0, {V}) and not empty", param="prompt")
        return list(p)

    if isinstance(prompt, str):
        return [ids_of(prompt)]
    if prompt and isinstance(prompt[0], int):
        return [ids_of(prompt)]
    if len(prompt) > 64:
        raise APIError(400, "at most 64 prompts per request", param="prompt")
    return [ids_of(p) for p in prompt]


def _completion_logprobs(tokenizer, lp_list, offset: int) -> P.CompletionLogprobs:
    out = P.CompletionLogprobs()
    pos = offset
    for lp in lp_list:
        tok = tokenizer.decode([lp.token_id])
        out.tokens.append(tok)
        out.token_logprobs.append(_finite(lp.logprob))
        out.top_logprobs.append({tokenizer.decode([i]): _finite(v) for i, v in lp.top} if lp.top else None)
        out.text_offset.append(pos)
        pos += len(tok)
    return out


def _stream_response(gen) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _guarded(gen):
    """An error after the stream started is an error event, then [DONE] (the status is already sent)."""
    try:
        async for chunk in gen:
            yield chunk
    except APIError as e:
        yield _sse(P.error_body(e.message, e.type, e.param, e.code))
        yield _DONE
    except HavocError as e:
        yield _sse(P.error_body(str(e), "server_error"))
        yield _DONE


async def _chat_stream(server: Server, body, outputs, rid, created, n_prompt, names):
    async def gen():
        parsers = [ToolCallParser(names) for _ in range(body.n)] if names else None
        first = [True] * body.n
        reqs: dict[int, object] = {}

        def chunk(i, delta: P.Delta, finish=None, logprobs=None) -> bytes:
            if first[i]:
                delta.role = "assistant"
                first[i] = False
            return _sse(P.ChatCompletionChunk(id=rid, created=created, model=body.model,
                                              choices=[P.ChunkChoice(index=i, delta=delta, finish_reason=finish,
                                                                     logprobs=logprobs)]))

        def deltas(i, events) -> list[P.Delta]:
            out = []
            for ev in events:
                if ev.kind == "content" and ev.text:
                    out.append(P.Delta(content=ev.text))
                elif ev.kind == "call":
                    c = ev.call
                    out.append(P.Delta(tool_calls=[P.DeltaToolCall(
                        index=c.index, id=c.id, type="function", function=P.DeltaToolCallFunction(name=c.name, arguments=""))]))
                elif ev.kind == "args" and ev.text:
                    out.append(P.Delta(tool_calls=[P.DeltaToolCall(
                        index=ev.call.index, function=P.DeltaToolCallFunction(arguments=ev.text))]))
            return out

        async for i, out in outputs:
            reqs[i] = out.request
            lp = _text_logprobs(server.tokenizer, out.logprobs) if body.logprobs and out.logprobs else None
            pieces = deltas(i, parsers[i].feed(out.text)) if parsers is not None else (
                [P.Delta(content=out.text)] if out.text else [])
            if out.finished and parsers is not None:
                pieces += deltas(i, parsers[i].finish())
            if lp is not None and not pieces:
                pieces = [P.Delta(content="")]
            for k, d in enumerate(pieces):
                yield chunk(i, d, logprobs=lp if k == 0 else None)
            if out.finished:
                if out.finish_reason == "error":
                    raise APIError(500, f"generation failed: {out.request.error}", type_="server_error")
                reason = out.finish_reason
                if parsers is not None and parsers[i].calls and reason == "stop":
                    reason = "tool_calls"
                yield chunk(i, P.Delta(), finish=reason)
        if body.stream_options and body.stream_options.include_usage and reqs:
            usage = _usage(n_prompt, sum(r.num_output for r in reqs.values()), reqs[0].num_cached_tokens)
            yield _sse(P.ChatCompletionChunk(id=rid, created=created, model=body.model, choices=[], usage=usage))
        yield _DONE

    async for c in _guarded(gen()):
        yield c


async def _completion_stream(server: Server, body, outputs, rid, created, ids):
    async def gen():
        reqs: dict[int, object] = {}
        offset = {i: 0 for i in range(body.n)}
        if body.echo:
            text = server.tokenizer.decode(ids)
            for i in range(body.n):
                offset[i] = len(text)
                yield _sse(P.Completion(id=rid, created=created, model=body.model,
                                        choices=[P.CompletionChoice(index=i, text=text)]))
        async for i, out in outputs:
            reqs[i] = out.request
            lp = None
            if body.logprobs is not None and out.logprobs:
                lp = _completion_logprobs(server.tokenizer, out.logprobs, offset[i])
            if out.finish_reason == "error":
                raise APIError(500, f"generation failed: {out.request.error}", type_="server_error")
            if out.text or out.finished or lp is not None:
                offset[i] += len(out.text)
                yield _sse(P.Completion(id=rid, created=created, model=body.model, choices=[
                    P.CompletionChoice(index=i, text=out.text, logprobs=lp, finish_reason=out.finish_reason)]))
        if body.stream_options and body.stream_options.include_usage and reqs:
            usage = _usage(len(ids), sum(r.num_output for r in reqs.values()), reqs[0].num_cached_tokens)
            yield _sse(P.Completion(id=rid, created=created, model=body.model, choices=[], usage=usage))
        yield _DONE

    async for c in _guarded(gen()):
        yield c


__all__ = ["PRIME_MODEL", "APIError", "Server", "ServerConfig", "build_app"]
