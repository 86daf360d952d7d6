"""`havoc serve` for real: the server started on 127.0.0.1 (the CLI in a subprocess, or in-process where the
test must look inside the engine), driven by OpenAI's own Python client and raw HTTP, then stopped.

The tiny model (random weights, a real byte-level tokenizer and chat template) checks the wire format,
streaming, parameters, structured output, tool calls, errors, auth, disconnects, overload and a bounded
load test; SmolLM2 (marked `model`) checks real answers, a tool call and PRIME over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import httpx
import jsonschema
import openai
import pytest

from havoc.serve.tool_calls import ToolCallParser

from .gguf_files import write_tiny_gguf

HOST = "127.0.0.1"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`havoc serve ARGS` on a free port of 127.0.0.1, stopped on exit (bounded waits everywhere)."""

    def __init__(self, *args: str, timeout: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "havoc.cli", "serve", "--host", HOST, "--port", str(self.port), *args]
        env = {**os.environ, "HAVOC_API_KEY": ""}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"havoc serve exited: {self.proc.stdout.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("havoc serve did not come up")

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, timeout=120, **kw)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(self.url + "/metrics", timeout=10).text)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("serve") / "tiny.gguf", meta={"llama.context_length": 2048})


@pytest.fixture(scope="module")
def server(tiny_gguf):
    s = ServerProcess("--model", str(tiny_gguf), "--served-model-name", "tiny", "--max-body-mb", "0.05",
                      "--kv-cache-tokens", "2048")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def chat(client, content="hello", **kw):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **kw)


# ------------------------------------------------------------------------------------------ the wire
def test_models_health_and_a_chat_completion(server, client):
    assert httpx.get(server.url + "/health", timeout=5).json() == {"status": "ok"}
    assert [m.id for m in client.models.list().data] == ["tiny", "havoc-prime"]
    out = chat(client, max_tokens=7, seed=1)
    assert out.object == "chat.completion" and out.model == "tiny"
    c = out.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str) and c.finish_reason == "length"
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == out.usage.prompt_tokens + 7


def test_streaming_gives_the_non_streamed_answer_with_usage_last(client):
    kw = dict(max_tokens=24, seed=3, temperature=0.9)
    whole = chat(client, "tell me", **kw)
    chunks = list(chat(client, "tell me", stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0  # the same prompt again: prefix cache


def test_raw_stream_ends_with_done_and_never_splits_a_character(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 40, "seed": 4,
            "temperature": 1.0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    for ln in lines[:-1]:
        piece = json.loads(ln[len("data: "):])["choices"][0]["delta"].get("content") or ""
        piece.encode("utf-8")  # a lone surrogate (half a character) would raise


def test_completions_stream_echo_and_logprobs(client):
    kw = dict(model="tiny", prompt="abc", max_tokens=10, seed=5, temperature=0.8)
    whole = client.completions.create(**kw, logprobs=2, echo=True)
    c = whole.choices[0]
    assert c.text.startswith("abc") and len(c.logprobs.tokens) == 10
    assert all(lp <= 0 for lp in c.logprobs.token_logprobs) and all(len(t) <= 2 for t in c.logprobs.top_logprobs)
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(**kw, stream=True) if ch.choices)
    assert "abc" + streamed == c.text
    many = client.completions.create(model="tiny", prompt=["a", "b"], max_tokens=3, n=2, seed=1, temperature=1.0)
    assert [ch.index for ch in many.choices] == [0, 1, 2, 3]
    ids = client.completions.create(model="tiny", prompt=[104, 101, 108], max_tokens=2)
    assert ids.usage.prompt_tokens == 3


def test_stop_seed_n_and_logprobs(client):
    free = chat(client, "go", max_tokens=40, seed=7, temperature=1.0).choices[0].message.content
    stop = free[8:10]
    cut = chat(client, "go", max_tokens=40, seed=7, temperature=1.0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == free[: free.index(stop)]
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       chat(client, "go", max_tokens=40, seed=7, temperature=1.0, stop=[stop], stream=True) if c.choices)
    assert streamed == cut.choices[0].message.content
    assert chat(client, "go", max_tokens=12, seed=8, temperature=1.0).choices[0].message.content == \
        chat(client, "go", max_tokens=12, seed=8, temperature=1.0).choices[0].message.content
    three = chat(client, "go", max_tokens=12, seed=9, temperature=1.0, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert len({c.message.content for c in three.choices}) > 1  # each choice samples with its own seed
    assert three.usage.completion_tokens == 36
    lp = chat(client, "go", max_tokens=4, logprobs=True, top_logprobs=3, seed=1).choices[0].logprobs.content
    assert len(lp) == 4 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp)


def test_json_schema_output_always_validates(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                               "tags": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
              "required": ["name", "tags"], "additionalProperties": False}
    for seed in range(3):
        out = chat(client, "a person", max_tokens=200, seed=seed, temperature=1.0,
                   response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}})
        assert out.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.choices[0].message.content), schema)
    # any object: a random model may write one long key until the budget ends ("length"); when it stops, it parses
    obj = chat(client, "json", max_tokens=60, seed=1, temperature=1.0, response_format={"type": "json_object"})
    assert obj.choices[0].message.content.startswith("{")
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict)
    else:
        assert obj.choices[0].finish_reason == "length"


