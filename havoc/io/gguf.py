"""Import a Llama-architecture GGUF (llama.cpp's file format) into a `HavocModel` and a `Tokenizer`.

    model, tokenizer = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")

Steps: read the header with the `gguf` library; build a `ModelConfig` from the `llama.*` metadata and the
tokenizer from the `tokenizer.*` metadata; check every tensor's name and shape against the config;
dequantize to fp32; undo the row permutation llama.cpp's converter applies to Q and K.

Why the permutation: llama.cpp's RoPE rotates adjacent pairs (x[2i], x[2i+1]) of a head, while
Llama checkpoints on the Hub (and havoc) rotate halves (x[i], x[i + head_dim/2]). `convert_hf_to_gguf.py`
reorders the rows of wq and wk per head so that the halves become adjacent pairs:

    permute(w, n_head) = w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)

`unpermute_qk` is its inverse (n_head is n_kv_heads for wk). Attention scores are unchanged by the
reordering, but rotate-half RoPE on the permuted rows would rotate the wrong pairs.

Dequantization: Q4_0, Q4_1, Q8_0, F16, BF16 and F32 have vectorised kernels here, bit-exact with
`gguf.quants.dequantize`; any other type `gguf.quants` implements (K-quants, IQ*) goes through its numpy
code; anything else is a CheckpointError naming the tensor and the type.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from havoc.config import ModelConfig
from havoc.errors import CheckpointError, ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    from havoc.model import HavocModel
    from havoc.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF tensor names -> havoc parameter names.
_TOP_LEVEL = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}
_PER_LAYER = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def havoc_name(gguf_name: str) -> str | None:
    """The havoc parameter name of a GGUF tensor name (`blk.3.attn_q.weight` -> `layers.3.attention.wq.weight`).

    Args:
        gguf_name: the tensor's name in the file.

    Returns:
        The havoc name, or None for a tensor havoc's Llama has no place for.
    """
    if gguf_name.endswith(".weight") and gguf_name.count(".") == 1:
        base = _TOP_LEVEL.get(gguf_name[: -len(".weight")])
        return None if base is None else f"{base}.weight"
    m = _LAYER_RE.fullmatch(gguf_name)
    if m is None or m.group(2) not in _PER_LAYER:
        return None
    return f"layers.{int(m.group(1))}.{_PER_LAYER[m.group(2)]}.weight"


@dataclass
class GGUFCheckpoint:
    """What a GGUF file holds, in havoc's terms.

    Attributes:
        config: the model configuration from the `llama.*` metadata.
        tensors: CPU tensors (fp32 unless read with a dtype) under havoc parameter names (q/k/v and gate/up
            fused into `wqkv` and `w13` when read with `fuse`), Q/K rows in havoc's (rotate-half) order.
        tokenizer: the tokenizer from the `tokenizer.*` metadata.
        metadata: every scalar and string metadata field (arrays such as the vocabulary are left out).
    """

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    metadata: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- reading
# The header is parsed here rather than by gguf.GGUFReader: the reader builds a numpy view per value (and
# per string of the ~98k-entry vocabulary and merges), 1.1-2.5 s for SmolLM2 on 2 cores; this parser reads
# the same header with struct and slices in ~0.1 s, and checks every length against the file before it
# reads, so a corrupt count fails at once instead of allocating or looping. Tests compare its fields
# with GGUFReader's on the real file and on files with every value type.
_SCALARS = {  # GGUF value type -> struct format
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32


class _Corrupt(Exception):
    """A structural problem in the file; `_open` turns it into a CheckpointError naming the file."""


@dataclass
class _Tensor:
    name: str
    dims: tuple[int, ...]  # GGUF order: innermost first
    type_name: str
    data: np.ndarray  # F32/F16 values, else the raw bytes as (rows, bytes per row) uint8


class _Header:
    """The metadata and tensors of a GGUF file (v2/v3, little-endian), tensor data memory-mapped."""

    def __init__(self, path: Path):
        import mmap
        import struct

        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = buf
        size = len(buf)
        pos = 4  # past the magic

        def need(n: int, what: str) -> None:
            if n < 0 or pos + n > size:
                raise _Corrupt(f"{what} at byte {pos} needs {n} bytes but the file ends at byte {size}")

        def unpack(fmt: str, n: int, what: str):
            nonlocal pos
            need(n, what)
            v = struct.unpack_from("<" + fmt, buf, pos)
            pos += n
            return v

        def string(what: str) -> str:
            nonlocal pos
            (n,) = unpack("Q", 8, what)
            need(n, what)
            raw = buf[pos : pos + n]
            pos += n
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _Corrupt(f"{what} is not UTF-8 ({e})") from None

        def value(vtype: int, what: str) -> Any:
            nonlocal pos
            if vtype == _STRING:
                return string(what)
            if vtype in _SCALARS:
                fmt = _SCALARS[vtype]
                return unpack(fmt, struct.calcsize("<" + fmt), what)[0]
            if vtype != _ARRAY:
                raise _Corrupt(f"{what} has unknown value type {vtype}")
            sub, count = unpack("IQ", 12, what)
            if sub == _STRING:
                need(8 * count, what)  # each string has at least its length
                return [string(what) for _ in range(count)]
            if sub in _NUMPY:
                dt = np.dtype(_NUMPY[sub]).newbyteorder("<")
                need(count * dt.itemsize, what)
                out = np.frombuffer(buf, dtype=dt, count=count, offset=pos).tolist()
                pos += count * dt.itemsize
                return out
            if sub == _ARRAY:
                for _ in range(count):  # nested arrays: no Llama key uses them; skipped, returned as None
                    value(_ARRAY, what)
                return None
            raise _Corrupt(f"{what} is an array of unknown value type {sub}")

        (version,) = unpack("I", 4, "the version")
        if version not in (2, 3):
            hint = " (a big-endian file?)" if version > 0xFFFF else ""
            raise _Corrupt(f"GGUF version {version} is not supported (2 and 3 are){hint}")
        n_tensors, n_kv = unpack("QQ", 16, "the counts")
        need(n_kv * 12 + n_tensors * 24, f"{n_kv} metadata entries and {n_tensors} tensor records")
        # GGUFReader's pseudo-fields first, as it lists them, so the metadata reads the same either way
        self.fields: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
        for i in range(n_kv):
            key = string(f"metadata key {i}")
            (vtype,) = unpack("I", 4, f"the type of {key}")
            self.fields[key] = value(vtype, f"metadata field {key}")
        infos = []
        for i in range(n_tensors):
            name = string(f"tensor name {i}")
            (n_dims,) = unpack("I", 4, f"tensor {name}")
            if not 1 <= n_dims <= 4:
                raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
            dims = unpack("Q" * n_dims, 8 * n_dims, f"tensor {name}")
            ttype, offset = unpack("IQ", 12, f"tensor {name}")
            infos.append((name, dims, ttype, offset))
        align = self.fields.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise _Corrupt(f"general.alignment is {align!r}, not a power of two")
        data_start = -(-pos // align) * align
        self.tensors: list[_Tensor] = []
        spans: list[tuple[int, int, str]] = []
        for name, dims, ttype, offset in infos:
            if offset % align:  # the spec requires it; llama.cpp's mmap'ed kernels assume it
                raise _Corrupt(f"tensor {name} starts at data offset {offset}, not a multiple of the alignment {align}")
            try:
                qtype = GGMLQuantizationType(ttype)
            except ValueError:
                raise _Corrupt(f"tensor {name} has unknown type {ttype}") from None
            block, type_size = GGML_QUANT_SIZES[qtype]
            n = int(np.prod(dims, dtype=np.int64))
            if dims[0] % block:
                raise _Corrupt(f"tensor {name}: {dims[0]} values per row is not a multiple of {qtype.name}'s {block}")
            nbytes = n // block * type_size
            start = data_start + offset
            if start + nbytes > size:
                raise _Corrupt(f"tensor {name} ends at byte {start + nbytes} but the file ends at byte {size}")
            spans.append((start, start + nbytes, name))
            if qtype.name in ("F32", "F16"):
                data = np.frombuffer(buf, dtype="<f4" if qtype.name == "F32" else "<f2", count=n, offset=start)
            else:
                rows = n // dims[0]
                data = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=start).reshape(rows, -1)
            self.tensors.append(_Tensor(name, tuple(int(d) for d in dims), qtype.name, data))
        spans.sort()
        for (_s0, end0, name0), (start1, _e1, name1) in zip(spans, spans[1:]):
            if start1 < end0:  # two tensors reading the same bytes: a crafted or corrupted file
                raise _Corrupt(f"tensors {name0} and {name1} overlap (bytes {start1}..{end0})")


def _open(path: Path) -> _Header:
    """The header of `path`, with every failure turned into an error that names the file."""
    if not path.exists():
        raise ModelNotFoundError(f"GGUF file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a GGUF file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        what = "an empty file" if size == 0 else f"a file starting with {head!r}"
        raise CheckpointError(f"{path} is not a GGUF file: it is {what}, a GGUF file starts with {GGUF_MAGIC!r}")
    try:
        return _Header(path)
    except _Corrupt as e:
        raise CheckpointError(
            f"{path} ({size} bytes) is not a valid GGUF file; it is truncated or corrupt ({e}). Download it again."
        ) from None


# ------------------------------------------------------------------------------------------------- config
def config_from_metadata(meta: dict[str, Any], *, has_output: bool, source: str) -> ModelConfig:
    """The `ModelConfig` a Llama GGUF's metadata describes.

    Args:
        meta: the file's metadata (from `read_gguf` or the reader's fields).
        has_output: the file has a separate `output.weight` (an untied LM head).
        source: the file, for error messages and provenance.

    Returns:
        The config; `extra` records the source file and the `general.*` provenance fields.

    Raises:
        CheckpointError: not a Llama file, a required key missing, or values havoc cannot run.
    """
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{source}: general.architecture is {arch!r}; havoc imports {list(SUPPORTED_ARCHITECTURES)} GGUF files"
        )

    def get(key: str, default: Any = ...) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is ...:
            raise CheckpointError(f"{source}: the metadata has no {arch}.{key}, which a {arch} model needs")
        if isinstance(value, list):
            raise CheckpointError(f"{source}: {arch}.{key} is a per-layer list; havoc needs one value for all layers")
        return value

    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise CheckpointError(f"{source}: RoPE scaling {scaling!r} ({arch}.rope.scaling.type) is not supported")
    if get("expert_count", 0):
        raise CheckpointError(f"{source}: a mixture-of-experts model ({arch}.expert_count > 0) is not supported")

    dim, n_heads = get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", 0)
    if head_dim and get("attention.value_length", head_dim) != head_dim:
        raise CheckpointError(f"{source}: key_length and value_length differ; havoc needs one head_dim")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab_size = get("vocab_size", len(tokens) if tokens else ...)
    general = {
        k: v for k, v in meta.items() if k.startswith("general.") and (not isinstance(v, list) or len(v) <= 16)
    }
    try:
        config = ModelConfig(
            vocab_size=vocab_size,
            dim=dim,
            n_layers=get("block_count"),
            n_heads=n_heads,
            n_kv_heads=get("attention.head_count_kv", n_heads),
            head_dim=head_dim,
            ffn_hidden=get("feed_forward_length"),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rotary_dim=get("rope.dimension_count", 0),
            norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            max_seq_len=get("context_length"),
            tie_embeddings=not has_output,
            bos_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_id=meta.get("tokenizer.ggml.eos_token_id"),
            pad_id=meta.get("tokenizer.ggml.padding_token_id"),
            name=str(meta.get("general.name") or Path(source).stem),
            extra={"source": str(source), "format": "gguf", **general},
        )
    except (ConfigError, TypeError, ValueError) as e:  # also values of the wrong type (a string for a count)
        raise CheckpointError(f"{source}: the metadata describes an invalid model: {e}") from None
    if config.rotary_dim != config.head_dim:
        # llama.cpp permutes whole heads but rotates the first rotary_dim dims as adjacent pairs; that is not
        # rotate-half RoPE over a prefix, so no row order of wq/wk would make havoc compute the same thing.
        raise CheckpointError(
            f"{source}: partial rotary embeddings ({arch}.rope.dimension_count={config.rotary_dim} < "
            f"head_dim={config.head_dim}) are not supported for llama GGUF files"
        )
    return config


# ------------------------------------------------------------------------------------------------- dequantize
# The kernels are single-threaded numpy, bit-exact with gguf.quants (same float32 operations in the same
# order) and ~2x faster than it: they write each output once, in place, instead of building temporaries.
# NOTE: measured on SmolLM2 (106M Q4_1 + 28M Q8_0 weights), 2 cores: these kernels 0.5 s; gguf.quants
# 1.1 s; the same kernels in torch (2 intra-op threads) 0.27 s on an idle machine but 2.5-6 s while one
# other process kept a core busy (OpenMP threads oversubscribed), where numpy stayed at 0.5-0.6 s.


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    return raw.reshape(-1, block_bytes)  # (n_blocks, block_bytes) uint8


def _half(blocks: np.ndarray, start: int, count: int = 1) -> np.ndarray:
    # fp16 fields inside a block are not 2-byte aligned in the row; copy them out, then reinterpret.
    return blocks[:, start : start + 2 * count].copy().view(np.float16).astype(np.float32)  # (n_blocks, count)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed bytes -> (n, 32) fp32: element j < 16 is the low nibble of byte j, 16 + j the high."""
    out = np.empty((qs.shape[0], 2, 16), np.float32)
    np.bitwise_and(qs, 15, out=out[:, 0], casting="unsafe")
    np.right_shift(qs, 4, out=out[:, 1], casting="unsafe")
    return out.reshape(-1, 32)


