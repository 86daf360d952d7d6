"""llama.cpp as a baseline, in-process, on the same weights as havoc, through llama.cpp's C API.

The library comes from whichever Python binding is installed (`load_llama`):

- `llama_cpp` (the `llama-cpp-python` package, ctypes bindings): PyPI has no Linux wheel of it, so pip
  builds the llama.cpp it vendors from the sdist, for this machine (`-march=native`, OpenMP, the CPU
  backend's repacked and llamafile matmul paths, as a default llama.cpp build). bench/RESULTS.md's
  llama.cpp paragraph is about this build:

      CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL=2 pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36

- `llama_cpp_py_sync` (CFFI bindings with a prebuilt CPU libllama): no build, but its library needs
  glibc 2.38 or newer.

Both expose the C API under its own names (`llama_decode`, `llama_batch_init`, ...), so one decoder
serves both.

- `export_gguf(src, dst, "F32" | "BF16" | "Q8_0")`: the checkpoint havoc loads (SmolLM2's Q4_1 GGUF),
  dequantized exactly as havoc dequantizes it (`havoc.io.gguf.dequantize`) and written back as an F32 or
  BF16 GGUF, or quantized by gguf-py's Q8_0 (llama.cpp's 8-bit format), with the same metadata, tokenizer
  and tensor names, so llama.cpp and havoc run identical weights (norms stay F32, as llama.cpp expects);
- `LlamaCppDecoder`: greedy batched decode through llama_decode, one llama_batch per step holding one
  token for each of B sequences (seq ids 0..B-1), the greedy sampler picking each row's token — the
  same work per step as havoc's decode loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_gguf(src: str | Path, dst: str | Path, dtype: str) -> Path:
    """Write `src`'s tensors dequantized to `dtype` ("F32", "BF16", or "Q8_0": llama.cpp's own 8-bit
    quantization of the fp32 weights, blocks of 32 with an fp16 scale; 1-D tensors stay F32) into `dst`."""
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
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "BF16": gguf.LlamaFileType.MOSTLY_BF16,
                 "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
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
        elif dtype == "Q8_0" and w.dim() == 2:
            q8 = gguf.quants.quantize(w.numpy().astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(t.name, q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(t.name, w.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(dst)
    return dst


def load_llama() -> tuple[str, object]:
    """(binding name, its C API) of the first llama.cpp binding that imports and loads its library.

    Raises:
        ImportError: neither loads; the message says why for each.
    """
    errors = []
    try:
        import logging

        import llama_cpp

        # llama-cpp-python routes llama.cpp's log through this logger, which prints everything by default
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        return "llama-cpp-python " + llama_cpp.__version__, llama_cpp
    except (ImportError, OSError, RuntimeError) as e:  # not installed, or its libllama did not load
        errors.append(f"llama_cpp: {e}")
    try:
        from llama_cpp_py_sync import __version__
        from llama_cpp_py_sync._cffi_bindings import get_lib

        return "llama-cpp-py-sync " + __version__, get_lib()
    except (ImportError, OSError, RuntimeError) as e:  # e.g. a wheel built against a newer glibc
        errors.append(f"llama_cpp_py_sync: {e}")
    raise ImportError("no llama.cpp binding loads (" + "; ".join(errors) + ")")


class LlamaCppDecoder:
    """Greedy decode of a batch of prompts with llama.cpp (see the module docstring).

    Args:
        path: an F32/BF16 GGUF (`export_gguf`).
        max_batch: most sequences decoded together.
        n_ctx: KV cells of the whole batch; llama.cpp gives each of the max_batch sequences an equal share.
        threads: llama.cpp's thread count.
        flash_attn: llama.cpp's flash attention (its batched bench ran with it on).
        extra_bufts: llama.cpp's extra weight buffer types (model param use_extra_bufts): its AMX buffer
            for quantized weights on CPUs with AMX, and the repacked (interleaved) layouts. On the AMX
            Xeon of bench/RESULTS.md, llama.cpp 0c1e570's AMX Q8_0 product segfaults in
            ggml_backend_amx_mul_mat from 32 rows on (llama-bench -p 32 too; ggml-org/llama.cpp#20824,
            open), so its Q8_0 runs with them off there (`llama-bench --repack 0`).
    """

    def __init__(
        self, path: str | Path, max_batch: int, n_ctx: int, threads: int, flash_attn: bool = True,
        extra_bufts: bool = True,
    ) -> None:
        self.binding, lib = load_llama()
        self.lib = lib
        self.extra_bufts = extra_bufts
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        mparams.use_extra_bufts = extra_bufts
        self.model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:  # NULL: None from ctypes, a false cdata from CFFI
            raise RuntimeError(f"llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_seq_max = n_ctx, max(512, max_batch), max_batch
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = 1 if flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise RuntimeError("llama.cpp could not create a context")
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        self.sampler = chain
        self.batch = lib.llama_batch_init(max(512, max_batch), 0, max_batch)

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
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
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
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)
