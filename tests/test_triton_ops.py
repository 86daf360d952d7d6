"""The Triton kernels as havoc ops: dispatch, `havoc env`, torch.library contracts, torch.compile, the decoder
on both paths, and a few training steps where the Triton and reference paths must track each other.
"""

import copy
import dataclasses
import json

import pytest
import torch

from havoc import HavocModel, ModelConfig, backends, ops
from havoc.errors import ConfigError
from havoc.kernels import reference as ref

from .triton_support import DEVICE, ON_GPU, TOL, assert_close, randn

pytest.importorskip("triton", reason="the Triton kernels need the triton package (pip install '.[test]')")
from havoc.backends import triton as triton_backend  # noqa: E402


def tiny(**overrides) -> HavocModel:
    torch.manual_seed(0)
    return HavocModel(ModelConfig.from_preset("tiny", **overrides)).to(DEVICE).eval()


# ------------------------------------------------------------------------------------------ dispatch
def test_triton_backend_runs_the_kernels_and_auto_keeps_cpu_on_the_reference(monkeypatch):
    calls = []
    impl = backends.of_backend("rms_norm", "triton")
    spy = dataclasses.replace(impl, fn=lambda *a: calls.append(1) or impl.fn(*a))
    monkeypatch.setitem(backends._IMPLS, (impl.op, impl.device), spy)
    x, w = randn(2, 8), randn(8)
    with ops.use_backend("triton"):
        ops.rms_norm(x, w, 1e-5)
        assert ops.linear(x, randn(3, 8)).shape == (2, 3)  # no Triton linear: the reference
    assert calls == [1]
    if not ON_GPU:
        ops.rms_norm(x, w, 1e-5)  # auto on CPU: the reference
        assert calls == [1]


def test_every_op_but_linear_and_copy_blocks_has_a_triton_kernel_registered_for_cuda():
    # linear is cuBLAS's; copy_blocks is one index_copy_ per pool (a gather-scatter torch does at bandwidth)
    assert set(triton_backend.KERNELS) == set(ops.OPS) - {"linear", "copy_blocks"}
    cuda = ops.describe("cuda")
    for op in triton_backend.KERNELS:
        assert cuda[op].startswith("fast (Triton kernel havoc.kernels.") and triton_backend.KERNEL_STATUS in cuda[op]
        assert backends.fast(op, "cuda").fn.__name__ == op  # one name from ops to the kernel
    assert backends.why_not("linear", "cuda").startswith("no Triton kernel")


@pytest.mark.skipif(ON_GPU, reason="the interpreter switch matters on CPU tensors only")
def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with ops.use_backend("triton"), pytest.raises(ConfigError, match="set TRITON_INTERPRET=1"):
        ops.swiglu(torch.randn(2, 4), torch.randn(2, 4))


def test_havoc_env_names_the_cuda_kernels_and_their_status(capsys):
    from havoc.cli import main

    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["ops_cuda"]) == set(ops.OPS)
    assert "Triton kernel havoc.kernels.flash_attention.attention;" in info["ops_cuda"]["attention"]
    assert "not yet run on a GPU" in info["ops_cuda"]["rms_norm"]
    assert main(["env"]) == 0
    assert "Ops on CUDA tensors" in capsys.readouterr().out


# --------------------------------------------------------------------------------- torch.library
def _op_cases():
    for module in {m for m, _ in triton_backend.KERNELS.values()}:  # the ops exist once their modules load
        __import__(f"havoc.kernels.{module}")
    x = randn(3, 40, requires_grad=True)
    w = randn(40, requires_grad=True)
    qkv = randn(2, 5, 8, 16, requires_grad=True)
    cos, sin = ref.rope_cos_sin(torch.arange(5, device=DEVICE).expand(2, 5), 16, 1e4)
    q, k, v = randn(2, 4, 5, 16, requires_grad=True), randn(2, 2, 7, 16, requires_grad=True), randn(2, 2, 7, 16, requires_grad=True)
    kc, vc = randn(6, 4, 2, 16), randn(6, 4, 2, 16)
    tables = torch.tensor([[0, 1, 2], [3, 4, -1]], dtype=torch.int32, device=DEVICE)
    lens = torch.tensor([9, 6], dtype=torch.int32, device=DEVICE)
    h, wv = randn(6, 16, requires_grad=True), randn(30, 16, requires_grad=True)
    t = torch.randint(0, 30, (6,), device=DEVICE)
    cu = torch.tensor([0, 3, 7], dtype=torch.int32, device=DEVICE)
    hv = torch.ops.havoc
    return {
        "rms_norm": (hv.rms_norm.default, (x, w, 1e-5)),
        "add_rms_norm": (hv.add_rms_norm.default, (x, randn(3, 40, requires_grad=True), w, 1e-5)),
        "apply_rope": (hv.apply_rope.default, (qkv[:, :, :6], cos, sin)),
        "swiglu": (hv.swiglu.default, (x[:, :20], x[:, 20:])),
        "attention": (hv.attention.default, (q, k, v, None, None, None, 0, 0, True, 2, 0.25)),
        "attention_varlen": (
            hv.attention.default,
            (randn(7, 4, 16, requires_grad=True), randn(7, 2, 16, requires_grad=True), randn(7, 2, 16, requires_grad=True),
             cu, cu, None, 4, 4, True, 0, 0.25),
        ),
        "paged_decode_attention": (hv.paged_decode_attention.default, (randn(2, 4, 16), kc, vc, tables, lens, 0.25, 2)),
        "write_kv": (hv.write_kv.default, (kc.clone(), vc.clone(), randn(3, 2, 16), randn(3, 2, 16), torch.tensor([0, 5, -1], device=DEVICE))),
        "linear_cross_entropy": (hv.linear_cross_entropy.default, (h, wv, t, -100, "mean", 4, True, True)),
    }


