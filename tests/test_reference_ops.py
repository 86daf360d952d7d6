"""The reference ops against independent implementations: transformers' Llama pieces and torch SDPA."""

import pytest
import torch
import torch.nn.functional as F

from havoc.kernels import reference as ref

transformers_llama = pytest.importorskip("transformers.models.llama.modeling_llama")

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [576, 1536, 4096, 11008, 7])
def test_rms_norm_matches_llama(dim, dtype):
    torch.manual_seed(dim)
    x = torch.randn(3, 5, dim).to(dtype) * 3
    norm = transformers_llama.LlamaRMSNorm(dim, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(dim))
    torch.testing.assert_close(ref.rms_norm(x, norm.weight, 1e-5), norm(x), **TOL[dtype])


def test_rms_norm_gradients_match_llama():
    torch.manual_seed(0)
    x = torch.randn(4, 576, requires_grad=True)
    w = torch.randn(576, requires_grad=True)
    norm = transformers_llama.LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(w)
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(4, 576)
    ref.rms_norm(x, w, 1e-5).backward(g)
    norm(x2).backward(g)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(w.grad, norm.weight.grad)


def _hf_rope(q, k, positions, rotary_dim, theta):
    # transformers' rotary embedding and apply_rotary_pos_emb on (B, H, T, hd) tensors
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    freqs = (inv_freq[None, :, None] @ positions[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    qr, kr = q[..., :rotary_dim], k[..., :rotary_dim]
    qr, kr = transformers_llama.apply_rotary_pos_emb(qr, kr, cos, sin)
    return torch.cat([qr, q[..., rotary_dim:]], -1), torch.cat([kr, k[..., rotary_dim:]], -1)


@pytest.mark.parametrize("head_dim, rotary_dim", [(64, 64), (128, 128), (64, 32)])
@pytest.mark.parametrize("offset", [0, 37])
def test_rope_matches_llama(head_dim, rotary_dim, offset):
    torch.manual_seed(head_dim + offset)
    B, T, H, KV = 2, 11, 6, 2
    q = torch.randn(B, T, H, head_dim)
    k = torch.randn(B, T, KV, head_dim)
    positions = torch.arange(offset, offset + T).expand(B, T).clone()
    positions[1] += 5  # rows at different offsets
    cos, sin = ref.rope_cos_sin(positions, rotary_dim, 1e5)
    qk = ref.apply_rope(torch.cat([q, k], dim=2), cos, sin)  # queries and keys in one call
    q1, k1 = qk[:, :, :H], qk[:, :, H:]
    q2, k2 = _hf_rope(q.transpose(1, 2), k.transpose(1, 2), positions, rotary_dim, 1e5)
    torch.testing.assert_close(q1, q2.transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k1, k2.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_rope_preserves_norm_and_relative_position():
    torch.manual_seed(0)
    q = torch.randn(1, 1, 1, 64)
    k = torch.randn(1, 1, 1, 64)

    def score(pq, pk):
        qr = ref.apply_rope(q, *ref.rope_cos_sin(torch.tensor([[pq]]), 64, 1e4))
        kr = ref.apply_rope(k, *ref.rope_cos_sin(torch.tensor([[pk]]), 64, 1e4))
        return (qr * kr).sum()

    torch.testing.assert_close(score(10, 3), score(107, 100), atol=1e-4, rtol=1e-4)
    qr = ref.apply_rope(q, *ref.rope_cos_sin(torch.tensor([[123]]), 64, 1e4))
    torch.testing.assert_close(qr.norm(), q.norm())


def test_rope_on_a_strided_view_and_pre_broadcast_tables():
    torch.manual_seed(4)
    qkv = torch.randn(2, 5, 9 + 2 * 3, 64)
    cos, sin = ref.rope_cos_sin(torch.arange(5).expand(2, 5), 64, 1e5)
    view = qkv[:, :, :12]  # the q|k heads of a fused projection: not contiguous
    expected = ref.apply_rope(view.contiguous(), cos, sin)
    torch.testing.assert_close(ref.apply_rope(view, cos, sin), expected)
    torch.testing.assert_close(ref.apply_rope(view, cos.unsqueeze(2), sin.unsqueeze(2)), expected)


def test_swiglu_matches_llama_mlp():
    torch.manual_seed(0)
    gate, up = torch.randn(3, 1536), torch.randn(3, 1536)
    torch.testing.assert_close(ref.swiglu(gate, up), F.silu(gate) * up)
    torch.testing.assert_close(ref.swiglu(gate, up), gate * torch.sigmoid(gate) * up)


def _naive(q, k, v, q_offset, key_mask):
    # independent oracle: repeat K/V per query head, explicit masked softmax in float64
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    k = k.double().repeat_interleave(H // KV, dim=1)
    v = v.double().repeat_interleave(H // KV, dim=1)
    scores = q.double() @ k.transpose(-1, -2) / D**0.5  # (B, H, T, S)
    allowed = torch.arange(S)[None, :] <= (torch.arange(T)[:, None] + q_offset)
    allowed = allowed[None, None].expand(B, 1, T, S)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(scores, -1).nan_to_num(0.0) @ v).to(q.dtype)  # all-padding rows: zeros


@pytest.mark.parametrize("H, KV", [(8, 8), (9, 3), (8, 2), (32, 4)])
@pytest.mark.parametrize("T, S", [(1, 1), (1, 77), (13, 13), (13, 50)])
@pytest.mark.parametrize("D", [64, 128])
def test_attention_matches_sdpa(H, KV, T, S, D):
    torch.manual_seed(H * 1000 + T * 10 + S)
    B = 2
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, KV, S, D), torch.randn(B, KV, S, D)
    out = ref.attention(q, k, v, causal=True)
    torch.testing.assert_close(out, _naive(q, k, v, S - T, None), atol=2e-5, rtol=2e-5)


def test_attention_with_offset_and_key_mask():
    torch.manual_seed(1)
    B, H, KV, T, S, D = 3, 6, 2, 7, 20, 64
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, KV, S, D), torch.randn(B, KV, S, D)
    key_mask = torch.ones(B, S, dtype=torch.bool)
    key_mask[1, :4] = False
    key_mask[2, :9] = False
    out = ref.attention(q, k, v, causal=True, q_offset=5, key_mask=key_mask)
    torch.testing.assert_close(out, _naive(q, k, v, 5, key_mask), atol=2e-5, rtol=2e-5)


def test_fully_masked_query_gives_zeros_not_nan():
    q, k, v = torch.randn(1, 2, 3, 16), torch.randn(1, 1, 3, 16), torch.randn(1, 1, 3, 16)
    key_mask = torch.tensor([[False, False, True]])
    out = ref.attention(q, k, v, causal=True, key_mask=key_mask)
    assert torch.isfinite(out).all()
    assert (out[:, :, :2] == 0).all()  # queries 0 and 1 see only padding
    torch.testing.assert_close(out[0, :, 2], v[0, 0, 2].expand(2, 16))


def test_attention_gradients_match_naive():
    torch.manual_seed(2)
    B, H, KV, T, D = 2, 6, 2, 9, 64
    q = torch.randn(B, H, T, D, requires_grad=True)
    k = torch.randn(B, KV, T, D, requires_grad=True)
    v = torch.randn(B, KV, T, D, requires_grad=True)
    g = torch.randn(B, H, T, D)
    grads = torch.autograd.grad(ref.attention(q, k, v), (q, k, v), g)
    grads_sdpa = torch.autograd.grad(_naive(q, k, v, 0, None), (q, k, v), g)
    for a, b in zip(grads, grads_sdpa):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_attention_bf16_close_to_fp32_oracle():
    torch.manual_seed(3)
    B, H, KV, T, S, D = 2, 9, 3, 5, 40, 64
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, KV, S, D), torch.randn(B, KV, S, D)
    out = ref.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    torch.testing.assert_close(out.float(), _naive(q, k, v, S - T, None), atol=3e-2, rtol=3e-2)


def test_rope_tables_pair_feature_i_with_i_plus_half():
    cos, sin = ref.rope_cos_sin(torch.arange(7)[None], 32, 1e4)
    assert cos.shape == sin.shape == (1, 7, 32)
    torch.testing.assert_close(cos[..., :16], cos[..., 16:])
    torch.testing.assert_close(sin[..., :16], sin[..., 16:])