def test_tool_calls_parse_validate_and_stream_the_same(client):
    kw = dict(max_tokens=200, seed=2, temperature=1.0, tools=[WEATHER], tool_choice="required")
    out = chat(client, "weather in Paris?", **kw)
    c = out.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    chunks = list(chat(client, "weather in Paris?", stream=True, **kw))
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    named = chat(client, "x", max_tokens=200, seed=3, temperature=1.0, tools=[WEATHER],
                 tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_weather"
    # the call and its result go back into the conversation
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    after = client.chat.completions.create(model="tiny", messages=history, tools=[WEATHER], max_tokens=5, seed=1)
    assert after.choices[0].finish_reason in ("length", "stop", "tool_calls")
    none = chat(client, "x", max_tokens=5, seed=1, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_the_tool_call_parser_does_not_depend_on_where_the_stream_is_cut(cut):
    text = ('Sure. <tool>{"tool":"get_weather","args":{"city":"P\\"a{r}is","unit":"C"}}</tool> and '
            '<tool> {"tool": "get_weather", "args": {"city": "Oslo", "unit": "F"}}</tool><to')
    rng = random.Random(cut)
    for _ in range(200):
        points = sorted(rng.sample(range(1, len(text)), cut))
        parts = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
        p, q = ToolCallParser({"get_weather"}), ToolCallParser({"get_weather"})
        events = [e for part in parts for e in p.feed(part)] + p.finish()
        q.feed(text)
        q.finish()
        assert p.content == q.content == "Sure.  and <to"
        assert [(c.name, c.arguments) for c in p.calls] == [(c.name, c.arguments) for c in q.calls]
        assert "".join(e.text for e in events if e.kind == "args") == "".join(c.arguments for c in q.calls)
    assert [json.loads(c.arguments)["city"] for c in q.calls] == ['P"a{r}is', "Oslo"]


def test_tokenize_and_detokenize(server):
    t = httpx.post(server.url + "/tokenize", json={"prompt": "hello"}, timeout=10).json()
    assert t["count"] == len(t["tokens"]) > 0 and t["max_model_len"] == 2048
    assert httpx.post(server.url + "/detokenize", json={"tokens": t["tokens"]}, timeout=10).json()["prompt"] == "hello"
    chat_t = httpx.post(server.url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10).json()
    assert chat_t["count"] > 3


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("body, status, fragment", [
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 5}, 400, "temperature"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "n"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"999999": 1}}, 400, "logit_bias"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "frobnicate"}}}},
     400, "schema"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, 400, "tools"),
    ({"model": "tiny", "prompt": ""}, 400, "prompt"),
    ({"model": "tiny", "prompt": [1, 2, 10**9]}, 400, "prompt"),
])
def test_bad_requests_get_openai_errors(server, body, status, fragment):
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] or fragment == err.get("param"), err


