"""The `havoc` command line: ask (PRIME, the main job), serve, eval, env, pull, generate, chat, tool, dsl,
tokenizer train, train, memory.

Errors that come from bad input (a missing model, an invalid flag value, a prompt longer than the
context) print one line naming the problem and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

DEFAULT_MODEL = "smollm2"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                   help=f"a known model name, a .gguf file or a havoc checkpoint folder (default: {DEFAULT_MODEL})")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-speculative", action="store_true",
                   help="no prompt-lookup speculative decoding (the output is the same either way)")
    p.add_argument("--adapter", default="auto",
                   help="a LoRA adapter folder (PEFT's format) (default: the adapter shipped for the model, if "
                        "any; a tool-call adapter runs on PRIME's calls only)")
    p.add_argument("--no-adapter", action="store_true", help="run the model without any LoRA adapter")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", "-n", type=int, default=128, help="tokens to generate at most (default 128)")
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help=">1 discourages repeats (1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (same seed, same output)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")


def _sampling_params(args: argparse.Namespace):
    from havoc.generation import SamplingParams

    return SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed, stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
    )


def _load(args: argparse.Namespace):
    import torch

    from havoc.llm import LLM

    if args.threads is not None:
        torch.set_num_threads(_check_threads(args.threads))
    adapter = None if getattr(args, "no_adapter", False) else getattr(args, "adapter", "auto")
    return LLM.load(args.model, dtype=args.dtype, device=args.device, speculative=not args.no_speculative,
                    adapter=adapter)


def _check_threads(n: int) -> int:
    """--threads within [1, 4 x this machine's cores]: torch.set_num_threads(100000) crashed the process
    (OpenMP cannot start the threads), and more threads than cores only slow a decode."""
    import os

    from havoc.errors import ConfigError

    most = 4 * (os.cpu_count() or 1)
    if not 1 <= n <= most:
        raise ConfigError(f"--threads must be in [1, {most}] (4 x this machine's {os.cpu_count()} cores), got {n}")
    return n


def _print_stats(stats, stream=None) -> None:
    stream = sys.stderr if stream is None else stream  # looked up per call: redirection and capture see it
    decode_tps = stats.generated_tokens / stats.decode_seconds if stats.decode_seconds > 0 else float("nan")
    prefill_tps = stats.prompt_tokens / stats.prefill_seconds if stats.prefill_seconds > 0 else float("nan")
    print(
        f"\n[prompt {stats.prompt_tokens} tok, {prefill_tps:.1f} tok/s | "
        f"generated {stats.generated_tokens} tok, {decode_tps:.1f} tok/s]",
        file=stream,
    )


def cmd_env(args: argparse.Namespace) -> int:
    from havoc import env

    info = env.collect()
    print(json.dumps(info, indent=2) if args.json else env.format_report(info), end="" if not args.json else "\n")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from havoc import hub

    path = hub.pull(args.name, progress=not args.quiet, force=args.force)
    print(path)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from havoc.errors import GenerationError
    from havoc.generation import GenerationStats

    if not args.prompt:
        raise GenerationError("the prompt is empty")
    params = _sampling_params(args)  # validate flags before loading the model
    llm = _load(args)
    prompt = llm.chat_prompt([{"role": "user", "content": args.prompt}]) if args.chat_template else args.prompt
    if args.no_stream:
        out = llm.generate(prompt, params)
        print(out.text)
        stats = out.stats
    else:
        stats = GenerationStats()
        for piece in llm.stream(prompt, params, stats=stats):
            print(piece, end="", flush=True)
        print()
    if args.stats:
        _print_stats(stats)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from havoc.errors import GenerationError

    params = _sampling_params(args)
    llm = _load(args)
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"havoc chat with {args.model} — /reset clears the conversation, /exit or Ctrl-D leaves.")
    if hasattr(sys.stdin, "reconfigure"):  # a line that is not UTF-8 is refused below, not a traceback
        sys.stdin.reconfigure(errors="surrogateescape")
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            print("havoc: that line is not valid UTF-8; not sent", file=sys.stderr)
            continue
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": line})
        dropped = _fit_history(llm, messages, params.max_new_tokens)
        if dropped is None:  # the new turn alone does not fit: refuse it, keep the session
            n, ctx = len(llm.chat_prompt(messages)), llm.config.max_seq_len
            messages.pop()
            print(f"havoc: that message takes {n} tokens with the template; the context holds {ctx}: not sent",
                  file=sys.stderr)
            continue
        if dropped:
            print(f"[the {dropped} oldest message{'s' if dropped > 1 else ''} left the context]", file=sys.stderr)
        reply = []
        try:
            for piece in llm.stream_chat(messages, params):
                print(piece, end="", flush=True)
                reply.append(piece)
        except GenerationError as e:
            messages.pop()
            print(f"\nhavoc: {_one_line(e)}", file=sys.stderr)
            continue
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def _fit_history(llm, messages: list[dict[str, str]], max_new_tokens: int) -> int | None:
    """Drop the oldest turns (never the system prompt or the new message) until the conversation leaves
    room to answer: up to `max_new_tokens`, at least 1 token. Returns how many messages were dropped,
    or None when the new message alone does not fit."""
    ctx = llm.config.max_seq_len
    room = min(max_new_tokens, max(ctx // 4, 1))  # keep a reply's worth of room, not the whole -n
    first = 1 if messages and messages[0]["role"] == "system" else 0
    dropped = 0
    while len(llm.chat_prompt(messages)) + room > ctx:
        if len(messages) - first <= 1:
            return None if len(llm.chat_prompt(messages)) >= ctx else dropped
        del messages[first]
        dropped += 1
    return dropped


def cmd_tool(args: argparse.Namespace) -> int:
    from havoc.errors import ToolError
    from havoc.tools import default_registry

    registry = default_registry()
    if args.list:
        print(json.dumps(registry.describe(), indent=2))
        return 0
    if not args.name:
        raise ToolError(f"name a tool ({', '.join(registry.names())}) or use --list")
    if args.timeout is not None:
        from havoc.tools.registry import check_timeout

        check_timeout(args.timeout, "--timeout")
    call_args = args.args
    if args.plot:
        from havoc.tools.registry import loads_strict

        try:
            parsed = loads_strict(call_args)
        except ValueError as e:
            raise ToolError(f"--args is not valid JSON: {e}") from None
        if isinstance(parsed, dict) and "plot" not in parsed:
            # --plot FILE asks for a picture: the format comes from the file's extension
            parsed["plot"] = args.plot.rsplit(".", 1)[-1].lower() if "." in args.plot else "png"
        call_args = parsed
    out = registry.execute(args.name, call_args, timeout=args.timeout, plot_path=args.plot)
    if not out["success"]:
        raise ToolError(out["error"])
    print(json.dumps(out["result"], indent=2, ensure_ascii=False))
    return 0


def cmd_dsl(args: argparse.Namespace) -> int:
    import os

    from havoc.errors import ToolError
    from havoc.tools import dsl
    from havoc.tools.registry import ToolContext, ToolRegistry

    source = args.script
    if os.path.isfile(source):
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ToolError(f"cannot read {source}: {e}") from None
    elif source.endswith((".dsl", ".txt")) and "\n" not in source:
        raise ToolError(f"no such file: {source}")
    else:
        text = source
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise ToolError(f"--plot must name a .png or .svg file, got {args.plot!r}")
    ctx = ToolContext(ToolRegistry().plot_dir, args.plot)
    result = dsl.run_script(text, ctx)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from havoc.tokenizer.train import TokenizerTrainConfig, load_tokenizer_config, train_tokenizer

    overrides = {"output": args.output, "vocab_size": args.vocab_size, "max_sentences": args.max_sentences}
    if args.config:
        cfg = load_tokenizer_config(args.config, **overrides, **({"inputs": args.input} if args.input else {}))
    else:
        cfg = TokenizerTrainConfig(inputs=args.input or [], **{k: v for k, v in overrides.items() if v is not None})
    tok = train_tokenizer(cfg)
    print(f"wrote {cfg.output}: {tok.vocab_size} tokens")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from havoc.train.config import TrainConfig
    from havoc.train.trainer import Trainer

    cfg = TrainConfig.load(args.config)
    trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
    trainer.fit(stop_after=args.stop_after)
    if trainer.rank == 0:
        print(f"step {trainer.step}: checkpoints in {trainer.checkpoint_dir}"
              + (f", model in {trainer.out_dir / 'final'}" if trainer.step == cfg.train.steps else ""))
    if trainer.world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    from pathlib import Path

    from havoc.config import PRESETS, ModelConfig
    from havoc.train.config import TrainConfig
    from havoc.train.memory import Settings, report, settings_from_train_config

    if args.config in PRESETS:
        config = ModelConfig.from_preset(args.config)
        settings = settings_from_train_config(TrainConfig.load("phase1_pretrain_7b"))
    else:
        cfg = TrainConfig.load(args.config)
        if cfg.model.preset is not None:
            config = ModelConfig.from_preset(cfg.model.preset, **cfg.model.overrides)
        else:
            from havoc.errors import ConfigError

            try:
                config = ModelConfig.load(Path(cfg.model.init_from) / "config.json")
            except ConfigError as e:
                raise ConfigError(f"{args.config} starts from {cfg.model.init_from}, whose model config is needed: {e}") from None
        settings = settings_from_train_config(cfg)
    from havoc.errors import ConfigError

    if not (0 < args.gpu_gb <= 1e6):  # NaN fails this too
        raise ConfigError(f"--gpu-gb must be a number of GiB in (0, 1e6], got {args.gpu_gb}")
    for flag in ("batch_size", "seq_len"):
        value = getattr(args, flag)
        if value is not None and not 1 <= value <= 10**7:
            raise ConfigError(f"--{flag.replace('_', '-')} must be in [1, 1e7], got {value}")
    if args.batch_size:
        settings.batch_size = args.batch_size
    if args.seq_len:
        settings.seq_len = args.seq_len
    text, fits = report(config, settings, args.gpu_gb)
    print(text)
    return 0 if fits else 1


def _print_verification(result, stream=None) -> None:
    stream = stream or sys.stdout
    v = result.verification
    print(f"\nAnswer: {result.answer}", file=stream)
    print(f"Verification: {'PASSED' if v['passed'] else 'FAILED'} ({v['mode']}, {v['tool_calls']} tool calls, "
          f"{v['model_calls_valid']} as the model wrote them)", file=stream)
    for c in v["checks"]:
        print(f"  {c['name']}: {'ok' if c['passed'] else 'FAIL'} - {c['detail']}", file=stream)
    for r in v["recovered"]:
        print(f"  recovered: {r}", file=stream)
    s = result.stats
    print(f"[{s['generated_tokens']} tokens generated, {s['computed_tokens']} computed, {s['seconds']:.1f} s]", file=stream)


def cmd_ask(args: argparse.Namespace) -> int:
    from havoc.prime import generate_with_prime, route

    the_route = route(args.prompt, budget=args.budget)  # validates prompt and budget before loading the model
    llm = _load(args)
    if args.json:
        result = generate_with_prime(args.prompt, enable_prime=not args.no_prime, max_new_tokens=args.max_new_tokens,
                                     temperature=args.temperature, llm=llm, budget=args.budget, seed=args.seed or 0)
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if args.no_prime:
        print("[route] PRIME disabled: the model answers directly", flush=True)
    else:
        r = the_route.to_dict()
        print(f"[route] {r['budget']} · {r['task_type']} · " + "; ".join(r["reasons"]), flush=True)
    result = generate_with_prime(args.prompt, enable_prime=not args.no_prime, max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, llm=llm, budget=args.budget, seed=args.seed or 0,
                                 on_text=lambda piece: print(piece, end="", flush=True))
    _print_verification(result)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from havoc.errors import ConfigError
    from havoc.serve import ServerConfig, serve

    for name in ("port", "max_waiting", "max_batch_tokens", "max_running", "kv_cache_tokens"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "port" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'port' else 'at least 1'}, got {v}")
    if args.port > 65535:
        raise ConfigError(f"--port must be at most 65535, got {args.port}")
    if not (args.request_timeout > 0 and args.request_timeout < 1e9):
        raise ConfigError(f"--request-timeout must be a positive number of seconds, got {args.request_timeout}")
    if not (args.max_body_mb > 0 and args.max_body_mb <= 1024):
        raise ConfigError(f"--max-body-mb must be in (0, 1024], got {args.max_body_mb}")
    api_key = args.api_key or os.environ.get("HAVOC_API_KEY") or None
    import torch

    from havoc.llm import LLM

    if args.threads is not None:
        torch.set_num_threads(_check_threads(args.threads))
    engine = {k: v for k, v in (("kv_cache_tokens", args.kv_cache_tokens), ("max_batch_tokens", args.max_batch_tokens),
                                ("max_running", args.max_running)) if v is not None}
    llm = LLM.load(args.model, dtype=args.dtype, device=args.device, speculative=not args.no_speculative,
                   adapter=None if args.no_adapter else args.adapter, **engine)
    name = args.served_model_name or os.path.basename(str(args.model).rstrip("/")).removesuffix(".gguf")
    config = ServerConfig(model_name=name, api_key=api_key, max_waiting=args.max_waiting,
                          request_timeout=args.request_timeout, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                          max_tokens_default=args.max_tokens_default, prime=not args.no_prime)
    print(f"havoc serve: {name} on http://{args.host}:{args.port}/v1 (engine: {llm.engine.cache.num_blocks} blocks of "
          f"{llm.engine.block_size} tokens{', API key required' if api_key else ''})", file=sys.stderr, flush=True)
    serve(llm, config, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from havoc.eval import format_table, get_set, list_sets, run_eval

    if args.list:
        for name in list_sets():
            ts = get_set(name)
            print(f"{name:12} {len(ts):3} tasks  {ts.description}")
        return 0
    from havoc.errors import PrimeError

    if not args.set:
        raise PrimeError(f"name a task set: {', '.join(list_sets())}, or a .json file")
    task_set = get_set(args.set)
    if args.output:  # checked now: the report comes after the whole evaluation has run
        from havoc.io.atomic import check_destination

        check_destination(args.output, "--output")
    if args.calls:  # the model's first-try tool calls, scored one by one
        return _eval_calls(args, task_set)
    if args.reading:  # the prompt reader alone: no model is loaded
        from havoc.eval.harness import format_reading, run_reading

        report = run_reading(task_set)
        if args.output:
            from havoc.io.atomic import atomic_write_text

            atomic_write_text(args.output, json.dumps(report, indent=2, ensure_ascii=False))
        print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_reading(report))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "self_consistency" in methods:
        from havoc.eval.harness import check_samples

        check_samples(args.samples)  # before the model loads
    llm = _load(args)

    def progress(row: dict) -> None:
        print(f"  {row['id']:16} {row['method']:17} {'right' if row['correct'] else 'wrong':5} "
              f"{row['tokens']:4} tok {row['seconds']:6.1f} s", file=sys.stderr, flush=True)

    report = run_eval(task_set, llm=llm, methods=methods, max_new_tokens=args.max_new_tokens, budget=args.budget,
                      samples=args.samples, seed=args.seed or 0, limit=args.limit, on_row=progress)
    if args.output:
        from havoc.io.atomic import atomic_write_text

        try:
            atomic_write_text(args.output, json.dumps(report, indent=2, ensure_ascii=False))
        except OSError as e:  # the folder changed while the evaluation ran
            from havoc.errors import ConfigError

            raise ConfigError(f"--output {args.output}: cannot write the report ({e.strerror or e})") from None
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_table(report))
    return 0


def _eval_calls(args: argparse.Namespace, task_set) -> int:
    from havoc.eval.calls import LEADS, format_calls, prime_writer, run_calls
    from havoc.errors import PrimeError

    if args.lead not in LEADS:  # before the model loads
        raise PrimeError(f"--lead must be one of {', '.join(LEADS)}, got {args.lead!r}")
    llm = _load(args)

    def progress(row: dict) -> None:
        print(f"  {row['id']:28} lead {row['lead']:3} {'exact' if row['exact'] else 'wrong':5} "
              f"{'runs-right' if row['executable'] else '':10} {row['seconds']:6.1f} s", file=sys.stderr, flush=True)

    writer = prime_writer(llm, budget=args.budget, max_new_tokens=args.max_new_tokens, seed=args.seed or 0,
                          pin_numbers=not args.free_numbers, copy_lists=not args.free_lists)
    report = run_calls(task_set, writer, lead=args.lead, limit=args.limit, on_row=progress)
    if args.output:
        from havoc.io.atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_calls(report))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (`havoc generate: error: argument --seed: ...`) and exit 2,
    like havoc's own; `--help` still prints the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="havoc", description="havoc: a fast Llama-style decoder")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ask", help="answer with PRIME: visible reasoning, tool calls, a verified answer (the main job)")
    p.add_argument("prompt", help="the question, e.g. 'Compare two groups using t-test: [1,2,3] vs [2,3,4]'")
    _add_model_args(p)
    p.add_argument("--budget", default=None, type=str.upper, choices=["MICRO", "LIGHT", "MEDIUM", "HEAVY"],
                   help="reasoning budget (default: the router's choice)")
    p.add_argument("--no-prime", action="store_true", help="the model alone: no routing, tools or verification")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON at the end (no streaming)")
    p.add_argument("--max-new-tokens", "-n", type=int, default=384, help="tokens the model may generate in all (default 384)")
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", help="measure PRIME against plain generation and self-consistency on a task set")
    p.add_argument("set", nargs="?", help="a task set: ttest, anova, regression, doe, spc, definitions, arithmetic, "
                                          "smoke (all), toolbox, understand(-dev/-heldout), or a .json/.jsonl file")
    _add_model_args(p)
    p.add_argument("--methods", default="prime,plain,self_consistency", help="comma-separated (default: all three)")
    p.add_argument("--max-new-tokens", "-n", type=int, default=256, help="token budget per task and method (default 256)")
    p.add_argument("--budget", default=None, type=str.upper, choices=["MICRO", "LIGHT", "MEDIUM", "HEAVY"],
                   help="force PRIME's budget")
    p.add_argument("--samples", type=int, default=3, help="self-consistency samples (default 3)")
    p.add_argument("--limit", type=int, default=None, help="run only the first N tasks")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of the table")
    p.add_argument("--output", "-o", default=None, help="also write the JSON report to this file")
    p.add_argument("--list", action="store_true", help="list the task sets")
    p.add_argument("--reading", action="store_true",
                   help="score the prompt reader alone, without a model: read each prompt, run the call read, compare")
    p.add_argument("--calls", action="store_true",
                   help="score the model's first-try tool calls one by one (schema, arguments, copied and invented "
                        "numbers, executable accuracy, recovery; Wilson 95%% intervals)")
    p.add_argument("--lead", default="both", help="with --calls: the read step's lead before the call: on, off or both")
    p.add_argument("--free-numbers", action="store_true",
                   help="with --calls: decode the calls' numbers without the grammar that allows only the prompt's")
    p.add_argument("--free-lists", action="store_true",
                   help="with --calls: decode the calls' lists without the grammar that makes each a run copied "
                        "from the prompt (numbers still pinned)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, PRIME as havoc-prime)")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set HAVOC_API_KEY)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: the model's name)")
    p.add_argument("--max-waiting", type=int, default=256, help="requests queued before 503 (default 256)")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds before a request is stopped (default 600)")
    p.add_argument("--max-body-mb", type=float, default=4.0, help="largest request body in MB (default 4)")
    p.add_argument("--max-tokens-default", type=int, default=None,
                   help="completion tokens when a request names none (default: what the context leaves)")
    p.add_argument("--kv-cache-tokens", type=int, default=None, help="tokens the KV pool holds (default: the context, at most 8192)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="tokens one engine step computes at most (default 256)")
    p.add_argument("--max-running", type=int, default=None, help="requests decoding at once at most (default 64)")
    p.add_argument("--no-prime", action="store_true", help="do not serve the havoc-prime model")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("env", help="print versions, build flags and which fast paths are active")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("pull", help="download a known model into the cache (works offline afterwards)")
    p.add_argument("name", nargs="?", default=DEFAULT_MODEL, help=f"model name (default: {DEFAULT_MODEL})")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("generate", help="complete a prompt, streaming the text")
    p.add_argument("prompt", help="the prompt text")
    _add_model_args(p)
    _add_sampling_args(p)
    p.add_argument("--chat-template", action="store_true", help="wrap the prompt as a user message in the chat template")
    p.add_argument("--no-stream", action="store_true", help="print the text once at the end")
    p.add_argument("--stats", action="store_true", help="print token counts and speeds to stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive chat with the model's chat template")
    _add_model_args(p)
    _add_sampling_args(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("tool", help="run a tool the model calls: statistics, symbolic, dsl_executor, rag_helper")
    p.add_argument("name", nargs="?", help="the tool's name")
    p.add_argument("--args", default="{}", help='its arguments as a JSON object, e.g. \'{"operation": "describe", "data": [1, 2]}\'')
    p.add_argument("--timeout", type=float, default=None, help="seconds before the call is stopped")
    p.add_argument("--plot", default=None, metavar="FILE", help="draw the result's picture to FILE (.png or .svg)")
    p.add_argument("--list", action="store_true", help="print every tool with its JSON schema")
    p.set_defaults(func=cmd_tool)

    p = sub.add_parser("dsl", help="run a DOE/SPC DSL script (docs/tools-dsl.md)")
    p.add_argument("script", help="a script file, or the script text itself")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="draw every chart and analysis to FILE (.png/.svg; several get -lineN suffixes)")
    p.set_defaults(func=cmd_dsl)

    p = sub.add_parser("tokenizer", help="tokenizer tools (phase 0)")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    p = tsub.add_parser("train", help="train a SentencePiece BPE tokenizer with havoc's special tokens")
    p.add_argument("--config", default=None, help="a YAML tokenizer config or a shipped name (phase0_tokenizer_tiny)")
    p.add_argument("--input", action="append", default=None, help="a text/JSONL file or glob (repeatable)")
    p.add_argument("--output", default=None, help="the output folder")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (default 70000)")
    p.add_argument("--max-sentences", type=int, default=None, help="lines sampled from the corpus at most")
    p.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser("train", help="train or fine-tune a model from a YAML run config (phases 1-3)")
    p.add_argument("--config", required=True, help="a YAML run config or a shipped name (phase1_pretrain_tiny)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP", help="stop (with a checkpoint) at this step")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("memory", help="GPU memory budget of a training run, per component")
    p.add_argument("--config", default="havoc-7b", help="a model preset (with phase1_pretrain_7b's settings) or a run config")
    p.add_argument("--gpu-gb", type=float, default=24.0, help="the card's memory in GiB (default 24)")
    p.add_argument("--batch-size", type=int, default=None, help="override the micro-batch")
    p.add_argument("--seq-len", type=int, default=None, help="override the sequence length")
    p.set_defaults(func=cmd_memory)
    return parser


MAX_ERROR_CHARS = 600


def _one_line(message: str) -> str:
    """An error as one line of bounded length, whatever it quoted (a YAML mark, a long value)."""
    line = " ".join(str(message)[: 4 * MAX_ERROR_CHARS].split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def _check_text_args(args: argparse.Namespace) -> None:
    """Refuse arguments that are not UTF-8: Python hands them over with surrogate escapes, which fail
    much later (tokenizing, printing) with a UnicodeEncodeError traceback."""
    from havoc.errors import ConfigError

    for name, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as e:
                    flag = name if name in ("prompt", "script", "set", "name") else "--" + name.replace("_", "-")
                    raise ConfigError(f"argument {flag} is not valid UTF-8 (byte {e.start})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    # `havoc "PROMPT"` / `python -m havoc "PROMPT"` (the spec's form) is the main job, `havoc ask`; a lone word
    # that is no command stays an error (a mistyped command must not become a question to the model).
    if argv and argv[0] not in commands and not argv[0].startswith("-") and not argv[0].isidentifier():
        argv = ["ask", *argv]
    args = parser.parse_args(argv)
    from havoc.errors import HavocError

    try:
        _check_text_args(args)
        return args.func(args)
    except HavocError as e:
        print(f"havoc: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `havoc generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
