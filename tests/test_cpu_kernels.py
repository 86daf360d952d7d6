"""The C++ decode kernels (csrc/cpu_decode.cpp) against exact oracles: the product over fp32, bf16 and int8
weights (int8 activations or fp32 ones), its argmax-only LM head, the int8 activation quantization, every
kernel variant (those this CPU lacks are skipped, saying why), awkward shapes, bad inputs rejected.

Each weight format means one formula on every variant (csrc/cpu_decode.h): fp32 x fp32; bf16 weights x
activations rounded to bf16; int8 x int8 activations quantized per row and group
(`reference.linear_int8`); int8 x fp32 activations. The oracles compute those in float64, so the only
difference left is the kernels' fp32 accumulation."""

import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from havoc import _C, ops
from havoc.backends import cpu
from havoc.backends.cpu import Int8Weight
from havoc.kernels import reference

pytestmark = pytest.mark.op("linear", "cpu")  # tests/test_ops_coverage.py

VARIANTS = _C.linear_variants()  # every variant compiled into a build; each test skips the ones this CPU lacks
FORMATS = ["float32", "bfloat16", "int8", "int8_interleaved", "int8_weight_only"]  # interleaved: Int8Weight.layout
# (rows M, in K, out N): 1 row, not multiples of any vector width, SmolLM2's K (576, 1536), a 7B-sized K.
# K: under one 32-column bf16 block (17), blocks plus a vector and/or scalar tail (33, 47, 80, 100), odd K
# under AMX tiles (95: two 32-input steps and 31 left). M from 4 up runs the amx variant's tiles: N not a
# multiple of 16 (67, 35) leaves rows to its vector kernel, M = 33 and 20 partial 16-row activation blocks.
SHAPES = [(1, 576, 960), (1, 1, 1), (3, 17, 5), (5, 1536, 576), (4, 33, 9), (2, 47, 7), (3, 80, 19), (9, 576, 67),
          (2, 11008, 20), (33, 100, 21), (6, 95, 35), (20, 64, 33), (17, 11008, 40), (1, 11008, 3), (32, 576, 96)]


def variant(name: str, fmt: str | None = None) -> str:
    """`name`, or a skip saying why this CPU (or build) cannot run it (or does not read weights of `fmt`)."""
    why = _C.linear_variant_missing(name)
    if why:
        pytest.skip(f"kernel variant {name}: {why}")
    if fmt == "int8_interleaved" and not _C.reads_interleaved(name):
        pytest.skip(f"kernel variant {name} reads row-major int8 weights only (and refuses interleaved ones)")
    return name