def test_too_long_too_large_and_not_json(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=[104] * 2048, max_tokens=1)
    assert e.value.body["code"] == "context_length_exceeded"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{" * 10, timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 60_000}]}
    assert httpx.post(server.url + "/v1/chat/completions", json=big, timeout=10).status_code == 413
    deep = b'{"model": "tiny", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert httpx.post(server.url + "/v1/chat/completions", content=deep, timeout=10).status_code == 400
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200  # still alive


@pytest.mark.parametrize("method, path, status, code, allow", [
    ("GET", "/v1/nope", 404, "not_found", None),
    ("POST", "/v1/chat/completion", 404, "not_found", None),  # a typo of a real path
    ("GET", "/v1/chat/completions", 405, "method_not_allowed", "POST"),
    ("DELETE", "/v1/models", 405, "method_not_allowed", "GET"),
])
def test_unknown_paths_and_methods_get_openai_errors(server, method, path, status, code, allow):
    # Starlette refuses these before any handler runs; its default body is {"detail": "Not Found"}.
    r = httpx.request(method, server.url + path, json={"model": "tiny"}, timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert list(r.json()) == ["error"]
    err = r.json()["error"]
    assert sorted(err) == ["code", "message", "param", "type"]
    assert err["type"] == "invalid_request_error" and err["code"] == code and err["param"] is None
    assert f"{method} {path}" in err["message"]
    if allow is not None:
        assert allow in r.headers["allow"].split(", ")


def test_openai_client_reads_the_unknown_path_error(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.get("/nope", cast_to=object)
    assert e.value.code == "not_found" and e.value.type == "invalid_request_error"
    assert "Invalid URL (GET /v1/nope)" in e.value.message


def test_error_metrics_are_labelled_by_route_not_by_path(server):
    # Clients choose paths: labelling by the raw path would add a Prometheus series per distinct path.
    for i in range(5):
        assert httpx.get(f"{server.url}/v1/prime/plots/p{i}", timeout=10).status_code == 404
        assert httpx.get(f"{server.url}/v1/nope{i}", timeout=10).status_code == 404
    text = httpx.get(server.url + "/metrics", timeout=10).text
    series = [ln for ln in text.splitlines() if ln.startswith("havoc:http_requests_total{")]
    assert not any("/v1/nope" in ln or "/plots/p" in ln for ln in series), series
    count = {ln.split("} ")[0]: float(ln.split("} ")[1]) for ln in series}
    assert count['havoc:http_requests_total{endpoint="/v1/prime/plots/{pid}",status="404"'] >= 5
    assert count['havoc:http_requests_total{endpoint="unmatched",status="404"'] >= 5


def test_a_disconnected_client_frees_its_blocks(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "long"}], "max_tokens": 1500, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = server.metrics()
        if m['havoc:num_requests_running{model_name="tiny"}'] == 0:
            break
        time.sleep(0.1)
    assert m['havoc:num_requests_running{model_name="tiny"}'] == 0
    assert m['havoc:kv_cache_blocks{model_name="tiny",state="used"}'] == 0
    assert m['havoc:request_success_total{finished_reason="abort",model_name="tiny"}'] >= 1


def test_metrics_names(server, client):
    chat(client, max_tokens=3)
    m = server.metrics()
    for name in ("havoc:time_to_first_token_seconds_count", "havoc:time_per_output_token_seconds_count",
                 "havoc:e2e_request_latency_seconds_count", "havoc:prompt_tokens_total", "havoc:generation_tokens_total",
                 "havoc:prefix_cache_queries_total", "havoc:prefix_cache_hits_total", "havoc:kv_cache_usage_perc"):
        assert any(k.startswith(name) for k in m), name


@pytest.fixture(scope="module")
def strict_server(tiny_gguf):
    s = ServerProcess("--model", str(tiny_gguf), "--served-model-name", "tiny", "--api-key", "sekret",
                      "--max-running", "1", "--max-waiting", "1", "--request-timeout", "0.5", "--kv-cache-tokens", "8192")
    yield s
    s.stop()


def test_api_key_overload_and_time_limit(strict_server):
    s = strict_server
    assert httpx.get(s.url + "/v1/models", timeout=5).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        s.client(api_key="wrong").models.list()
    c = s.client(api_key="sekret")
    assert c.models.list().data[0].id == "tiny"
    headers = {"Authorization": "Bearer sekret"}
    long = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8000, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", s.url + "/v1/chat/completions", json=long, headers=headers, timeout=60) as first:
        lines = first.iter_lines()
        next(lines)  # running: it holds the only slot
        second = threading.Thread(target=lambda: httpx.post(s.url + "/v1/chat/completions", json={**long, "stream": False},
                                                            headers=headers, timeout=60))
        second.start()
        deadline = time.monotonic() + 10
        while parse_metrics(httpx.get(s.url + "/metrics", headers=headers, timeout=5).text).get(
                'havoc:num_requests_waiting{model_name="tiny"}', 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        third = httpx.post(s.url + "/v1/chat/completions", json={**long, "stream": False}, headers=headers, timeout=30)
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        rest = [ln for ln in lines if ln]
    assert rest[-1] == "data: [DONE]" and "time limit" in rest[-2]  # the first ran past 0.5 s: an error event
    second.join(timeout=30)


# ------------------------------------------------------------------------------------------ load
def test_64_concurrent_streams_on_a_small_pool(tiny_gguf):
    """64 streaming requests of mixed lengths at once on a pool that cannot hold them all, a quarter of them
    cancelled midway: every other one completes with the output it gets alone, and nothing leaks."""
    import uvicorn

    from havoc.llm import LLM
    from havoc.serve import Server, ServerConfig, build_app

    llm = LLM.load(tiny_gguf, kv_cache_tokens=1536, max_running=24)
    server = Server(llm, ServerConfig(model_name="tiny"))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(server), host=HOST, port=port, log_level="error"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    rng = random.Random(0)
    jobs = [(f"request {i} " + "word " * rng.randint(1, 60), rng.randint(5, 120), i % 4 == 3) for i in range(64)]
    aclient = openai.AsyncOpenAI(base_url=f"http://{HOST}:{port}/v1", api_key="x", max_retries=0, timeout=300)

    async def one(content, n, cancel):
        stream = await aclient.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                       max_tokens=n, temperature=0, stream=True)
        text, got = "", 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                got += 1
            if cancel and got == 3:
                await stream.close()
                return None
        return text

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(one(*j) for j in jobs)), timeout=600)

    try:
        texts = asyncio.run(main())
        stats = llm.loop.call(lambda e: (e.stats.preemptions, e.num_running, e.num_waiting))
        assert stats[0] > 0, "the pool was meant to be too small for all of them"
        for (content, n, cancel), text in zip(jobs, texts):
            if cancel:
                assert text is None
                continue
            alone = llm.generate(llm.chat_prompt([{"role": "user", "content": content}]), max_new_tokens=n)
            assert text == alone.text, content
        deadline = time.monotonic() + 10
        while llm.loop.call(lambda e: e.num_running + e.num_waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        llm.loop.call(lambda e: e.cache.check_invariants())
        assert llm.loop.call(lambda e: (len(e.cache), e.cache.stats()["used"], len(e.held))) == (0, 0, 0)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        llm.close()


# ------------------------------------------------------------------------------------------ SmolLM2
@pytest.fixture(scope="module")
def smol_server(smollm2_gguf):
    s = ServerProcess("--model", str(smollm2_gguf), "--served-model-name", "smollm2", "--threads", "1",
                      "--kv-cache-tokens", "4096")
    yield s
    s.stop()


@pytest.mark.model
def test_smollm2_answers_streams_calls_and_runs_prime(smol_server):
    c = smol_server.client()
    out = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
                                    max_tokens=24, temperature=0)
    assert "Paris" in out.choices[0].message.content
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24,
        temperature=0, stream=True) if ch.choices)
    assert streamed == out.choices[0].message.content
    call = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Weather in Oslo, in C?"}],
                                     tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0)
    args = json.loads(call.choices[0].message.tool_calls[0].function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    obj = c.chat.completions.create(model="smollm2", max_tokens=64, temperature=0, response_format={"type": "json_object"},
                                    messages=[{"role": "user", "content": "Give a JSON object with a name and an age."}])
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    prime = c.chat.completions.create(model="havoc-prime", max_tokens=96, messages=[
        {"role": "user", "content": "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"}])
    msg = prime.choices[0].message
    assert "p = 0.3466" in msg.content
    extra = prime.model_extra
    assert msg.model_extra["reasoning_content"] == msg.model_extra["reasoning"] and "<reason>" in msg.model_extra["reasoning"]
    assert extra["prime"]["verification"]["passed"] and extra["prime"]["routing"]["task_type"]
    chunks = list(c.chat.completions.create(model="havoc-prime", max_tokens=96, stream=True, messages=[
        {"role": "user", "content": "Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]"}]))
    reasoning = "".join(ch.choices[0].delta.model_extra.get("reasoning_content") or "" for ch in chunks if ch.choices)
    assert reasoning and chunks[-1].choices[0].delta.content == msg.content
