"""The CPU decode fast path: the C++ decode kernels (`csrc/cpu_decode.cpp`) behind `havoc.ops` and a
whole-step decoder over the paged KV cache.

Decode on a CPU streams the weights: at batch 1 a step costs (bytes of weights) / (memory bandwidth), at
batch B each weight must still be read once per step and used B times from cache. torch's CPU
matrix-vector product reaches ~10-16 GB/s in fp32 on our machines and its batched bf16 products are
emulated without AVX512-BF16, so the C++ kernels do the products: row-major weight rows streamed in tiles
of 4 weight rows x 4 (AVX-512) or 2 (AVX2, baseline) activation rows held in registers, fp32 accumulation,
threads over weight rows (each thread streams its own contiguous part). Weights are fp32, bf16 (widened
in registers) or int8 with per-group scales (`quantize_int8`).

Two entry points:

- `linear(x, weight)`: registered as the CPU fast path of `ops.linear` for decode-sized products (at most
  `MAX_ROWS` rows, fp32/bf16, no autograd); larger ones go to `havoc.cpu_ops.linear` (torch GEMMs, which
  win at prefill sizes).
- `CPUDecoder(model)`: one call into the extension per decode step for a whole batch of sequences of a
  `PagedKVCache`: embedding, every block (RMSNorm, qkv, RoPE, K/V to their slots, paged attention, wo and
  the residual add in the product's epilogue, RMSNorm, w13, SwiGLU, w2 + residual), the final norm and
  the LM head — with the head's argmax fused (`greedy=True`) so the logits are never written. Activations
  stay fp32 inside (a bf16 model's products are computed from its bf16 weights with fp32 activations);
  K/V go to the cache in its dtype. `havoc.generation` uses it for the decode steps of the paged path.

The weights are the model's own tensors, read in place (row-major is already the streaming order for a
row-dot-product kernel); int8 keeps a quantized copy made once. The reference path stays the oracle:
tests/test_cpu_decode.py compares both.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from havoc import _C, cpu_ops, ops
from havoc.kernels import reference
from havoc.errors import ConfigError

MAX_ROWS = 64  # ops.linear takes the C++ kernel up to this many rows (decode, small batches)
INT8_GROUP = 64  # inputs per int8 scale (a multiple of 64)
INT8_ACTIVATIONS = ("int8", "fp32")
# "auto": the model's own dtype (fp32 or bf16); "int8": int8 weights x int8 activations (per row and group of
# 64, as llama.cpp's Q8_0); "int8_weight_only": int8 weights x fp32 activations.
WEIGHT_FORMATS = ("auto", "int8", "int8_weight_only")

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


def isas() -> list[str]:
    """Kernel variants this CPU can run, narrowest first ("scalar" always; the last is what "auto" runs)."""
    return list(_C.linear_isas())


def variant_status() -> dict[str, str]:
    """Every kernel variant of the build, narrowest first: "runs" (and which "auto" picks) or why it cannot."""
    runnable = isas()
    out = {}
    for v in _C.linear_variants():
        why = _C.linear_variant_missing(v)
        out[v] = ("runs ('auto' picks it)" if v == runnable[-1] else "runs") if not why else f"unavailable: {why}"
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (bf16 as its int16 bits). No copy."""
    t = t.detach()
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