def _weight(fmt, N, K, seed=0):
    """(weight as the kernel takes it, the fp64 oracle of x @ W.T)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g)
    if fmt.startswith("int8"):
        q = Int8Weight.quantize(w, 64, activations="fp32" if fmt == "int8_weight_only" else "int8")
        q = q.with_layout("interleaved" if fmt == "int8_interleaved" else "rows")
        return q, lambda x: reference.linear_int8(x, q.q, q.scales, 64, activations=q.activations).double()
    if fmt == "bfloat16":
        wb = w.to(torch.bfloat16)
        return wb, lambda x: x.to(torch.bfloat16).double() @ wb.double().T
    return w, lambda x: x.double() @ w.double().T


def _rel(got, want):
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M, K, N", SHAPES)
def test_linear_matches_the_formula_of_its_format(isa, fmt, M, K, N):
    w, oracle = _weight(fmt, N, K, seed=M + K + N)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    got = cpu.linear(x, w, isa=variant(isa, fmt))
    assert got.shape == (M, N) and got.dtype == torch.float32
    # fp32 accumulation over K terms: relative error ~ sqrt(K) * 2^-24
    assert _rel(got.double(), oracle(x)) < 1e-5 * max(1.0, (K / 576) ** 0.5)


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("fmt", ["int8", "int8_interleaved"])
@pytest.mark.parametrize("M", [1, 5])
def test_int8_activations_round_the_rounded_product_on_every_variant(isa, fmt, M):
    """Every variant quantizes activations by the formula: x * (1 / scale) rounded to fp32, then half to
    even. Rows of such ties (_fp32_product_ties) rounded the other way by a fused multiply-add would be a
    step off in most of their inputs."""
    K = 576
    w, oracle = _weight(fmt, 40, K, seed=M)
    x = torch.stack([torch.cat([_fp32_product_ties(64, seed=9 * m + j) for j in range(K // 64)]) for m in range(M)])
    got = cpu.linear(x, w, isa=variant(isa, fmt))
    assert _rel(got.double(), oracle(x)) < 1e-5


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_accumulate_adds_to_out_and_strided_rows_work(isa, fmt):
    w, oracle = _weight(fmt, 37, 70)
    xbig = torch.randn(6, 90)
    x = xbig[:, 5:75]  # rows strided (90), features contiguous
    out = torch.randn(6, 37)
    want = out.double() + oracle(x)
    spec = cpu.weight_spec(w)
    _C.linear(x.numpy(), *spec[:4], cols=70, out=out.numpy(), accumulate=True, isa=variant(isa, fmt))
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M, N", [(1, 49152 // 64), (5, 1000), (32, 130), (3, 1), (16, 67)])
def test_linear_argmax_matches_the_full_product(isa, fmt, M, N):
    K = 96
    w, _ = _weight(fmt, N, K, seed=N)
    x = torch.randn(M, K)
    full = cpu.linear(x, w, isa=variant(isa, fmt))
    spec = cpu.weight_spec(w)
    idx, val = _C.linear_argmax(x.numpy(), *spec[:4], cols=K, isa=isa)
    assert torch.equal(torch.from_numpy(idx), full.argmax(-1))
    torch.testing.assert_close(torch.from_numpy(val), full.max(-1).values)


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("K, N", [(576, 67), (95, 40), (1536, 33)])
def test_a_row_gets_the_same_bits_in_any_batch(isa, fmt, K, N):
    """Batch invariance (the engine relies on it: chunked prefill, preemption by recompute, speculative
    verification): a row's product never depends on the other rows of the call, in every variant and
    format, across the batch sizes where the amx variant switches between its tiles and vector kernels."""
    w, _ = _weight(fmt, N, K, seed=K + N)
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(40, K, generator=g)
    alone = torch.cat([cpu.linear(rows[j : j + 1], w, isa=variant(isa, fmt)) for j in range(8)])
    for M in (2, 3, 4, 5, 16, 17, 33, 40):
        batch = cpu.linear(rows[:M], w, isa=isa)
        assert torch.equal(batch[: min(M, 8)], alone[: min(M, 8)]), M
    spec = cpu.weight_spec(w)
    idx1, val1 = _C.linear_argmax(rows[:1].numpy(), *spec[:4], cols=K, isa=isa)
    idx, val = _C.linear_argmax(rows.numpy(), *spec[:4], cols=K, isa=isa)
    assert idx[0] == idx1[0] and val[0] == val1[0]


@pytest.mark.parametrize("isa", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("K, N", [(576, 67), (95, 5), (11008, 3)])
def test_one_row_gets_the_same_bits_from_one_weight_stream_or_four(isa, fmt, K, N):
    """A product of one activation row streams the weight rows one at a time or four at a time (by the
    CPU: `_C.batch1_streams`); the results are the same bits, and the formula's."""
    w, oracle = _weight(fmt, N, K, seed=K * N)
    x = torch.randn(1, K, generator=torch.Generator().manual_seed(7))
    got = {}
    try:
        for streams in (1, 4):
            _C.set_batch1_streams(streams)
            assert _C.batch1_streams() == streams
            got[streams] = cpu.linear(x, w, isa=variant(isa, fmt))
    finally:
        _C.set_batch1_streams(0)
    assert torch.equal(got[1], got[4])
    assert _rel(got[1].double(), oracle(x)) < 1e-5 * max(1.0, (K / 576) ** 0.5)
    with pytest.raises(ValueError, match="1, 4 or 0"):
        _C.set_batch1_streams(2)
    assert _C.batch1_streams() in (1, 4)


def test_variants_name_what_they_lack():
    runnable = cpu.isas()
    assert runnable[0] == "scalar" and set(runnable) <= set(VARIANTS)
    for v in VARIANTS:
        why = _C.linear_variant_missing(v)
        assert (why == "") == (v in runnable), (v, why)
        assert why == "" or why.startswith(("this CPU lacks", "not compiled", "the OS refused")), why
    assert _C.linear_variant_missing("avx9000") == "unknown kernel variant"
    assert _C.attention_isa_for("auto") in _C.decode_attention_isas()
    status = cpu.variant_status()
    assert list(status) == VARIANTS and status[cpu.auto_isa()].startswith("runs")


