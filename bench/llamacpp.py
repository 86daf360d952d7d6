"""llama.cpp as a baseline, in-process: the prebuilt CPU libllama of the PyPI wheel `llama-cpp-py-sync`
(CFFI bindings over llama.cpp's C API; no source build), on the same weights as havoc.

- `export_gguf(src, dst, "F32" | "BF16")`: the checkpoint havoc loads (SmolLM2's Q4_1 GGUF), dequantized
  exactly as havoc dequantizes it (`havoc.io.gguf.dequantize`) and written back as an F32 or BF16 GGUF
  with the same metadata, tokenizer and tensor names, so llama.cpp and havoc run identical weights
  (norms stay F32, as llama.cpp expects);
- `LlamaCppDecoder`: greedy batched decode through llama_decode, one llama_batch per step holding one
  token for each of B sequences (seq ids 0..B-1), the greedy sampler picking each row's token — the
  same work per step as havoc's decode loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_gguf(src: str | Path, dst: str | Path, dtype: str) -> Path:
    """Write `src`'s tensors dequantized to `dtype` ("F32" or "BF16"; 1-D tensors stay F32) into `dst`."""
    import gguf
    import torch

    from havoc.io.gguf import dequantize

    dst = Path(dst)
    if dst.exists():
        return dst
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "BF16": gguf.LlamaFileType.MOSTLY_BF16}[dtype]
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        if field.name == "general.file_type":
            writer.add_key_value(field.name, int(file_type), gguf.GGUFValueType.UINT32)
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        w = dequantize(t.data, t.tensor_type.name, shape, tensor=t.name)
        if dtype == "BF16" and w.dim() == 2:
            bits = w.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            writer.add_tensor(t.name, bits, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(t.name, w.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(dst)
    return dst


class LlamaCppDecoder:
    """Greedy decode of a batch of prompts with llama.cpp (see the module docstring).

    Args:
        path: an F32/BF16 GGUF (`export_gguf`).
        max_batch: most sequences decoded together.
        n_ctx: context of the whole batch (all sequences' tokens).
        threads: llama.cpp's thread count.
        flash_attn: llama.cpp's flash attention (its batched bench ran with it on).
    """

    def __init__(self, path: str | Path, max_batch: int, n_ctx: int, threads: int, flash_attn: bool = True) -> None:
        from llama_cpp_py_sync import Llama

        self.llm = Llama(
            str(path), n_ctx=n_ctx, n_batch=max(512, max_batch), n_threads=threads, n_threads_batch=threads,
            n_seq_max=max_batch, flash_attn_type=1 if flash_attn else 0, verbose=False,
        )
        self.lib, self.ctx = self.llm._lib, self.llm._ctx
        chain = self.lib.llama_sampler_chain_init(self.lib.llama_sampler_chain_default_params())
        self.lib.llama_sampler_chain_add(chain, self.lib.llama_sampler_init_greedy())
        self.sampler = chain
        self.batch = self.lib.llama_batch_init(max(512, max_batch), 0, max_batch)

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """rows: (token, position, seq id, wants logits)."""
        b = self.batch
        b.n_tokens = len(rows)
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, int(logits)
            b.seq_id[i][0] = seq
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def prefill(self, prompts: list[list[int]]) -> list[int]:
        """Clear the context, prefill each prompt as its own sequence; return each one's greedy next token."""
        self.llm._clear_context_state()
        self.lengths = []
        nxt = []
        for s, p in enumerate(prompts):
            self._decode([(t, i, s, i == len(p) - 1) for i, t in enumerate(p)])
            nxt.append(self.lib.llama_sampler_sample(self.sampler, self.ctx, -1))
            self.lengths.append(len(p))
        return nxt

    def step(self, tokens: list[int]) -> list[int]:
        """One decode step: token i appended to sequence i; returns the greedy next tokens."""
        self._decode([(t, self.lengths[s], s, True) for s, t in enumerate(tokens)])
        for s in range(len(tokens)):
            self.lengths[s] += 1
        return [self.lib.llama_sampler_sample(self.sampler, self.ctx, i) for i in range(len(tokens))]

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_sampler_free(self.sampler)
        self.llm.close()
