"""A serving benchmark in the manner of vLLM's `benchmark_serving`: requests at a fixed concurrency against an
OpenAI-compatible server, each streamed, timed per token.

Workload (seeded, stated): `n_requests` prompts cut from bench/data/heldout.txt as token ids, their lengths
drawn uniformly from [prompt_min, prompt_max], each asking for a number of tokens drawn uniformly from
[output_min, output_max], greedy, `ignore_eos` (every request generates exactly what it asked for). At most
`concurrency` requests are in flight; a finished one is replaced at once by the next.

Measured per request: time to first token (TTFT: the first chunk with text), time per output token after
the first (TPOT = (end - first) / (tokens - 1)), end-to-end latency. Reported: request throughput, output
tokens/s over the run, TTFT and TPOT at p50 and p99.

Servers (`HavocServer`, `LlamaServer`): `havoc serve` and llama.cpp's own `llama-server` (built from the
tree that llama-cpp-python's sdist vendors, see bench/RESULTS.md), each in a subprocess on 127.0.0.1, on the
same weights (SmolLM2's GGUF dequantized to F32/BF16 by bench/llamacpp.export_gguf, as havoc dequantizes
it). llama-server gets one slot per client (`-np C`, continuous batching, flash attention on) and the same
thread count; `run_engine` runs the same requests on havoc's engine in-process (no HTTP), to measure the
server's own cost.

    python bench/serving.py --llama-server /path/to/llama-server --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
HELDOUT = Path(__file__).with_name("data") / "heldout.txt"


@dataclass
class Workload:
    """Seeded requests: (prompt ids, tokens to generate)."""

    requests: list[tuple[list[int], int]]
    description: str


def make_workload(tokenizer, n_requests: int, *, prompt_min: int = 32, prompt_max: int = 256, output_min: int = 32,
                  output_max: int = 96, seed: int = 0, shared_prefix: int = 0) -> Workload:
    """`n_requests` prompts of heldout text (see the module docstring); with `shared_prefix` > 0 every prompt
    starts with the same `shared_prefix` tokens (a system prompt) and the drawn length is its own suffix."""
    ids = tokenizer.encode(HELDOUT.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    prefix = ids[:shared_prefix]
    reqs = []
    for _ in range(n_requests):
        n = rng.randint(prompt_min, prompt_max)
        start = rng.randrange(shared_prefix, len(ids) - n)
        reqs.append((prefix + ids[start : start + n], rng.randint(output_min, output_max)))
    desc = (f"{n_requests} requests, prompts U[{prompt_min},{prompt_max}] tokens"
            + (f" after a shared {shared_prefix}-token prefix" if shared_prefix else "")
            + f", outputs U[{output_min},{output_max}] tokens, greedy, ignore_eos, seed {seed}")
    return Workload(reqs, desc)


@dataclass
class Result:
    concurrency: int
    duration_s: float
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    output_tokens: int = 0
    reconnects: int = 0
    errors: int = 0

    @staticmethod
    def _pct(xs: list[float], q: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]

    def summary(self) -> dict[str, float]:
        return {
            "concurrency": self.concurrency, "requests": len(self.e2e), "errors": self.errors,
            "duration_s": self.duration_s, "request_throughput": len(self.e2e) / self.duration_s,
            "output_tok_s": self.output_tokens / self.duration_s,
            "ttft_p50_s": self._pct(self.ttft, 50), "ttft_p99_s": self._pct(self.ttft, 99),
            "tpot_p50_s": self._pct(self.tpot, 50), "tpot_p99_s": self._pct(self.tpot, 99),
            "e2e_p50_s": self._pct(self.e2e, 50), "reconnects": self.reconnects,
        }


async def _one(client, url: str, model: str, prompt: list[int], max_tokens: int, res: Result) -> None:
    import httpx

    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    tokens = 0
    async with contextlib.AsyncExitStack() as stack:
        for attempt in range(2):
            try:
                r = await stack.enter_async_context(client.stream("POST", url + "/v1/completions", json=body))
                break
            except httpx.RemoteProtocolError:
                # llama-server (cpp-httplib) closes a kept-alive connection after its fifth request without
                # saying so; the request never reached it, so send it again on a new connection, as the
                # openai client does.
                if attempt:
                    raise
                res.reconnects += 1
        if r.status_code != 200:
            await r.aread()
            res.errors += 1
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if first is None and choices and choices[0].get("text"):
                first = time.perf_counter()
    end = time.perf_counter()
    if first is None or tokens < 1:
        res.errors += 1
        return
    res.ttft.append(first - t0)
    res.e2e.append(end - t0)
    if tokens > 1:
        res.tpot.append((end - first) / (tokens - 1))
    res.output_tokens += tokens


async def _run(url: str, model: str, workload: Workload, concurrency: int) -> Result:
    import httpx

    res = Result(concurrency, 0.0)
    queue = list(workload.requests)
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def worker():
            while queue:
                prompt, n = queue.pop(0)
                await _one(client, url, model, prompt, n, res)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.duration_s = time.perf_counter() - t0
    return res


def run_http(url: str, model: str, workload: Workload, concurrency: int) -> Result:
    """Run the workload against an OpenAI-compatible server at `url`."""
    return asyncio.run(_run(url, model, workload, concurrency))


def run_engine(loop, workload: Workload, concurrency: int) -> Result:
    """The same requests on an `EngineLoop` in this process (threads as clients, no HTTP)."""
    import threading

    from havoc.engine import SamplingParams

    res = Result(concurrency, 0.0)
    queue = list(workload.requests)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                prompt, n = queue.pop(0)
            t0 = time.perf_counter()
            first = None
            stream = loop.submit(prompt, SamplingParams(max_new_tokens=n, ignore_eos=True))
            for out in stream:
                if first is None and out.text:
                    first = time.perf_counter()
            end = time.perf_counter()
            r = stream.request
            with lock:
                res.ttft.append(first - t0)
                res.e2e.append(end - t0)
                if r.num_output > 1:
                    res.tpot.append((end - first) / (r.num_output - 1))
                res.output_tokens += r.num_output

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res.duration_s = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Process:
    def __init__(self, cmd: list[str], health: str, env: dict | None = None, timeout: float = 300) -> None:
        import httpx
        import tempfile

        self.log = tempfile.NamedTemporaryFile("w", prefix=Path(cmd[0]).name + "-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {self.proc.returncode} (log: {self.log.name})")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{cmd[0]} did not come up in {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class HavocServer(_Process):
    """`havoc serve` on a free port (the model's weights; extra flags as given)."""

    def __init__(self, model: str, *, dtype: str = "float32", threads: int | None = None, extra: list[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.model = "bench"
        cmd = [sys.executable, "-m", "havoc.cli", "serve", "--model", model, "--dtype", dtype, "--port", str(self.port),
               "--served-model-name", self.model, "--no-prime", "--max-waiting", "100000", *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "HAVOC_API_KEY": ""}
        super().__init__(cmd, self.url + "/health", env)


class LlamaServer(_Process):
    """llama.cpp's `llama-server` on a free port: one slot per client, continuous batching, flash attention."""

    def __init__(self, binary: str, gguf: str, *, slots: int, ctx_per_slot: int, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.model = "bench"
        cmd = [binary, "-m", gguf, "--host", HOST, "--port", str(self.port), "-np", str(slots), "-cb", "-fa", "on",
               "-c", str(slots * ctx_per_slot), "-t", str(threads), "-tb", str(threads), "--alias", self.model,
               "--no-webui", "-lv", "0"]
        super().__init__(cmd, self.url + "/health")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llama-server", default=None, help="path of llama-server (omit: havoc only)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="rounds per server and concurrency, alternating")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from llamacpp import export_gguf

    from havoc import hub

    _, tok = hub.load("smollm2")
    src = hub.pull("smollm2")
    name = {"float32": "F32", "bfloat16": "BF16"}[args.dtype]
    gguf = export_gguf(src, Path("/tmp") / f"smollm2-{name}.gguf", name)
    havoc = HavocServer(str(gguf), dtype=args.dtype, threads=args.threads)
    try:
        for c in args.concurrency:
            wl = make_workload(tok, max(8, args.requests_per_client * c), seed=c)
            llama = LlamaServer(args.llama_server, str(gguf), slots=c, ctx_per_slot=512, threads=args.threads) \
                if args.llama_server else None
            try:
                for _ in range(args.rounds):
                    print("havoc", json.dumps(run_http(havoc.url, havoc.model, wl, c).summary()), flush=True)
                    if llama:
                        print("llama", json.dumps(run_http(llama.url, llama.model, wl, c).summary()), flush=True)
            finally:
                if llama:
                    llama.stop()
    finally:
        havoc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
