"""GGUF import: dequantization against gguf's reference, the Q/K un-permutation against transformers' own
GGUF loader, config from metadata, and every kind of bad file."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from havoc.errors import CheckpointError, ModelNotFoundError, TokenizerError
from havoc.io.gguf import dequantize, havoc_name, load_gguf, read_gguf, unpermute_qk

from .gguf_files import TINY, llama_cpp_permute, tiny_weights, write_tiny_gguf

# ----------------------------------------------------------------------------------------- dequantization


def _reference(data: np.ndarray, qtype: Q) -> torch.Tensor:
    return torch.from_numpy(np.array(gguf.quants.dequantize(data, qtype), dtype=np.float32))


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q5_0, Q.Q5_1])
@pytest.mark.parametrize("shape", [(1, 32), (7, 96), (33, 160)])
def test_dequantize_matches_gguf_reference(qtype: Q, shape: tuple[int, int]) -> None:
    # Q5_0/Q5_1 have no kernel here: they exercise the fallback to gguf's numpy dequantizer.
    g = torch.Generator().manual_seed(shape[0] * 1000 + qtype.value)
    x = torch.randn(shape, generator=g) * torch.logspace(-3, 2, shape[0])[:, None]  # rows of very different scale
    x[0, :32] = 0.0  # an all-zero block: scale 0 (and, for Q4_1, minimum 0)
    data = gguf.quants.quantize(x.numpy(), qtype)
    if qtype == Q.F32:
        expected = x
    else:
        expected = _reference(data, qtype).reshape(shape)
        if qtype in (Q.F16, Q.BF16):  # the reader hands BF16 over as raw bytes, F16 as float16 values
            data = data.view(np.uint8) if qtype == Q.BF16 else data
    got = dequantize(data, qtype.name, shape)
    assert got.dtype == torch.float32 and got.shape == shape
    assert torch.equal(got, expected), f"{qtype.name}: max abs diff {(got - expected).abs().max()}"
    # the quantized values are near the originals, so the test would notice a dequantizer returning garbage
    tol = {Q.F32: 0, Q.F16: 1e-3, Q.BF16: 1e-2, Q.Q8_0: 1e-2, Q.Q5_0: 0.1, Q.Q5_1: 0.1}.get(qtype, 0.2)
    assert ((got - x).abs() <= tol * x.abs().amax(1, keepdim=True) + 1e-6).all()


def test_dequantize_rejects_unsupported_type() -> None:
    with pytest.raises(CheckpointError, match=r"blk\.0\.attn_q\.weight is stored as I32"):
        dequantize(np.zeros((4, 32), np.int32), "I32", (4, 32), tensor="blk.0.attn_q.weight")


@pytest.fixture(scope="module")
def smollm2_reader(smollm2_gguf):
    return gguf.GGUFReader(smollm2_gguf)


def _reader_fields(reader: gguf.GGUFReader) -> dict:
    """The oracle: every metadata field as a Python value, read through gguf's own GGUFReader."""
    VT = gguf.GGUFValueType
    out = {}
    for name, f in reader.fields.items():
        if f.types[0] == VT.ARRAY:
            sub = f.types[-1] if len(f.types) > 1 else None
            if sub == VT.STRING:
                out[name] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            elif sub == VT.ARRAY:
                out[name] = None
            else:
                out[name] = np.concatenate([f.parts[i] for i in f.data]).tolist() if f.data else []
        elif f.types[0] == VT.STRING:
            out[name] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            out[name] = f.parts[f.data[0]][0].item()
    return out


def _same_header(path) -> None:
    from havoc.io.gguf import _open

    ours, theirs = _open(path), gguf.GGUFReader(path)
    assert ours.fields == _reader_fields(theirs)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert a.dims == tuple(b.shape.tolist()) and a.type_name == b.tensor_type.name
        assert a.data.dtype == b.data.dtype and np.array_equal(a.data.reshape(b.data.shape), b.data)


