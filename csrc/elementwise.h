// The decoder's elementwise ops over rows of fp32 or bf16 elements (bf16 as its upper 16 bits in a
// uint16_t), W fp32 lanes at a time: RMSNorm, SwiGLU and rotate-half RoPE, with the reference's roundings
// (kernels/reference.py): the arithmetic is fp32, and a bf16 result is rounded where the reference's
// bf16 tensors round it. The C++ decode step uses the fp32 instantiations; csrc/elementwise.cpp exposes
// them as the CPU fast paths of the ops. Header-only: always_inline templates, compiled into each ISA
// wrapper that calls them.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "paged_attention.h"  // KVDType
#include "simd.h"

namespace havoc {
namespace simd {

// y[m] = as_stored(x[m] / sqrt(mean(x[m]^2) + eps)) * g for M rows of D elements (row strides ldx, ldy).
// The reference casts the normalised row to x's dtype before the gain multiplies it.
template <int W, class T, class G>
HAVOC_INLINE void rms_norm_rows(const T* x, int64_t ldx, const G* g, T* y, int64_t ldy, int64_t M, int64_t D,
                                float eps) {
  using F = typename V<W>::f;
  for (int64_t m = 0; m < M; ++m) {
    const T* xm = x + m * ldx;
    T* ym = y + m * ldy;
    F a0 = {}, a1 = {};
    int64_t d = 0;
    for (; d + 2 * W <= D; d += 2 * W) {
      const F u = loadv<W>(xm + d), v = loadv<W>(xm + d + W);
      a0 += u * u;
      a1 += v * v;
    }
    float ss = hsum<W>(a0 + a1);
    for (; d < D; ++d) ss += load(xm + d) * load(xm + d);
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
    d = 0;
    for (; d + W <= D; d += W) storev<W>(ym + d, as_stored<W, T>(loadv<W>(xm + d) * r) * loadv<W>(g + d));
    for (; d < D; ++d) store(ym + d, as_stored<T>(load(xm + d) * r) * load(g + d));
  }
}

// silu(x) = x * sigmoid(x), sigmoid through exp(-|x|) <= 1 (NaN at x = -inf, as torch's).
template <int W>
HAVOC_INLINE typename V<W>::f silu(typename V<W>::f x) {
  using I = typename V<W>::i;
  const I neg = x < 0.0f;
  const typename V<W>::f e = exp_neg<W>(neg ? x : -x);  // exp(-|x|)
  const typename V<W>::f sig = (neg ? e : splat<W>(1.0f)) / (e + 1.0f);
  return x * sig;
}
HAVOC_INLINE float silu(float x) {
  const float e = std::exp(-std::fabs(x));
  const float sig = (x < 0.0f ? e : 1.0f) / (e + 1.0f);
  return x * sig;
}

// out[m] = as_stored(silu(gate[m])) * up[m] for M rows of Fh elements (row strides ldg, ldu, ldo).
template <int W, class T>
HAVOC_INLINE void swiglu_rows(const T* gate, int64_t ldg, const T* up, int64_t ldu, T* out, int64_t ldo, int64_t M,
                              int64_t Fh) {
  for (int64_t m = 0; m < M; ++m) {
    const T* g = gate + m * ldg;
    const T* u = up + m * ldu;
    T* o = out + m * ldo;
    int64_t i = 0;
    for (; i + W <= Fh; i += W) storev<W>(o + i, as_stored<W, T>(silu<W>(loadv<W>(g + i))) * loadv<W>(u + i));
    for (; i < Fh; ++i) store(o + i, as_stored<T>(silu(load(g + i))) * load(u + i));
  }
}

// Rotate-half RoPE of one token's heads: out[h] = x[h] * cos + rotate_half(x[h]) * sin over the first
// `rot` features (x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin), the rest passed through bit for bit; cs and
// sn hold the token's rot cosines and sines. Head h of x is at x + h * sh, of out at out + h * osh; out may
// be x (in place: each vector of both halves is read before it is written).
template <int W, class T>
HAVOC_INLINE void rope_heads(const T* x, int64_t sh, T* out, int64_t osh, int64_t heads, int64_t hd, const float* cs,
                             const float* sn, int64_t rot) {
  using F = typename V<W>::f;
  const int64_t half = rot / 2;
  for (int64_t h = 0; h < heads; ++h) {
    const T* xh = x + h * sh;
    T* oh = out + h * osh;
    int64_t j = 0;
    for (; j + W <= half; j += W) {
      const F x1 = loadv<W>(xh + j), x2 = loadv<W>(xh + half + j);
      storev<W>(oh + j, x1 * loadv<W>(cs + j) - x2 * loadv<W>(sn + j));
      storev<W>(oh + half + j, x2 * loadv<W>(cs + half + j) + x1 * loadv<W>(sn + half + j));
    }
    for (; j < half; ++j) {
      const float x1 = load(xh + j), x2 = load(xh + half + j);
      store(oh + j, x1 * cs[j] - x2 * sn[j]);
      store(oh + half + j, x2 * cs[half + j] + x1 * sn[half + j]);
    }
    if (oh != xh)
      for (int64_t d = rot; d < hd; ++d) oh[d] = xh[d];
  }
}

}  // namespace simd
}  // namespace havoc

// --- the ops (csrc/elementwise.cpp): the widest variant `isa` names ("auto", "scalar", "avx2", "avx512"),
// OpenMP threads over rows for large calls. Rows have D (or Fh) elements, a stride between rows, and
// contiguous elements; dtype is that of every buffer (the gain included). ---------------------------------

namespace havoc {

// y = rms_norm(x) * weight: M rows; y's rows ldy apart.
void rms_norm(KVDType dtype, const void* x, int64_t ldx, const void* weight, void* y, int64_t ldy, int64_t M,
              int64_t D, float eps, const std::string& isa);

// h = x + residual (rounded to dtype), y = rms_norm(h) * weight; h and y contiguous (M, D).
void add_rms_norm(KVDType dtype, const void* x, int64_t ldx, const void* residual, int64_t ldr, const void* weight,
                  void* y, void* h, int64_t M, int64_t D, float eps, const std::string& isa);

// out = silu(gate) * up; out contiguous (M, Fh).
void swiglu(KVDType dtype, const void* gate, int64_t ldg, const void* up, int64_t ldu, void* out, int64_t M,
            int64_t Fh, const std::string& isa);

// Rotate-half RoPE of x (B, T, heads, head_dim; strides sb, st, sh in elements, head_dim contiguous) over
// its first `rot` features by cos, sin (fp32, (Bc, T, rot) contiguous, Bc = B or 1 to broadcast), the rest
// passed through; out contiguous (B, T, heads, head_dim).
void apply_rope(KVDType dtype, const void* x, int64_t sb, int64_t st, int64_t sh, int64_t B, int64_t T, int64_t heads,
                int64_t head_dim, const float* cos, const float* sin, int64_t cos_batches, int64_t rot, void* out,
                const std::string& isa);

}  // namespace havoc
