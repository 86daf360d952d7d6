"""The whole-step CPU decoder: one call into the C++ extension (`csrc/cpu_decode.cpp`) per decode step of a
batch of sequences over the paged KV cache.

`CPUDecoder(model)` runs embedding, every block (RMSNorm, qkv, RoPE, K/V to their slots, paged attention,
wo and the residual add in the product's epilogue, RMSNorm, w13, SwiGLU, w2 + residual), the final norm and
the LM head — with the head's argmax fused (`greedy=True`) so the logits are never written. Activations
stay fp32 between the products; each product multiplies its weight format's formula (csrc/cpu_decode.h:
bf16 weights x activations rounded to bf16, int8 x int8 activations quantized per row and group, ...) on
the kernel variant this CPU runs best (`havoc.backends.cpu.variant_status`). K/V go to the cache in its
dtype. `havoc.generation` uses it for the decode steps of the paged path.

The decoder is a second definition of the architecture: it runs a model only when the model is made of
what it implements (`missing_features`): `applies()` checks, and tests/test_cpu_decode.py compares it with
`model(...)` for every preset.

The weights are the model's own tensors, read in place (row-major is already the streaming order for a
row-dot-product kernel); int8 keeps a quantized copy made once. The products alone (`ops.linear` on CPU)
are `havoc.backends.cpu.linear`.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from havoc import _C, ops
from havoc.backends.cpu import DTYPES, INT8_GROUP, INT8_LAYOUTS, Int8Weight, isas, numpy_view, weight_spec
from havoc.errors import ConfigError

WEIGHT_FORMATS = ("auto", "int8", "int8_weight_only")  # "auto": the model's own dtype (fp32 or bf16)


# --- the whole-step decoder -------------------------------------------------------------------------------


_HUGE = 1 << 21


def _one_arena(weights: list[Int8Weight]) -> None:
    """Move the packed bytes of `weights` into one 2 MiB-aligned buffer (views of it), so that all of it can
    sit on huge pages (`_collapse`), not only the 2 MiB pages inside each weight's own allocation."""
    sizes = [w.packed.numel() for w in weights]
    arena = torch.empty(sum(sizes) + _HUGE, dtype=torch.uint8)
    at = -arena.data_ptr() % _HUGE
    for w, n in zip(weights, sizes):
        view = arena[at : at + n].view(w.packed.shape)
        view.copy_(w.packed)
        w.packed = view
        at += n