class Int8Weight:
    """A weight quantized to int8 with one fp32 scale per `group` consecutive inputs of a row (symmetric,
    `reference.quantize_int8`: w ~= q * scale, scale = max |w| over the group / 127), stored for the
    kernels as the unsigned bytes q + 128 in input order, each row padded to a multiple of 64 inputs with
    128 (q = 0) — csrc/cpu_decode.h says why.

    Attributes:
        packed: (out, in rounded up to 64) uint8, the bytes q + 128.
        scales: (out, ceil(in / group)) fp32.
        group: inputs per scale (a multiple of 64).
        shape: (out, in).
        activations: what the product multiplies the weight with: "int8" (activations quantized per row
            and group, llama.cpp's Q8_0 x Q8_0) or "fp32" (weight-only quantization).
    """

    def __init__(
        self, packed: torch.Tensor, scales: torch.Tensor, group: int, shape: tuple[int, int], activations: str = "int8"
    ) -> None:
        if activations not in INT8_ACTIVATIONS:
            raise ConfigError(f"activations must be one of {INT8_ACTIVATIONS}, got {activations!r}")
        self.packed, self.scales, self.group, self.shape, self.activations = packed, scales, group, shape, activations

    @classmethod
    def quantize(cls, weight: torch.Tensor, group: int = INT8_GROUP, *, activations: str = "int8") -> Int8Weight:
        if group < 64 or group % 64:
            raise ConfigError(f"int8 group size must be a positive multiple of 64, got {group}")
        if weight.dim() != 2:
            raise ConfigError(f"can only quantize 2-D weights, got shape {tuple(weight.shape)}")
        N, K = weight.shape
        q, scales = reference.quantize_int8(weight.detach(), group)  # (N, K) int8, (N, G) fp32
        packed = torch.nn.functional.pad(q.to(torch.int16) + 128, (0, -K % 64), value=128).to(torch.uint8)
        return cls(packed.contiguous(), scales.contiguous(), group, (N, K), activations)

    def with_activations(self, activations: str) -> Int8Weight:
        """The same weight bytes, multiplied with `activations` ("int8" or "fp32")."""
        return Int8Weight(self.packed, self.scales, self.group, self.shape, activations)

    @property
    def q(self) -> torch.Tensor:
        """The int8 values in input order: (out, in)."""
        return (self.packed[:, : self.shape[1]].to(torch.int16) - 128).to(torch.int8)

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight this int8 weight stands for: (out, in)."""
        s = self.scales.repeat_interleave(self.group, dim=1)[:, : self.shape[1]]
        return self.q.float() * s

    def spec(self) -> tuple:
        dtype = "int8" if self.activations == "int8" else "int8_weight_only"
        return (self.packed.numpy(), dtype, self.scales.numpy(), self.group, self.shape[1])


def _spec(weight: torch.Tensor | Int8Weight) -> tuple:
    """(array, dtype name, scales, group[, cols]): how the extension takes a weight."""
    if isinstance(weight, Int8Weight):
        return weight.spec()
    if weight.dtype not in _DTYPES:
        raise ConfigError(f"the CPU decode kernels take fp32, bf16 or int8 weights, got {weight.dtype}")
    if not weight.is_contiguous():
        raise ConfigError("the CPU decode kernels need contiguous weights")
    return (_np(weight), _DTYPES[weight.dtype], None, 0)


def linear(x: torch.Tensor, weight: torch.Tensor | Int8Weight, *, isa: str = "auto") -> torch.Tensor:
    """x @ weight.T by the C++ kernel, fp32 accumulation; (..., in) -> (..., out) in x's dtype.

    Args:
        x: (..., in) fp32 or bf16 activations (converted to fp32 for the kernel).
        weight: (out, in) contiguous fp32 or bf16 tensor, or an `Int8Weight`.
        isa: kernel variant, "auto" or one of `isas()` (tests force each).

    Raises:
        ConfigError: a weight dtype or layout the kernels do not take.
        ValueError: shapes that do not fit.
    """
    spec = _spec(weight)
    N, K = weight.shape
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} features but the weight takes {K}")
    x2d = x.detach().reshape(-1, K).float()
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty(x2d.shape[0], N, dtype=torch.float32)
    _C.linear(x2d.numpy(), *spec[:4], cols=K, out=out.numpy(), isa=isa)
    out = out.view(*x.shape[:-1], N)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


def _fast_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`ops.linear` on CPU: the C++ kernel for decode-sized products, torch's GEMMs (cpu_ops) otherwise."""
    rows = x.numel() // max(x.shape[-1], 1)
    if (
        rows > MAX_ROWS
        or rows == 0
        or weight.dtype not in _DTYPES
        or x.dtype not in _DTYPES
        or not weight.is_contiguous()
        or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    ):
        return cpu_ops.linear(x, weight)
    return linear(x, weight)


