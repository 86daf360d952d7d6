"""Tiny Llama GGUF files for tests, written with `gguf.GGUFWriter` the way llama.cpp's converter writes them.

`tiny_weights` makes random weights in havoc's (rotate-half) layout; `write_tiny_gguf` permutes Q and K rows
as `convert_hf_to_gguf.py` does and writes them with a byte-level BPE vocabulary, so reading the file back
must give the original weights. Keyword arguments break the file in the ways the tests need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGUFValueType as VT

from havoc.tokenizer.gguf_vocab import byte_alphabet

TINY = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=48)
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "Ġ t", "Ġt he", "l l", "he ll"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_vocab() -> tuple[list[str], list[int]]:
    """Control tokens, the 256 byte tokens, then one token per merge result."""
    tokens = [*CONTROL, *byte_alphabet().values(), *(m.replace(" ", "") for m in MERGES)]
    types = [3] * len(CONTROL) + [1] * (len(tokens) - len(CONTROL))
    return tokens, types


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """`permute` of llama.cpp's convert_hf_to_gguf.py (LlamaModel), in torch."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_weights(seed: int = 0, *, tied: bool = True) -> dict[str, torch.Tensor]:
    """Random fp32 weights of the tiny config under havoc names (rotate-half layout)."""
    g = torch.Generator().manual_seed(seed)
    c = TINY
    vocab = len(tiny_vocab()[0])
    d, hd, ffn = c["dim"], c["head_dim"], c["ffn_hidden"]

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    w = {"tok_embeddings.weight": rnd(vocab, d), "norm.weight": 1 + 0.1 * rnd(d)}
    if not tied:
        w["output.weight"] = rnd(vocab, d)
    for i in range(c["n_layers"]):
        p = f"layers.{i}."
        w[p + "attention.wq.weight"] = rnd(c["n_heads"] * hd, d)
        w[p + "attention.wk.weight"] = rnd(c["n_kv_heads"] * hd, d)
        w[p + "attention.wv.weight"] = rnd(c["n_kv_heads"] * hd, d)
        w[p + "attention.wo.weight"] = rnd(d, c["n_heads"] * hd)
        w[p + "feed_forward.w1.weight"] = rnd(ffn, d)
        w[p + "feed_forward.w2.weight"] = rnd(d, ffn)
        w[p + "feed_forward.w3.weight"] = rnd(ffn, d)
        w[p + "attention_norm.weight"] = 1 + 0.1 * rnd(d)
        w[p + "ffn_norm.weight"] = 1 + 0.1 * rnd(d)
    return w


_TO_GGUF = {
    "attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v", "attention.wo": "attn_output",
    "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down", "feed_forward.w3": "ffn_up",
    "attention_norm": "attn_norm", "ffn_norm": "ffn_norm",
}


def gguf_name(havoc_name: str) -> str:
    top = {
        "tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
        "output.weight": "output.weight",
    }
    if havoc_name in top:
        return top[havoc_name]
    _, i, rest = havoc_name.split(".", 2)
    return f"blk.{i}.{_TO_GGUF[rest.removesuffix('.weight')]}.weight"


def tiny_metadata() -> dict[str, tuple[Any, VT, VT | None]]:
    """key -> (value, type, array element type), as llama.cpp's converter types them."""
    c = TINY
    tokens, types = tiny_vocab()
    return {
        "llama.block_count": (c["n_layers"], VT.UINT32, None),
        "llama.context_length": (128, VT.UINT32, None),
        "llama.embedding_length": (c["dim"], VT.UINT32, None),
        "llama.feed_forward_length": (c["ffn_hidden"], VT.UINT32, None),
        "llama.attention.head_count": (c["n_heads"], VT.UINT32, None),
        "llama.attention.head_count_kv": (c["n_kv_heads"], VT.UINT32, None),
        "llama.rope.freq_base": (10000.0, VT.FLOAT32, None),
        "llama.attention.layer_norm_rms_epsilon": (1e-5, VT.FLOAT32, None),
        "llama.rope.dimension_count": (c["head_dim"], VT.UINT32, None),
        "llama.vocab_size": (len(tokens), VT.UINT32, None),
        "general.name": ("Tiny Test", VT.STRING, None),
        "tokenizer.ggml.model": ("gpt2", VT.STRING, None),
        "tokenizer.ggml.pre": ("smollm", VT.STRING, None),
        "tokenizer.ggml.tokens": (tokens, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": (types, VT.ARRAY, VT.INT32),
        "tokenizer.ggml.merges": (MERGES, VT.ARRAY, VT.STRING),
        "tokenizer.ggml.bos_token_id": (1, VT.UINT32, None),
        "tokenizer.ggml.eos_token_id": (2, VT.UINT32, None),
        "tokenizer.ggml.padding_token_id": (2, VT.UINT32, None),
        "tokenizer.ggml.add_bos_token": (False, VT.BOOL, None),
        "tokenizer.chat_template": (CHAT_TEMPLATE, VT.STRING, None),
    }


def write_tiny_gguf(
    path: Path,
    weights: dict[str, torch.Tensor] | None = None,
    *,
    arch: str = "llama",
    meta: dict[str, Any] | None = None,
    drop_meta: tuple[str, ...] = (),
    qtypes: dict[str, gguf.GGMLQuantizationType] | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
    drop_tensors: tuple[str, ...] = (),
) -> Path:
    """Write a tiny Llama GGUF; Q/K are permuted as llama.cpp does.

    Args:
        path: the file to write.
        weights: havoc-named fp32 weights (default `tiny_weights()`).
        arch: general.architecture.
        meta: metadata values to override (types as in `tiny_metadata`) or add (str keys, plain values).
        drop_meta: metadata keys to leave out.
        qtypes: GGUF tensor name -> type to store it as (quantized with gguf.quants; default F32).
        extra_tensors: further raw tensors to write (GGUF name -> array).
        drop_tensors: GGUF tensor names to leave out.
    """
    weights = tiny_weights() if weights is None else weights
    qtypes = qtypes or {}
    entries = tiny_metadata()
    if arch != "llama":
        entries = {k.replace("llama.", f"{arch}.", 1): v for k, v in entries.items()}
    for key, value in (meta or {}).items():
        if key in entries:
            entries[key] = (value, entries[key][1], entries[key][2])
        else:
            entries[key] = (value, VT.get_type(value), VT.get_type(value[0]) if isinstance(value, list) else None)
    writer = gguf.GGUFWriter(str(path), arch)
    for key, (value, vtype, sub) in entries.items():
        if key not in drop_meta:
            writer.add_key_value(key, value, vtype, sub_type=sub)
    for name, w in weights.items():
        g = gguf_name(name)
        if g in drop_tensors:
            continue
        if name.endswith("attention.wq.weight"):
            w = llama_cpp_permute(w, TINY["n_heads"])
        elif name.endswith("attention.wk.weight"):
            w = llama_cpp_permute(w, TINY["n_kv_heads"])
        arr = w.numpy().astype(np.float32)
        qtype = qtypes.get(g, gguf.GGMLQuantizationType.F32)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(g, arr)
        else:
            writer.add_tensor(g, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    for g, arr in (extra_tensors or {}).items():
        writer.add_tensor(g, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