def test_auto_runs_the_widest_variant_and_vdpbf16ps_only_where_it_pays():
    runnable = cpu.isas()
    rate = _C.bf16_dot_rate()
    assert (rate > 0) == ("avx512_bf16" in runnable)  # measured where it runs, 0 elsewhere
    if "avx512_bf16" in runnable:
        assert 0.05 < rate < 4, rate  # an issue rate against the FMA's, not noise or a broken timer
    # avx512_bf16 (not amx: its tiles) is passed over where vdpbf16ps issues too slowly to beat widening
    slow = rate < _C.bf16_dot_pays_at
    want = [v for v in runnable if not (v == "avx512_bf16" and slow)][-1]
    assert cpu.auto_isa() == want
    # and so is the vdpbf16ps attention kernel: "auto" gives its bits exactly where it pays, else avx512's
    if "avx512_bf16" not in _C.attention_isas():
        return
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, n, 64, generator=g).to(torch.bfloat16).view(torch.int16).numpy() for n in (9, 30, 30))

    def run(isa):
        out = np.zeros_like(q)
        _C.attention(q, k, v, causal=True, q_offset=21, key_mask=None, scale=0.125, dtype="bfloat16", isa=isa, out=out)
        return out

    auto, dot, fma = run("auto"), run("avx512_bf16"), run("avx512")
    assert not np.array_equal(dot, fma)  # the two kernels round differently: the check below can tell them apart
    assert np.array_equal(auto, fma if slow else dot)


def _fp32_product_ties(n: int, seed: int = 0) -> torch.Tensor:
    """n activations of one group of 64: the first (1.7) sets the scale s; every other x has an fp32 product
    x * (1 / s) of exactly k + 0.5 while its exact product is not k + 0.5. Rounded as the formula says (the
    product to fp32, then half to even) it goes one way; fused into one FMA with the rounding's addition,
    the other (SmolLM2's activations have such values: 27.5 became 27 on the FMA variants)."""
    rng = np.random.default_rng(seed)
    amax = np.float32(1.7)
    inv = np.float32(1.0) / (amax / np.float32(127.0))
    out = [amax]
    while len(out) < n:
        k = int(rng.integers(-126, 126))
        c = np.float32((k + 0.5) / float(inv))
        for _ in range(8):
            c = np.nextafter(c, np.float32(-np.inf))
        for _ in range(16):
            if np.float32(c * inv) == k + 0.5 and float(c) * float(inv) != k + 0.5:
                out.append(c)
                break
            c = np.nextafter(c, np.float32(np.inf))
    return torch.from_numpy(np.array(out, np.float32))