def test_header_parser_agrees_with_gguf_reader_on_every_value_type(tmp_path) -> None:
    VT = gguf.GGUFValueType
    meta = {  # every scalar type, numeric arrays, unicode (gguf's writer refuses empty arrays)
        "x.u8": 200, "x.i8": -5, "x.u16": 60000, "x.i16": -300, "x.i32": -70000, "x.u64": 2**40,
        "x.i64": -(2**40), "x.f64": 0.1, "x.f32": 0.1, "x.true": True, "x.text": "µ±σ ≤ 3°, 漢字 😀",
        "x.floats": [0.5, -1.25, 3.0], "x.ints": [1, -2, 3],
    }
    types = {"x.u8": VT.UINT8, "x.i8": VT.INT8, "x.u16": VT.UINT16, "x.i16": VT.INT16, "x.i32": VT.INT32,
             "x.u64": VT.UINT64, "x.i64": VT.INT64, "x.f64": VT.FLOAT64, "x.f32": VT.FLOAT32}
    path = tmp_path / "types.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in meta.items():
        if key in types:
            writer.add_key_value(key, value, types[key])
        else:
            writer.add_key_value(key, value, VT.get_type(value), sub_type=VT.get_type(value[0]) if isinstance(value, list) else None)
    writer.add_tensor("a", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("b", np.arange(64, dtype=np.float16).reshape(2, 32))
    writer.add_tensor("c", gguf.quants.quantize(np.ones((2, 64), np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _same_header(path)
    _same_header(write_tiny_gguf(tmp_path / "tiny.gguf", qtypes={"blk.0.ffn_up.weight": Q.Q4_1}))


@pytest.mark.model
def test_header_parser_agrees_with_gguf_reader_on_smollm2(smollm2_gguf) -> None:
    _same_header(smollm2_gguf)


def test_a_corrupt_count_fails_at_once(tmp_path) -> None:
    data = bytearray(write_tiny_gguf(tmp_path / "full.gguf").read_bytes())
    data[16:24] = (2**60).to_bytes(8, "little")  # the metadata count
    path = tmp_path / "count.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"count\.gguf .*truncated or corrupt .*metadata entries"):
        read_gguf(path)


@pytest.mark.model
def test_dequantize_real_tensors_match_gguf(smollm2_reader) -> None:
    by_type: dict[str, object] = {}
    for t in smollm2_reader.tensors:
        by_type.setdefault(t.tensor_type.name, t)
    assert set(by_type) == {"Q4_1", "Q8_0", "F32"}  # what SmolLM2's Q4_1 file holds
    for name, t in by_type.items():
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        got = dequantize(t.data, name, shape, tensor=t.name)
        expected = _reference(t.data, t.tensor_type).reshape(shape)
        assert torch.equal(got, expected), f"{t.name} ({name})"


# ----------------------------------------------------------------------------------------- permutation


def test_unpermute_inverts_llama_cpp_permute() -> None:
    w = torch.arange(6 * 16 * 5, dtype=torch.float32).reshape(6 * 16, 5)
    permuted = llama_cpp_permute(w, 6)
    assert not torch.equal(permuted, w)
    assert torch.equal(unpermute_qk(permuted, 6), w)
    # within a head, rows i and i + head_dim/2 (a rotate-half pair) are adjacent in the file's order
    assert torch.equal(permuted[0], w[0]) and torch.equal(permuted[1], w[8])


HF_NAMES = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


def hf_name(name: str) -> str:
    if name == "tok_embeddings.weight":
        return "model.embed_tokens.weight"
    if name == "norm.weight":
        return "model.norm.weight"
    _, i, rest = name.split(".", 2)
    return f"model.layers.{i}.{HF_NAMES[rest.removesuffix('.weight')]}.weight"


@pytest.mark.model
def test_weights_equal_transformers_gguf_import(smollm2_checkpoint, hf_model, smollm2_reader) -> None:
    """transformers un-permutes Q/K in its own GGUF loader; every tensor must be bit-identical to ours."""
    ours = smollm2_checkpoint.tensors
    theirs = hf_model.state_dict()
    assert len(ours) == 30 * 9 + 2
    for name, w in ours.items():
        ref = theirs[hf_name(name)]
        assert torch.equal(w, ref), f"{name}: max abs diff {(w - ref).abs().max()}"
    # The check has teeth: the file's own row order of wq differs from transformers'.
    raw = next(t for t in smollm2_reader.tensors if t.name == "blk.0.attn_q.weight")
    stored = _reference(raw.data, raw.tensor_type).reshape(576, 576)
    assert not torch.equal(stored, theirs["model.layers.0.self_attn.q_proj.weight"])


# ----------------------------------------------------------------------------------------- config


@pytest.mark.model
def test_config_from_metadata(smollm2, smollm2_gguf, hf_model) -> None:
    model, tok = smollm2
    c = model.config
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) == (49152, 576, 30, 9, 3, 64)
    assert (c.ffn_hidden, c.rope_theta, c.rotary_dim, c.max_seq_len) == (1536, 100000.0, 64, 8192)
    assert c.norm_eps == pytest.approx(1e-5, rel=1e-6) and c.tie_embeddings
    assert (c.bos_id, c.eos_id, c.pad_id) == (1, 2, 2) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert c.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert c.extra["source"] == str(smollm2_gguf) and c.extra["general.architecture"] == "llama"
    assert c.extra["general.organization"] == "HuggingFaceTB"
    hf = hf_model.config
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads) == (
        c.dim, c.n_layers, c.n_heads, c.n_kv_heads,
    )
    assert (hf.intermediate_size, hf.max_position_embeddings) == (c.ffn_hidden, c.max_seq_len)
    assert hf.rms_norm_eps == c.norm_eps
    c.to_json()  # provenance must stay serialisable


def test_tiny_file_round_trip(tmp_path) -> None:
    weights = tiny_weights()
    ckpt = read_gguf(write_tiny_gguf(tmp_path / "tiny.gguf", weights))
    assert set(ckpt.tensors) == set(weights)
    for name, w in weights.items():
        assert torch.equal(ckpt.tensors[name], w), name
    c = ckpt.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_hidden) == tuple(TINY.values())
    assert c.tie_embeddings and c.name == "Tiny Test" and c.max_seq_len == 128
    assert ckpt.metadata["tokenizer.ggml.pre"] == "smollm"
    assert not any(isinstance(v, list) for v in ckpt.metadata.values())
    assert ckpt.tokenizer.decode(ckpt.tokenizer.encode("hello the<|im_end|>")) == "hello the<|im_end|>"


def test_untied_output_and_dtype(tmp_path) -> None:
    weights = tiny_weights(tied=False)
    model, _ = load_gguf(write_tiny_gguf(tmp_path / "untied.gguf", weights), dtype=torch.bfloat16)
    assert not model.config.tie_embeddings
    assert model.output.weight.dtype == torch.bfloat16
    assert torch.equal(model.output.weight, weights["output.weight"].bfloat16())


def test_quantized_tiny_file_loads(tmp_path) -> None:
    weights = tiny_weights()
    qtypes = {"blk.0.attn_q.weight": Q.Q4_1, "blk.0.attn_k.weight": Q.Q8_0, "blk.1.ffn_up.weight": Q.Q4_0}
    ckpt = read_gguf(write_tiny_gguf(tmp_path / "q.gguf", weights, qtypes=qtypes))
    q = ckpt.tensors["layers.0.attention.wq.weight"]
    stored = llama_cpp_permute(weights["layers.0.attention.wq.weight"], TINY["n_heads"]).numpy()
    expected = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(stored, Q.Q4_1), Q.Q4_1))
    assert torch.equal(q, unpermute_qk(expected, TINY["n_heads"]))


