"""The Triton backend: registers the kernels of `havoc.kernels` with `havoc.backends` as the fast path on CUDA
tensors; HAVOC_OPS=triton runs them on any device (CPU tensors through TRITON_INTERPRET=1).

Registration is lazy: each op is a two-line function that imports its kernel module when first called.
Importing Triton and defining the kernels costs a second, and Triton reads the interpreter switch
(TRITON_INTERPRET) when a kernel module is imported, so deferring the import to the first call keeps
`import havoc` light and lets a test set the switch after importing havoc. The imports are plain import
statements, which torch.compile traces (importlib.import_module would be a graph break). Each function
has its op's name and argument order, as does the kernel function it calls.
"""

from __future__ import annotations

import importlib.util

from havoc import backends

# What has been verified of the kernels, shown by `havoc env` next to every Triton op. The GPU session that
# passes the kernel tests on CUDA (bf16 included) updates this line. The sm_90 compile is
# tests/test_triton_compile.py (`python -m havoc.kernels.aot`), which needs no GPU.
KERNEL_STATUS = (
    "compiled ahead of time for sm_90 (ptxas) and interpreter-verified on CPU (TRITON_INTERPRET=1); "
    "not yet run on a GPU"
)


def rms_norm(x, weight, eps):
    from havoc.kernels.rms_norm import rms_norm

    return rms_norm(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    from havoc.kernels.rms_norm import add_rms_norm

    return add_rms_norm(x, residual, weight, eps)


def apply_rope(x, cos, sin):
    from havoc.kernels.rope import apply_rope

    return apply_rope(x, cos, sin)


def swiglu(gate, up):
    from havoc.kernels.swiglu import swiglu

    return swiglu(gate, up)


def attention(q, k, v, **kwargs):
    from havoc.kernels.flash_attention import attention

    return attention(q, k, v, **kwargs)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kwargs):
    from havoc.kernels.flash_attention import attention_varlen

    return attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kwargs)


def paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, **kwargs):
    from havoc.kernels.paged_attention import paged_decode_attention

    return paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, **kwargs)


def write_kv(k_pool, v_pool, k, v, slots):
    from havoc.kernels.paged_attention import write_kv

    write_kv(k_pool, v_pool, k, v, slots)


def linear_cross_entropy(h, weight, targets, **kwargs):
    from havoc.kernels.cross_entropy import linear_cross_entropy

    return linear_cross_entropy(h, weight, targets, **kwargs)


# op -> (module in havoc.kernels, the wrapper above); the kernel function has the op's name
KERNELS = {
    "rms_norm": ("rms_norm", rms_norm),
    "add_rms_norm": ("rms_norm", add_rms_norm),
    "apply_rope": ("rope", apply_rope),
    "swiglu": ("swiglu", swiglu),
    "attention": ("flash_attention", attention),
    "attention_varlen": ("flash_attention", attention_varlen),
    "write_kv": ("paged_attention", write_kv),
    "paged_decode_attention": ("paged_attention", paged_decode_attention),
    "linear_cross_entropy": ("cross_entropy", linear_cross_entropy),
}

if importlib.util.find_spec("triton") is None:
    for _op in KERNELS:
        backends.unavailable(_op, "cuda", "Triton is not installed (pip install triton)")
else:
    for _op, (_module, _fn) in KERNELS.items():
        backends.register(
            _op, "cuda", "triton", _fn, f"Triton kernel havoc.kernels.{_module}.{_op}; {KERNEL_STATUS}"
        )
for _op in ("linear", "copy_blocks"):
    backends.unavailable(_op, "cuda", "no Triton kernel: torch's own (cuBLAS, copies) is the CUDA path")