@pytest.mark.parametrize("K", [1, 63, 64, 100, 576, 11008])
def test_activation_quantization_is_the_reference_bit_for_bit(K):
    g = torch.Generator().manual_seed(K)
    x = torch.randn(7, K, generator=g) * torch.logspace(-3, 3, 7)[:, None]
    x[1] = 0.0  # all-zero groups: scale 0, q 0
    x[2, : min(K, 64)] = torch.tensor([0.5, -0.5, 1.5, 2.5, 127.0] * 13)[: min(K, 64)]  # ties at .5 of a step
    x[3, : min(K, 64)] = _fp32_product_ties(min(K, 64), seed=K)  # ties of the rounded product only
    q, s, c = _C.quantize_rows_int8(x.numpy(), 64)
    want_q, want_s = reference.quantize_int8(x, 64)
    assert q.shape == (7, -(-K // 64) * 64) and (q[:, K:] == 0).all()
    assert torch.equal(torch.from_numpy(q[:, :K]), want_q)
    assert torch.equal(torch.from_numpy(s), want_s)
    sums = torch.nn.functional.pad(want_q.int(), (0, -K % 64)).view(7, -1, 64).sum(-1)
    assert torch.equal(torch.from_numpy(c), -128 * sums)
    with pytest.raises(ValueError, match="multiple of 64"):
        _C.quantize_rows_int8(x.numpy(), 32)


def test_linear_argmax_ties_go_to_the_lowest_index():
    w = torch.zeros(300, 16)
    w[[7, 200, 250], 0] = 1.0  # three equal maxima, in different work chunks
    idx, val = _C.linear_argmax(torch.ones(2, 16).numpy(), w.numpy(), "float32")
    assert idx.tolist() == [7, 7] and val.tolist() == [1.0, 1.0]


def test_int8_weights_are_stored_as_offset_bytes_and_their_error_is_bounded_per_group():
    w = torch.randn(64, 200) * torch.linspace(0.01, 10, 200)  # very different scales along a row
    q = Int8Weight.quantize(w, 64)
    assert q.packed.dtype == torch.uint8 and q.scales.shape == (64, 4) and q.packed.shape == (64, 256)
    assert torch.equal(q.packed[:, :200].int() - 128, q.q.int()) and (q.packed[:, 200:] == 128).all()
    assert torch.equal(q.q, torch.round(w * (1.0 / q.scales).repeat_interleave(64, 1)[:, :200]).to(torch.int8))
    err = (q.dequantize() - w).abs()
    # each element is within half a step of its group's scale
    step = q.scales.repeat_interleave(64, dim=1)[:, :200]
    assert bool((err <= 0.5 * step + 1e-6).all())
    assert q.activations == "int8" and q.with_activations("fp32").spec()[1] == "int8_weight_only"


def _interleaved_oracle(rows: np.ndarray) -> np.ndarray:
    """csrc/cpu_decode.h's interleaved layout, written from its formula: blocks of 16 chunks of 64 bytes
    while 16 are left, then 8, 4, 2, 1; byte t of word p of chunk c0 + b at 64 (c0 + p // (16 / B)) +
    4 ((p % (16 / B)) B + b) + t."""
    out = np.empty_like(rows)
    nch, c0 = rows.shape[1] // 64, 0
    while c0 < nch:
        B = 16 if nch - c0 >= 16 else 1 << ((nch - c0).bit_length() - 1)
        A = 16 // B
        for b in range(B):
            for p in range(16):
                dst = 64 * (c0 + p // A) + 4 * ((p % A) * B + b)
                out[:, dst : dst + 4] = rows[:, 64 * (c0 + b) + 4 * p : 64 * (c0 + b) + 4 * p + 4]
        c0 += B
    return out


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 9, 16, 17, 24, 31, 40])
def test_interleaved_layout_is_the_header_formula_and_goes_back(chunks):
    rows = np.random.default_rng(chunks).integers(0, 256, (3, 64 * chunks), dtype=np.uint8)
    il = _C.interleave_int8(rows)
    assert np.array_equal(il, _interleaved_oracle(rows))
    assert np.array_equal(_C.interleave_int8(il, inverse=True), rows)
    q = Int8Weight.quantize(torch.randn(5, 64 * chunks - 13), 64)
    back = q.with_layout("interleaved")
    assert back.layout == "interleaved" and back.spec()[1] == "int8_interleaved"
    assert torch.equal(back.q, q.q) and torch.equal(back.dequantize(), q.dequantize())
    assert torch.equal(back.with_layout("rows").packed, q.packed) and q.with_layout("rows") is q


def test_interleaved_weights_are_refused_where_not_read_and_need_int8_activations_in_groups_of_64():
    w = torch.randn(8, 128)
    q = Int8Weight.quantize(w, 64).with_layout("interleaved")
    x = torch.randn(2, 128)
    for v in cpu.isas():
        if not _C.reads_interleaved(v):  # never row-major sums of interleaved bytes
            with pytest.raises(ValueError, match="interleaved layout are read by the avx512_vnni and avx512_bf16"):
                cpu.linear(x, q, isa=v)
            with pytest.raises(ValueError, match="interleaved layout are read by"):
                _C.linear_argmax(x.numpy(), *q.spec()[:4], cols=128, isa=v)
    assert not _C.reads_interleaved("scalar")
    with pytest.raises(Exception, match="int8 activations in groups of 64"):
        Int8Weight.quantize(w, 128).with_layout("interleaved")
    with pytest.raises(Exception, match="int8 activations in groups of 64"):
        q.with_activations("fp32")
    with pytest.raises(Exception, match="layout must be"):
        Int8Weight.quantize(w, 64).with_layout("columns")
    with pytest.raises(ValueError, match="takes groups of 64"):
        _C.linear(x.numpy(), q.packed.numpy(), "int8_interleaved", Int8Weight.quantize(w, 128).scales.numpy(), 128, cols=128)
    with pytest.raises(ValueError, match="multiple of 64 bytes"):
        _C.interleave_int8(np.zeros((2, 100), np.uint8))


def test_ops_linear_takes_the_kernel_for_decode_sizes(monkeypatch):
    calls = []
    real = cpu._kernel
    monkeypatch.setattr(cpu, "_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(cpu, "_plan", {})
    w = torch.randn(40, 24)
    with torch.inference_mode():
        for rows, dtype in ((1, torch.float32), (8, torch.bfloat16), (64, torch.float32)):
            out = ops.linear(torch.randn(rows, 1, 24, dtype=dtype), w.to(dtype))
            assert out.dtype == dtype and out.shape == (rows, 1, 40)
        assert len(calls) == 3
        monkeypatch.setattr(cpu, "_choose", lambda c: "plain")
        ops.linear(torch.randn(65, 24), w)  # prefill-sized: the planned product (here torch's)
        assert len(calls) == 3
        ops.linear(torch.randn(65, 24), Int8Weight.quantize(w))  # int8: always the kernel
        assert len(calls) == 4
        with ops.use_backend("reference"):
            ops.linear(torch.randn(2, 24), w)
        assert len(calls) == 4


def test_bad_inputs_are_rejected_clearly():
    w = torch.randn(8, 16)
    x = torch.randn(2, 16)
    out = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="features but the weight takes"):
        _C.linear(torch.randn(2, 15).numpy(), w.numpy(), "float32")
    with pytest.raises(ValueError, match="out must be"):
        _C.linear(x.numpy(), w.numpy(), "float32", out=np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="dtype bfloat16 needs"):
        _C.linear(x.numpy(), w.numpy(), "bfloat16", out=out)
    with pytest.raises(ValueError, match="dtype must be"):
        _C.linear(x.numpy(), w.numpy(), "float16", out=out)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.linear(x.numpy(), w.t().contiguous().t().numpy(), "float32", out=out)
    with pytest.raises(ValueError, match="2-D float32"):
        _C.linear(x.double().numpy(), w.numpy(), "float32", out=out)
    with pytest.raises(ValueError, match="contiguous along its last"):
        _C.linear(torch.randn(16, 2).t().numpy(), w.numpy(), "float32", out=out)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((2, 8), np.float32)
        ro.flags.writeable = False
        _C.linear(x.numpy(), w.numpy(), "float32", out=ro)
    q = Int8Weight.quantize(w, 64)
    p, s = q.packed.numpy(), q.scales.numpy()
    with pytest.raises(ValueError, match="group must be a positive multiple of 64"):
        _C.linear(x.numpy(), p, "int8", s, 32, cols=16)
    with pytest.raises(ValueError, match="need scales"):
        _C.linear(x.numpy(), p, "int8", None, 64, cols=16)
    with pytest.raises(ValueError, match="scales must be"):
        _C.linear(x.numpy(), p, "int8", q.scales[:, :0].contiguous().numpy(), 64, cols=16)
    with pytest.raises(ValueError, match="do not hold"):
        _C.linear(x.numpy(), p, "int8", s, 64, cols=100)
    with pytest.raises(ValueError, match="uint8 array"):
        _C.linear(x.numpy(), p.view(np.int8), "int8", s, 64, cols=16)
    with pytest.raises(ValueError, match="not available: unknown kernel variant"):
        _C.linear(x.numpy(), w.numpy(), "float32", isa="avx9000")
    unavailable = [v for v in VARIANTS if _C.linear_variant_missing(v)]
    for v in unavailable:  # a variant this CPU lacks is refused with its reason, never run
        with pytest.raises(ValueError, match="is not available: "):
            _C.linear(x.numpy(), w.numpy(), "float32", isa=v)
    with pytest.raises(Exception, match="multiple of 64"):
        Int8Weight.quantize(w, 96)
    with pytest.raises(Exception, match="fp32, bf16 or int8"):
        cpu.linear(x.half(), w.half(), isa="auto")
    with pytest.raises(Exception, match="activations must be"):
        Int8Weight.quantize(w, 64, activations="int4")


def test_reference_backend_gives_the_same_products():
    w = torch.randn(50, 40)
    x = torch.randn(3, 40)
    with torch.inference_mode():
        fast = ops.linear(x, w)
        with ops.use_backend("reference"):
            ref = ops.linear(x, w)
    torch.testing.assert_close(fast, F.linear(x, w))
    torch.testing.assert_close(ref, F.linear(x, w))


def test_collapse_hugepages_keeps_every_value_and_address():
    x = torch.randn(3 * 1024 * 1024 + 77)  # ~12 MiB: whole 2 MiB pages inside, ragged ends
    before, ptr = x.clone(), x.data_ptr()
    got = _C.collapse_hugepages(x.numpy())
    assert torch.equal(x, before) and x.data_ptr() == ptr
    assert got >= 0 and got % (1 << 21) == 0 and got <= x.numel() * 4 + (1 << 22)
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
        release = tuple(int(p) for p in platform.release().split(".")[:2])
    except (OSError, ValueError):
        pytest.skip("no Linux THP settings to say whether MADV_COLLAPSE works here")
    if "[never]" not in mode and release >= (6, 1):
        assert got >= 4 << 20  # at least the whole 2 MiB pages inside the 12 MiB
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(10, np.float32)
        ro.flags.writeable = False
        _C.collapse_hugepages(ro)
