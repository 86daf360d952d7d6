"""The `havoc` command line: env, pull, generate, chat.

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
        if args.threads < 1:
            from havoc.errors import ConfigError

            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return LLM.load(args.model, dtype=args.dtype, device=args.device)


def _print_stats(stats, stream=sys.stderr) -> None:
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
    params = _sampling_params(args)
    llm = _load(args)
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"havoc chat with {args.model} — /reset clears the conversation, /exit or Ctrl-D leaves.")
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        for piece in llm.stream_chat(messages, params):
            print(piece, end="", flush=True)
            reply.append(piece)
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="havoc", description="havoc: a fast Llama-style decoder")
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from havoc.errors import HavocError

    try:
        return args.func(args)
    except HavocError as e:
        print(f"havoc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `havoc generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