# ----------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        read_gguf(tmp_path / "nope.gguf")


def test_folder_instead_of_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="is a folder"):
        read_gguf(tmp_path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 a zip file, not a gguf", b'{"json": true}'])
def test_not_a_gguf(tmp_path, content: bytes) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"model\.gguf is not a GGUF file"):
        read_gguf(path)


@pytest.mark.parametrize("keep", [0.001, 0.02, 0.3, 0.9, 0.9999])
def test_truncated_file(tmp_path, keep: float) -> None:
    data = write_tiny_gguf(tmp_path / "full.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: max(4, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match=r"cut\.gguf .*(truncated or corrupt|not a GGUF file)"):
        read_gguf(path)


def test_unknown_tensor_name(tmp_path) -> None:
    path = write_tiny_gguf(tmp_path / "x.gguf", extra_tensors={"blk.0.attn_q_norm.weight": np.ones(8, np.float32)})
    with pytest.raises(CheckpointError, match=r"unknown tensor names blk\.0\.attn_q_norm\.weight"):
        read_gguf(path)


def test_tensor_beyond_the_layers(tmp_path) -> None:
    path = write_tiny_gguf(tmp_path / "x.gguf", extra_tensors={"blk.7.ffn_norm.weight": np.ones(32, np.float32)})
    with pytest.raises(CheckpointError, match=r"beyond the config's 2 layers: blk\.7\.ffn_norm\.weight"):
        read_gguf(path)


def test_missing_tensor(tmp_path) -> None:
    path = write_tiny_gguf(tmp_path / "x.gguf", drop_tensors=("blk.1.ffn_up.weight",))
    with pytest.raises(CheckpointError, match=r"missing tensors .*layers\.1\.feed_forward\.w3\.weight"):
        read_gguf(path)


def test_wrong_shape(tmp_path) -> None:
    weights = tiny_weights()
    weights["layers.1.feed_forward.w1.weight"] = torch.randn(40, 32)
    with pytest.raises(CheckpointError, match=r"blk\.1\.ffn_gate\.weight has shape \(40, 32\).*expects \(48, 32\)"):
        read_gguf(write_tiny_gguf(tmp_path / "x.gguf", weights))


def test_unsupported_quant_type(tmp_path) -> None:
    weights = tiny_weights()
    del weights["layers.0.attention_norm.weight"]
    int_norm = {"blk.0.attn_norm.weight": np.ones(32, np.int32)}
    path = write_tiny_gguf(tmp_path / "x.gguf", weights, extra_tensors=int_norm)
    with pytest.raises(CheckpointError, match=r"blk\.0\.attn_norm\.weight is stored as I32"):
        read_gguf(path)


def test_other_architecture(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"general\.architecture is 'qwen2'"):
        read_gguf(write_tiny_gguf(tmp_path / "x.gguf", arch="qwen2"))


def test_missing_metadata_key(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"no llama\.block_count"):
        read_gguf(write_tiny_gguf(tmp_path / "x.gguf", drop_meta=("llama.block_count",)))


def test_invalid_metadata_values(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"n_heads \(4\) must be a multiple of n_kv_heads \(3\)"):
        read_gguf(write_tiny_gguf(tmp_path / "x.gguf", meta={"llama.attention.head_count_kv": 3}))
    with pytest.raises(CheckpointError, match="partial rotary"):
        read_gguf(write_tiny_gguf(tmp_path / "y.gguf", meta={"llama.rope.dimension_count": 4}))


def test_unknown_pre_tokenizer(tmp_path) -> None:
    known = r"known: \['default', 'gpt2', 'smollm'\]"
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.pre is 'made-up'.*" + known):
        read_gguf(write_tiny_gguf(tmp_path / "x.gguf", meta={"tokenizer.ggml.pre": "made-up"}))


def test_sentencepiece_vocabulary_is_refused(tmp_path) -> None:
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.model is 'llama'"):
        read_gguf(write_tiny_gguf(tmp_path / "x.gguf", meta={"tokenizer.ggml.model": "llama"}))


def test_bad_files_leave_nothing_behind(tmp_path) -> None:
    path = write_tiny_gguf(tmp_path / "x.gguf", drop_tensors=("output_norm.weight",))
    before = sorted(tmp_path.iterdir())
    with pytest.raises(CheckpointError):
        load_gguf(path)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("gguf_name", "expected"),
    [
        ("token_embd.weight", "tok_embeddings.weight"),
        ("output.weight", "output.weight"),
        ("output_norm.weight", "norm.weight"),
        ("blk.12.attn_output.weight", "layers.12.attention.wo.weight"),
        ("blk.0.ffn_gate.weight", "layers.0.feed_forward.w1.weight"),
        ("blk.0.ffn_down.weight", "layers.0.feed_forward.w2.weight"),
        ("blk.0.ffn_up.weight", "layers.0.feed_forward.w3.weight"),
        ("blk.3.attn_norm.weight", "layers.3.attention_norm.weight"),
        ("blk.0.attn_q.bias", None),
        ("rope_freqs.weight", None),
        ("blk.x.attn_q.weight", None),
    ],
)
def test_name_mapping(gguf_name: str, expected: str | None) -> None:
    assert havoc_name(gguf_name) == expected


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_read_equals_fusing_afterwards(tmp_path, dtype) -> None:
    from havoc.io.checkpoint import fuse_projections

    path = write_tiny_gguf(tmp_path / "f.gguf", qtypes={"blk.1.ffn_gate.weight": Q.Q8_0})
    want = fuse_projections(read_gguf(path).tensors)
    got = read_gguf(path, dtype=dtype, fuse=True).tensors
    assert got.keys() == want.keys() and any(k.endswith("wqkv.weight") for k in got)
    for k, w in want.items():
        assert torch.equal(got[k], w if dtype is None else w.to(dtype)), k


def test_build_model_consumes_only_a_valid_checkpoint(tmp_path) -> None:
    from havoc.io.checkpoint import build_model

    ckpt = read_gguf(write_tiny_gguf(tmp_path / "c.gguf"))
    tensors = dict(ckpt.tensors)
    bad = dict(tensors)
    bad.pop("layers.1.feed_forward.w3.weight")
    with pytest.raises(CheckpointError, match=r"w3\.weight"):
        build_model(ckpt.config, bad, consume=True)
    assert len(bad) == len(tensors) - 1  # nothing taken from a checkpoint that does not fit
    reference = build_model(ckpt.config, dict(tensors))
    model = build_model(ckpt.config, tensors, dtype=torch.bfloat16, consume=True)
    assert tensors == {}
    for (name, p), (_, q) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q.to(torch.bfloat16)), name