def _collapse(weights: list) -> int:
    """Put the whole 2 MiB pages of the streamed weights' memory on transparent huge pages; the bytes moved.

    A decode step streams every weight once, and on 4 KiB pages it misses the TLB every 4 KiB: on the AMX
    Xeon of bench/RESULTS.md the step's fp32 products streamed 17.5-17.8 GB/s from 4 KiB pages and
    19.2-19.6 GB/s from huge pages (THP_MEM_ALLOC_ENABLE=1, alternating processes). The kernel migrates
    the pages in place (MADV_COLLAPSE): same addresses, same values, nothing copied by havoc.
    """
    seen, total = set(), 0
    for w in weights:
        t = w.packed if isinstance(w, Int8Weight) else w
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += _C.collapse_hugepages(numpy_view(t))
    return total


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
        layout: int8 weight bytes "rows", "interleaved" (`Int8Weight`), or "auto": interleaved where the
            variant reads that layout (int8 activations in groups of 64 on avx512_vnni / avx512_bf16).
    """

    def __init__(
        self, model, *, weights: str = "auto", group: int = INT8_GROUP, isa: str = "auto", layout: str = "auto"
    ) -> None:
        if weights not in WEIGHT_FORMATS:
            raise ConfigError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
        if layout not in ("auto",) + INT8_LAYOUTS:
            raise ConfigError(f"layout must be 'auto' or one of {INT8_LAYOUTS}, got {layout!r}")
        p = model.tok_embeddings.weight
        if p.device.type != "cpu" or p.dtype not in DTYPES:
            raise ConfigError(f"the CPU decoder needs a CPU model in fp32 or bf16, got {p.dtype} on {p.device}")
        if isa != "auto" and isa not in isas():
            raise ConfigError(f"kernel variant {isa!r} is not available here; choose from {isas()} or 'auto'")
        lacks = missing_features(model)
        if lacks:
            raise ConfigError(f"the CPU decoder does not implement what this model needs: {', '.join(lacks)}")
        c = model.config
        self.model_ref = weakref.ref(model)
        self.weights, self.group, self.isa, self.dtype = weights, group, isa, p.dtype
        # interleaved: the variant sums whole groups per lane (csrc/cpu_decode.h), one epilogue per 16 groups
        # instead of one per group (bench/RESULTS.md); the embedding lookup reads it too
        can = weights == "int8" and group == 64 and _C.reads_interleaved(isa)
        if layout == "interleaved" and not can:
            raise ConfigError(
                "the interleaved int8 layout needs weights='int8', group=64 and a variant that reads it "
                f"(avx512_vnni, avx512_bf16); got weights={weights!r}, group={group}, isa={isa!r}"
            )
        self.layout = "interleaved" if can and layout != "rows" else "rows"

        def w(t: torch.Tensor):
            if weights == "auto":
                return t.detach()
            q = Int8Weight.quantize(t, group, activations="int8" if weights == "int8" else "fp32")
            return q.with_layout(self.layout)

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
        if weights != "auto":  # the int8 copies are the decoder's own: one arena, all on huge pages
            untied = [] if self._head is self._embedding else [self._head]
            _one_arena([L[k] for L in self._layers for k in ("wqkv", "wo", "w13", "w2")] + [self._embedding] + untied)
        self.hugepage_bytes = _collapse(self.decode_weights() + [self._embedding])

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
                    attention_norm=L["attention_norm"], ffn_norm=L["ffn_norm"], wqkv=weight_spec(L["wqkv"]),
                    wo=weight_spec(L["wo"]), w13=weight_spec(L["w13"]), w2=weight_spec(L["w2"]),
                    k_pool=numpy_view(cache.k[i]), v_pool=numpy_view(cache.v[i]),
                )
                for i, L in enumerate(self._layers)
            ]
            dec = _C.Decoder(
                self._config, layers, self._final_norm, weight_spec(self._embedding), weight_spec(self._head),
                DTYPES[self.dtype], self.isa,
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


# ModelConfig's fields, by what the decoder makes of them: sizes it takes as they are, features they select
# (in `_config_features`), and fields that do not change the maths of a step. A field added to ModelConfig
# is in none of these, and the decoder refuses the model until someone says what it means here.
_SIZES = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_hidden", "rope_theta",
          "norm_eps", "max_seq_len")
_SELECTORS = ("rotary_dim", "tie_embeddings")
_INERT = ("bos_id", "eos_id", "pad_id", "name", "extra")

# The module tree the decoder implements: each module's exact class and its children's names.
_TREE = {
    "HavocModel": {"tok_embeddings", "layers", "norm", "output"},
    "TransformerBlock": {"attention", "feed_forward", "attention_norm", "ffn_norm"},
    "Attention": {"wqkv", "wo"},
    "FeedForward": {"w13", "w2"},
}


def _config_features(config) -> set[str]:
    out = {"block:pre_norm", "norm:rms", "embedding:lookup", "attention:gqa", "attention:fused_qkv",
           "attention:causal", "rope:rotate_half", "mlp:swiglu"}
    if config.rotary_dim < config.head_dim:
        out.add("rope:partial")
    out.add("head:tied" if config.tie_embeddings else "head:untied")
    return out


def missing_features(model) -> list[str]:
    """What `model` needs that the C++ decode step does not implement (empty when it runs the model).

    Compares the model's module tree (exact classes, child names, no biases), its config's fields and the
    features they select, and its weights' dtype with `_C.decoder_features()`.
    """
    import dataclasses

    from havoc import model as model_module

    missing = []
    if type(model) is not model_module.HavocModel:
        return [f"model class {type(model).__qualname__} (the decoder implements havoc.model.HavocModel)"]
    classes = {c: getattr(model_module, c) for c in _TREE}
    classes.update(RMSNorm=model_module.RMSNorm, Linear=model_module.Linear)
    for name, mod in model.named_modules():
        kind = next((k for k, c in classes.items() if type(mod) is c), None)
        if kind is None and type(mod) not in (torch.nn.Embedding, torch.nn.ModuleList):
            missing.append(f"module {name or 'model'} of type {type(mod).__qualname__}")
        elif kind in _TREE:
            extra = set(dict(mod.named_children())) - _TREE[kind]
            if extra:
                missing.append(f"{kind} {name or 'model'} has modules {sorted(extra)}")
        elif kind == "Linear" and mod.bias is not None:
            missing.append(f"bias of {name}")
    fields = {f.name for f in dataclasses.fields(model.config)}
    unknown = fields - set(_SIZES) - set(_SELECTORS) - set(_INERT)
    missing += [f"config field {f!r}" for f in sorted(unknown)]
    supported = set(_C.decoder_features())
    dtype = model.tok_embeddings.weight.dtype
    needed = _config_features(model.config) | {f"weights:{str(dtype).removeprefix('torch.')}"}
    missing += sorted(needed - supported)
    return missing


def applies(model) -> bool:
    """Whether the CPU decoder runs `model`: a CPU model in fp32 or bf16 made of what the decoder implements
    (`missing_features`), with HAVOC_OPS auto or fast."""
    p = model.tok_embeddings.weight
    if p.device.type != "cpu" or p.dtype not in DTYPES or ops.get_backend() not in ("auto", "fast"):
        return False
    return not missing_features(model)


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
            lacks = missing_features(model) if p.device.type == "cpu" and p.dtype in DTYPES else []
            raise ConfigError(
                f"the CPU decode fast path needs a CPU model in fp32 or bf16 and HAVOC_OPS auto or fast "
                f"(got {p.dtype} on {p.device}, HAVOC_OPS={ops.get_backend()})"
                + (f"; the decoder does not implement: {', '.join(lacks)}" if lacks else "")
            )
        return None
    per_model = _decoders.setdefault(model, {})
    dec = per_model.get(weights)
    if dec is None or not dec.is_current(model):
        dec = per_model[weights] = CPUDecoder(model, weights=weights)
    return dec


__all__ = ["CPUDecoder", "Int8Weight", "applies", "for_model", "missing_features"]