_fast_linear.description = "havoc.cpu_decode: C++ GEMV/small GEMM up to 64 rows, torch GEMMs above"  # type: ignore[attr-defined]
ops.register_fast("linear", "cpu", _fast_linear)


# --- the whole-step decoder -------------------------------------------------------------------------------


class CPUDecoder:
    """One decode step of a `HavocModel` over a `PagedKVCache` per call into the extension.

    Build once per model (int8 quantizes here); `bind(cache)` attaches a cache's pools (cheap, cached per
    cache). The model's weights are read in place, so the decoder follows in-place updates of them but
    not replaced tensors (`is_current` tells; `for_model` rebuilds when needed).

    Args:
        model: a CPU `HavocModel` in fp32 or bf16.
        weights: "auto" (the model's own weights), "int8" (int8 weights, one fp32 scale per `group` inputs
            of a row, times activations quantized to int8 per row and group) or "int8_weight_only" (the
            same weights times fp32 activations). The embedding lookup reads the int8 table too.
        group: int8 inputs per scale.
        isa: kernel variant, "auto" or one of `isas()`.
    """

    def __init__(self, model, *, weights: str = "auto", group: int = INT8_GROUP, isa: str = "auto") -> None:
        if weights not in WEIGHT_FORMATS:
            raise ConfigError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
        p = model.tok_embeddings.weight
        if p.device.type != "cpu" or p.dtype not in _DTYPES:
            raise ConfigError(f"the CPU decoder needs a CPU model in fp32 or bf16, got {p.dtype} on {p.device}")
        if isa != "auto" and isa not in isas():
            raise ConfigError(f"kernel variant {isa!r} is not available here; choose from {isas()} or 'auto'")
        c = model.config
        self.model_ref = weakref.ref(model)
        self.weights, self.group, self.isa, self.dtype = weights, group, isa, p.dtype

        def w(t: torch.Tensor):
            if weights == "auto":
                return t.detach()
            return Int8Weight.quantize(t, group, activations="int8" if weights == "int8" else "fp32")

        def norm(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().contiguous().numpy()

        self._params = [q for q in model.parameters()]
        self._versions = self._snapshot()
        self._layers = []
        for layer in model.layers:
            att, ff = layer.attention, layer.feed_forward
            self._layers.append(
                dict(
                    attention_norm=norm(layer.attention_norm.weight), ffn_norm=norm(layer.ffn_norm.weight),
                    wqkv=w(att.wqkv.weight), wo=w(att.wo.weight), w13=w(ff.w13.weight), w2=w(ff.w2.weight),
                )
            )
        self._final_norm = norm(model.norm.weight)
        self._embedding = w(model.tok_embeddings.weight)
        self._head = self._embedding if model.output is None else w(model.output.weight)
        self._config = dict(
            dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim,
            rotary_dim=c.rotary_dim, ffn_hidden=c.ffn_hidden, vocab_size=c.vocab_size, norm_eps=float(c.norm_eps),
            rope_theta=float(c.rope_theta),
        )
        self.vocab_size = c.vocab_size
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cache -> _C.Decoder

    def decode_weights(self) -> list[torch.Tensor | Int8Weight]:
        """The weights a decode step streams, in order: each layer's wqkv, wo, w13, w2, then the LM head."""
        return [L[k] for L in self._layers for k in ("wqkv", "wo", "w13", "w2")] + [self._head]

    def bytes_per_step(self) -> int:
        """Weight bytes one decode step reads: every projection and the LM head (scales included)."""

        def nbytes(w) -> int:
            if isinstance(w, Int8Weight):
                return w.packed.numel() + 4 * w.scales.numel()
            return w.numel() * w.element_size()

        return sum(nbytes(w) for w in self.decode_weights())

    def _snapshot(self) -> list[tuple[int, int]]:
        return [(q.data_ptr(), q._version) for q in self._params]

    def is_current(self, model) -> bool:
        """Whether this decoder still reads `model`'s weights as they are now (same tensors, unchanged)."""
        return (
            self.model_ref() is model
            and len(self._params) == len(list(model.parameters()))
            and all(a is b for a, b in zip(self._params, model.parameters()))
            and self._snapshot() == self._versions
        )

    def bind(self, cache) -> _C.Decoder:
        """The extension's decoder over `cache`'s pools (made once per cache)."""
        dec = self._bound.get(cache)
        if dec is None:
            if cache.dtype != self.dtype or cache.device.type != "cpu":
                raise ConfigError(f"the cache holds {cache.dtype} on {cache.device}; the decoder needs {self.dtype} on cpu")
            layers = [
                dict(
                    attention_norm=L["attention_norm"], ffn_norm=L["ffn_norm"], wqkv=_spec(L["wqkv"]),
                    wo=_spec(L["wo"]), w13=_spec(L["w13"]), w2=_spec(L["w2"]),
                    k_pool=_np(cache.k[i]), v_pool=_np(cache.v[i]),
                )
                for i, L in enumerate(self._layers)
            ]
            dec = _C.Decoder(
                self._config, layers, self._final_norm, _spec(self._embedding), _spec(self._head),
                _DTYPES[self.dtype], self.isa,
            )
            self._bound[cache] = dec
        return dec

    def step(self, cache, seq_ids, tokens, *, greedy: bool = False) -> torch.Tensor:
        """Append one token to each sequence and run the model on them: the cache's decode step.

        Args:
            cache: the `PagedKVCache` holding the sequences (with nothing pending).
            seq_ids: the sequences, in batch-row order.
            tokens: (B,) their new token ids.
            greedy: return the argmax ids (B,) int64 instead of the logits; the logits are never written.

        Returns:
            (B, vocab) fp32 logits of each sequence's next token, or (B,) int64 ids when greedy.

        Raises:
            IndexError: a token id outside the vocabulary (the cache is unchanged).
            OutOfBlocksError: no room for the new tokens (the cache is unchanged).
            GenerationError: as `PagedKVCache.prepare`.
        """
        dec = self.bind(cache)
        tok = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64).reshape(-1)
        if tok.size and (tok.min() < 0 or tok.max() >= self.vocab_size):
            raise IndexError(f"token ids {tok.tolist()} reach outside the vocabulary [0, {self.vocab_size})")
        positions, slots, tables, lengths = cache.prepare_decode(np.asarray(seq_ids, dtype=np.int64), tok)
        B = tok.size
        try:
            out = torch.empty(B, dtype=torch.int64) if greedy else torch.empty(B, self.vocab_size, dtype=torch.float32)
            dec.step(
                tok, positions, slots, tables, lengths, next_tokens=out.numpy() if greedy else None,
                logits=None if greedy else out.numpy(),
            )
        except BaseException:
            cache._fwd = None
            raise
        cache.end()
        return out


