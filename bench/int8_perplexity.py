"""Perplexity of SmolLM2 on a held-out text through the CPU decoder: fp32, bf16, and int8 weights times int8
activations (per row and group, as llama.cpp's Q8_0 x Q8_0) or times fp32 activations (weight-only).

    python bench/int8_perplexity.py [--groups 64 128] [--chunks 4] [--length 128]

The text (bench/data/heldout.txt) was written for this benchmark, so no model has seen it. It is cut into
`chunks` sequences of `length` tokens that decode side by side (one batch), teacher-forced: every step
feeds each sequence its next true token through `CPUDecoder.step` and scores the logits of the one after.
Every scored token thus comes from the decoder's own weights (the first prediction, from the prefill of
the first token by the model's forward, is not scored). int8 rows quantize the bf16 model's weights; the
"int8" ones quantize each product's activations too, with the weights' groups.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch

from havoc import hub
from havoc.cache import PagedKVCache
from havoc.cpu_decode import CPUDecoder

TEXT = Path(__file__).parent / "data" / "heldout.txt"


def token_chunks(tokenizer, n: int, length: int, text: Path = TEXT) -> list[list[int]]:
    ids = tokenizer.encode(text.read_text())
    if len(ids) < n * length:
        raise SystemExit(f"{text} has {len(ids)} tokens, fewer than {n} x {length}")
    return [ids[i * length : (i + 1) * length] for i in range(n)]


@torch.inference_mode()
def perplexity(model, decoder: CPUDecoder, chunks: list[list[int]]) -> float:
    """exp(mean NLL) of tokens 2..L-1 of every chunk, predicted by the decoder's steps."""
    L = len(chunks[0])
    cache = PagedKVCache.for_model(model, len(chunks) * (-(-L // 16) + 1), 16)
    sids = []
    for c in chunks:
        s = cache.new_seq_id()
        cache.add(s, c[:1])
        model(cache.prepare([s]), cache=cache, logits_to_keep=1)
        sids.append(s)
    nll, n = 0.0, 0
    for t in range(1, L - 1):
        logits = decoder.step(cache, sids, [c[t] for c in chunks])  # (B, V) fp32: predicts token t + 1
        target = torch.tensor([c[t + 1] for c in chunks])
        nll += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        n += len(chunks)
    return math.exp(nll / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--text", type=Path, default=TEXT, help="the text scored (default: bench/data/heldout.txt, "
                    "549 tokens; a longer one narrows the differences' noise)")
    args = ap.parse_args()
    model, tok = hub.load("smollm2")
    model.eval()
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    chunks = token_chunks(tok, args.chunks, args.length, args.text)
    rows = [("fp32", model, CPUDecoder(model)), ("bf16", m16, CPUDecoder(m16))]
    for g in args.groups:
        dec = CPUDecoder(m16, weights="int8", group=g)
        rows.append((f"int8 x int8 activations, group {g}" + (", interleaved" if dec.layout != "rows" else ""), m16, dec))
        if dec.layout != "rows":  # the same numbers up to the order of fp32 additions: the row-major bytes too
            rows.append((f"int8 x int8 activations, group {g}, rows", m16, CPUDecoder(m16, weights="int8", group=g, layout="rows")))
        rows.append((f"int8 x fp32 activations, group {g}", m16, CPUDecoder(m16, weights="int8_weight_only", group=g)))
    print(f"{args.chunks} x {args.length} tokens of {args.text.name}, {args.chunks * (args.length - 2)} scored")
    print("| weights | decode weight MB | perplexity | vs bf16 |")
    print("|---|---|---|---|")
    rows.insert(0, rows.pop(1))  # bf16 first: the others are compared with it
    base = None
    for name, m, dec in rows:
        t0 = time.perf_counter()
        ppl = perplexity(m, dec, chunks)
        base = ppl if base is None else base
        rel = f"{(ppl / base - 1) * 100:+.2f}%" if name != "bf16" else "–"
        print(f"| {name} | {dec.bytes_per_step() / 1e6:.0f} | {ppl:.3f} | {rel} |  ({time.perf_counter() - t0:.0f} s)")

if __name__ == "__main__":
    main()