def _dequant_q4_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, 18)  # fp16 scale d, 16 bytes of 4-bit quants: x = d * (q - 8)
    out = _nibbles(b[:, 2:])
    out -= 8
    out *= _half(b, 0)
    return out


def _dequant_q4_1(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, 20)  # fp16 scale d, fp16 minimum m, 16 bytes of 4-bit quants: x = d * q + m
    dm = _half(b, 0, 2)
    out = _nibbles(b[:, 4:])
    out *= dm[:, :1]
    out += dm[:, 1:]
    return out


def _dequant_q8_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, 34)  # fp16 scale d, 32 int8 quants: x = d * q
    out = b[:, 2:].view(np.int8).astype(np.float32)
    out *= _half(b, 0)
    return out


def _dequant_bf16(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # bf16 is the top half of an fp32


_FAST: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Q4_0": _dequant_q4_0,
    "Q4_1": _dequant_q4_1,
    "Q8_0": _dequant_q8_0,
    "F16": lambda raw: raw.astype(np.float32),
    "BF16": _dequant_bf16,
    "F32": lambda raw: raw.astype(np.float32, copy=True),  # a copy: the result must not keep the file mapped
}


def dequantize(data: np.ndarray, qtype_name: str, shape: tuple[int, ...], *, tensor: str = "tensor") -> torch.Tensor:
    """An fp32 tensor from a GGUF tensor's stored data.

    Args:
        data: the reader's array for the tensor (uint8 blocks for quantized types and BF16, F32/F16 values).
        qtype_name: the GGML type name ("Q4_1", "Q8_0", "F32", ...).
        shape: the logical shape, outermost first (rows, cols).
        tensor: the tensor's name, for error messages.

    Returns:
        A new fp32 CPU tensor of `shape` that owns its memory.

    Raises:
        CheckpointError: a type havoc cannot dequantize.
    """
    fast = _FAST.get(qtype_name)
    if fast is not None:
        values = fast(np.ascontiguousarray(data).reshape(-1))
    else:
        import gguf

        try:
            values = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype_name])
        except (KeyError, NotImplementedError):
            raise CheckpointError(
                f"tensor {tensor} is stored as {qtype_name}, which havoc cannot dequantize "
                f"(supported: {sorted(_FAST)} and the quantized types gguf.quants implements)"
            ) from None
        values = np.array(values, dtype=np.float32)  # a copy that owns its memory
    return torch.from_numpy(values.reshape(shape))


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (see the module docstring): adjacent pairs back to halves.

    Args:
        w: (n_heads * head_dim, dim) weight as stored in the GGUF.
        n_heads: heads of this projection (n_kv_heads for wk).

    Returns:
        The weight in rotate-half row order, a new contiguous tensor.
    """
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise CheckpointError(f"cannot un-permute a weight of {rows} rows over {n_heads} heads")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# ------------------------------------------------------------------------------------------------- public
def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a Llama checkpoint of `config` holds, under havoc names, with their shapes.

    These are the separate projections every format stores (wq, wk, wv, w1, w3); how `HavocModel` lays
    its parameters out (fused or not) is `build_model`'s business, so this list does not depend on it.

    Args:
        config: the model configuration.

    Returns:
        Name -> shape, outermost dimension first.
    """
    d, hd, ffn = config.dim, config.head_dim, config.ffn_hidden
    q, kv = config.n_heads * hd, config.n_kv_heads * hd
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (config.vocab_size, d), "norm.weight": (d,)}
    if not config.tie_embeddings:
        shapes["output.weight"] = (config.vocab_size, d)
    for i in range(config.n_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "attention.wq.weight": (q, d),
            p + "attention.wk.weight": (kv, d),
            p + "attention.wv.weight": (kv, d),
            p + "attention.wo.weight": (d, q),
            p + "feed_forward.w1.weight": (ffn, d),
            p + "feed_forward.w2.weight": (d, ffn),
            p + "feed_forward.w3.weight": (ffn, d),
            p + "attention_norm.weight": (d,),
            p + "ffn_norm.weight": (d,),
        })
    return shapes