_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {weights: CPUDecoder}


def applies(model) -> bool:
    """Whether the CPU decoder runs `model`: a CPU model in fp32 or bf16, with HAVOC_OPS auto or fast."""
    p = model.tok_embeddings.weight
    return p.device.type == "cpu" and p.dtype in _DTYPES and ops.get_backend() in ("auto", "fast")


def for_model(model, weights: str = "auto") -> CPUDecoder | None:
    """The model's CPU decoder for `weights` (built once, rebuilt when the weights changed), or None when
    the fast path does not apply: not a CPU fp32/bf16 model, or the ops backend says reference/triton.

    Raises:
        ConfigError: int8 weights where the fast path cannot run (int8 has no reference path here),
            or HAVOC_OPS=fast where it does not apply.
    """
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"cpu weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    p = model.tok_embeddings.weight
    if not applies(model):
        if weights != "auto" or ops.get_backend() == "fast":
            raise ConfigError(
                f"the CPU decode fast path needs a CPU model in fp32 or bf16 and HAVOC_OPS auto or fast "
                f"(got {p.dtype} on {p.device}, HAVOC_OPS={ops.get_backend()})"
            )
        return None
    per_model = _decoders.setdefault(model, {})
    dec = per_model.get(weights)
    if dec is None or not dec.is_current(model):
        dec = per_model[weights] = CPUDecoder(model, weights=weights)
    return dec


__all__ = ["CPUDecoder", "Int8Weight", "applies", "linear", "for_model", "isas"]