OP_CASES = [
    "rms_norm", "add_rms_norm", "apply_rope", "swiglu", "attention", "attention_varlen",
    "paged_decode_attention", "write_kv", "linear_cross_entropy",
]


@pytest.mark.parametrize("name", OP_CASES)
def test_opcheck(name):
    # schema (declared mutations and aliasing), fake-tensor shapes and strides, autograd registration,
    # and tracing through AOT dispatch with dynamic shapes: what torch.compile relies on
    op, args = _op_cases()[name]
    torch.library.opcheck(op, args)


def test_torch_compile_traces_the_decoder_without_graph_breaks():
    model = tiny()
    tokens = torch.randint(0, model.config.vocab_size, (2, 9), device=DEVICE)
    targets = torch.randint(0, model.config.vocab_size, (2, 9), device=DEVICE)
    with ops.use_backend("triton"):
        eager_logits = model(tokens)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        assert_close(compiled(tokens), eager_logits, torch.float32, "logits")
        loss = torch.compile(model.loss, backend="aot_eager", fullgraph=True)(tokens, targets)
        loss.backward()
    assert model.tok_embeddings.weight.grad is not None


# ----------------------------------------------------------------------------- GPU tile configs
def test_gpu_tile_configs_compute_the_same(monkeypatch):
    # On a GPU the launchers pick other tiles and program counts than under the interpreter; run those
    # (warps and stages aside) through the interpreter so their index arithmetic is checked here.
    import havoc.kernels.cross_entropy as ce
    import havoc.kernels.flash_attention as fa
    import havoc.kernels.paged_attention as pa
    import havoc.kernels.rms_norm as rn
    import havoc.kernels.swiglu as sw

    for module in (ce, fa, pa, rn, sw):
        monkeypatch.setattr(module, "interpreting", lambda: False)
    torch.manual_seed(0)
    x, w = randn(70, 96, requires_grad=True), randn(96, requires_grad=True)
    dx, dw = torch.autograd.grad(rn.rms_norm(x, w, 1e-5).sum(), (x, w))
    dx_r, dw_r = torch.autograd.grad(ref.rms_norm(x, w, 1e-5).sum(), (x, w))
    assert_close(dx, dx_r, torch.float32, "rms_norm dx")
    assert_close(dw, dw_r, torch.float32, "rms_norm dw")
    g, u = randn(3, 1500), randn(3, 1500)
    assert_close(sw.swiglu(g, u), ref.swiglu(g, u), torch.float32, "swiglu")
    q, k, v = randn(1, 8, 150, 64, requires_grad=True), randn(1, 2, 150, 64, requires_grad=True), randn(1, 2, 150, 64, requires_grad=True)
    out = fa.attention(q, k, v)
    expected = ref.attention(q, k, v)
    assert_close(out, expected, torch.float32, "attention")
    gout = randn(*out.shape)
    for name, a, e in zip("qkv", torch.autograd.grad(out, (q, k, v), gout), torch.autograd.grad(expected, (q, k, v), gout)):
        assert_close(a, e, torch.float32, f"attention d{name}")
    kc, vc = randn(20, 16, 2, 64), randn(20, 16, 2, 64)
    tables = torch.arange(20, dtype=torch.int32, device=DEVICE).view(2, 10)
    lens = torch.tensor([150, 3], dtype=torch.int32, device=DEVICE)
    qd = randn(2, 8, 64)
    assert_close(pa.paged_decode_attention(qd, kc, vc, tables, lens), ref.paged_decode_attention(qd, kc, vc, tables, lens), torch.float32, "paged")
    h, wv = randn(40, 32, requires_grad=True), randn(5000, 32, scale=0.3, requires_grad=True)
    t = torch.randint(0, 5000, (40,), device=DEVICE)
    loss = ce.linear_cross_entropy(h, wv, t)
    assert_close(loss, ref.linear_cross_entropy(h, wv, t), torch.float32, "cross-entropy")