def _names(names: list[str], limit: int = 8) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_gguf(path: str | Path, *, dtype: torch.dtype | None = None, fuse: bool = False) -> GGUFCheckpoint:
    """Read a Llama GGUF file into a config, tensors under havoc names, a tokenizer and its metadata.

    Args:
        path: the .gguf file.
        dtype: the tensors' dtype (default fp32, what they are dequantized to); each is converted as soon as
            it is dequantized, so the whole checkpoint never exists in fp32 at once.
        fuse: write q/k/v and gate/up straight into havoc's fused `wqkv` and `w13` (what loading does: no
            separate copy of those parts ever exists beside the fused one); by default they are returned
            under their own names.

    Returns:
        A `GGUFCheckpoint`.

    Raises:
        ModelNotFoundError: no such file.
        CheckpointError: not a GGUF file, truncated or corrupt, not the llama architecture, unknown or
            missing tensors, a shape the config does not expect, or a type havoc cannot dequantize.
        TokenizerError: the tokenizer metadata describes a tokenizer havoc cannot build.
    """
    path = Path(path)
    source = str(path)
    t0 = time.perf_counter()
    reader = _open(path)
    meta = reader.fields
    t_header = time.perf_counter()

    by_gguf = {t.name: t for t in reader.tensors}
    config = config_from_metadata(meta, has_output="output.weight" in by_gguf, source=source)
    unknown = [n for n in by_gguf if havoc_name(n) is None]
    if unknown:
        raise CheckpointError(
            f"{source}: unknown tensor names {_names(unknown)}; havoc's Llama has token_embd, output_norm, "
            f"output and blk.N.{{{','.join(_PER_LAYER)}}}"
        )
    mapped = {havoc_name(n): n for n in by_gguf}
    from havoc.io.checkpoint import check_layer_count

    check_layer_count(config, mapped, source)  # before listing block_count layers' worth of names
    expected = expected_shapes(config)
    extra = [g for h, g in mapped.items() if h not in expected]
    if extra:
        raise CheckpointError(f"{source}: tensors beyond the config's {config.n_layers} layers: {_names(extra)}")
    missing = [h for h in expected if h not in mapped]
    if missing:
        raise CheckpointError(f"{source}: missing tensors (havoc names) {_names(missing)}")
    for h, g in mapped.items():
        shape = tuple(reversed(by_gguf[g].dims))  # GGUF lists dims innermost first
        if shape != expected[h]:
            raise CheckpointError(
                f"{source}: tensor {g} has shape {shape}, the metadata's config expects {expected[h]} "
                f"(dim={config.dim}, heads={config.n_heads}/{config.n_kv_heads}, head_dim={config.head_dim}, "
                f"ffn={config.ffn_hidden}, vocab={config.vocab_size})"
            )

    from havoc.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf_metadata(meta, source=source)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{source}: the tokenizer has {tokenizer.vocab_size} tokens "
            f"but the model's vocabulary is {config.vocab_size}"
        )
    t_tok = time.perf_counter()

    # With `fuse`, q/k/v and gate/up go straight into havoc's fused tensors (each part's rows at its offset).
    # Fusing afterwards (torch.cat) would hold both copies, and freed parts stay in the allocator's heap:
    # +320 MB of peak RSS for SmolLM2 in fp32.
    from havoc.io.checkpoint import FUSED

    into: dict[str, tuple[str, int]] = {}  # part -> (fused name, first row)
    fused_shapes: dict[str, tuple[int, int]] = {}
    for h in mapped if fuse else ():
        for fused, parts in FUSED.items():
            if h.endswith(parts[0]):
                prefix = h[: -len(parts[0])]
                rows = 0
                for part in parts:
                    into[prefix + part] = (prefix + fused, rows)
                    rows += expected[prefix + part][0]
                fused_shapes[prefix + fused] = (rows, expected[h][1])
    tensors: dict[str, torch.Tensor] = {}
    out_dtype = dtype or torch.float32
    for h, g in mapped.items():
        t = by_gguf[g]
        w = dequantize(t.data, t.type_name, expected[h], tensor=g)
        if h.endswith("attention.wq.weight"):
            w = unpermute_qk(w, config.n_heads)
        elif h.endswith("attention.wk.weight"):
            w = unpermute_qk(w, config.n_kv_heads)
        if h in into:
            name, row = into[h]
            if name not in tensors:
                tensors[name] = torch.empty(fused_shapes[name], dtype=out_dtype)
            tensors[name][row : row + w.shape[0]].copy_(w)
        else:
            tensors[h] = w.to(out_dtype)
        del w
    del reader, by_gguf  # releases the memory map; every tensor owns its memory
    t_end = time.perf_counter()
    logger.info(
        "read %s in %.2f s (header %.2f s, tokenizer %.2f s, dequantize %.2f s)",
        path.name, t_end - t0, t_header - t0, t_tok - t_header, t_end - t_tok,
    )
    metadata = {k: v for k, v in meta.items() if not isinstance(v, list)}
    return GGUFCheckpoint(config=config, tensors=tensors, tokenizer=tokenizer, metadata=metadata)


def load_gguf(
    path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> tuple[HavocModel, Tokenizer]:
    """Load a Llama GGUF file as a `HavocModel` and its `Tokenizer`.

    Args:
        path: the .gguf file.
        dtype: parameter dtype (default fp32, what the weights are dequantized to).
        device: where to put the parameters.

    Returns:
        (model in eval mode, tokenizer).

    Raises:
        ModelNotFoundError, CheckpointError, TokenizerError: see `read_gguf`.
    """
    from havoc.io.checkpoint import build_model

    ckpt = read_gguf(path, dtype=dtype, fuse=True)
    model = build_model(ckpt.config, ckpt.tensors, dtype=dtype, device=device, source=str(path), consume=True)
    return model, ckpt.tokenizer