# ------------------------------------------------------------------------------------- the decoder
@pytest.mark.parametrize(
    "overrides", [{}, dict(rotary_dim=8), dict(n_kv_heads=1, tie_embeddings=False), dict(n_kv_heads=6)]
)
def test_decoder_logits_match_on_both_paths(overrides):
    model = tiny(**overrides)
    tokens = torch.randint(0, model.config.vocab_size, (2, 37), device=DEVICE)
    with torch.no_grad():
        with ops.use_backend("reference"):
            expected = model(tokens)
        with ops.use_backend("triton"):
            logits = model(tokens)
    assert_close(logits, expected, torch.float32, "logits")


def test_cached_decoding_with_left_padding_matches_on_both_paths():
    model = tiny()
    V = model.config.vocab_size
    tokens = torch.randint(3, V, (3, 21), device=DEVICE)
    mask = torch.ones(3, 21, dtype=torch.bool, device=DEVICE)
    mask[1, :6] = False  # left padding: the kernel's key mask
    mask[2, :13] = False
    steps = torch.randint(3, V, (3, 4), device=DEVICE)
    outputs = {}
    with torch.no_grad():
        for backend in ("reference", "triton"):
            with ops.use_backend(backend):
                cache = model.new_cache(3, 40)
                prefill = model(tokens, cache=cache, attention_mask=mask)  # q_offset 0, key mask
                decode = [model(steps[:, j : j + 1], cache=cache) for j in range(3)]  # one query at offset
                chunk = model(steps[:, 3:], cache=cache)
                outputs[backend] = torch.cat([prefill[mask].flatten(), *(d.flatten() for d in decode), chunk.flatten()])
    assert_close(outputs["triton"], outputs["reference"], torch.float32, "logits")


def test_paged_cache_decoding_matches_on_both_paths():
    """Prefill at an offset after a prefix-cache hit, a fork (copy-on-write), then ragged batched decode steps
    through the paged K/V write and the paged decode kernel."""
    from havoc.cache import PagedKVCache

    model = tiny()
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(3, V, (21,), generator=g).tolist()
    prompts = [shared + torch.randint(3, V, (n,), generator=g).tolist() for n in (9, 2)]
    steps = torch.randint(3, V, (4, 3), generator=g)
    outputs = {}
    with torch.no_grad():
        for backend in ("reference", "triton"):
            with ops.use_backend(backend):
                cache = PagedKVCache.for_model(model, 32, block_size=5)
                got = []
                for i, p in enumerate(prompts):
                    skipped = cache.add(i, p)
                    assert skipped == (0 if i == 0 else 20)  # the second prompt reuses 4 full blocks
                    got.append(model(cache.prepare([i]), cache=cache)[0, -1])
                cache.fork(0, 2)
                for j in range(steps.shape[0]):
                    got.append(model(cache.prepare([0, 1, 2], steps[j]), cache=cache)[:, -1].flatten())
                cache.check_invariants()
                outputs[backend] = torch.cat(got)
    assert_close(outputs["triton"], outputs["reference"], torch.float32, "logits")


# ------------------------------------------------------------------------------------- training
# Four AdamW steps of the tiny model from the same weights on the same batches. Before the first update the
# gradients of every parameter (every backward kernel, the fused cross-entropy included) must match the
# reference path's to the fp32 tolerance; after it, each step's loss must stay within LOSS_RTOL of the
# reference's. Parameters are not compared after updates: Adam divides tiny gradients by their own scale,
# so rounding-level differences in a rarely-used embedding row become lr-sized steps on both paths alike.
LOSS_RTOL = 1e-4  # >100x the drift measured over these steps (fp32: at most 3e-7 relative)
STEPS = 4


def _batches(V):
    # one batch, seen every step: its loss must fall, so the losses compared are not noise around a constant
    torch.manual_seed(1)
    tokens = torch.randint(0, V, (2, 17), device=DEVICE)
    targets = tokens.roll(-1, dims=1)
    targets[:, -1] = -100  # no next token for the last position
    return [(tokens, targets)] * STEPS


def _train(model, backend, batches):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses, first_grads = [], None
    with ops.use_backend(backend):
        for tokens, targets in batches:
            loss = model.loss(tokens, targets)
            loss.backward()
            if first_grads is None:
                first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return losses, first_grads


def test_training_steps_track_the_reference():
    base = tiny().train()
    batches = _batches(base.config.vocab_size)
    ref_losses, ref_grads = _train(copy.deepcopy(base), "reference", batches)
    tri_losses, tri_grads = _train(copy.deepcopy(base), "triton", batches)
    for name, g in tri_grads.items():
        assert_close(g, ref_grads[name], torch.float32, f"step-0 gradient of {name}")
    assert ref_losses[-1] < ref_losses[0] - 0.1
    for step, (a, e) in enumerate(zip(tri_losses, ref_losses)):
        assert abs(a - e) <= LOSS_RTOL * abs(e), f"step {step}: triton {a} vs reference {e}"


def test_tolerance_table_is_the_one_documented():
    assert TOL[torch.float32] <= 1e-4
