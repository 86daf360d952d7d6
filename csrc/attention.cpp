#include "attention.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_decode.h"  // linear_variant_missing
#include "simd.h"

namespace havoc {

namespace {

using namespace simd;

// Keys per block: the block's K and V rows (fp32, 16 KB each at head_dim 64) stay in L1 while every query
// row of the unit passes over them.
constexpr int64_t kKeys = 64;
constexpr int kKeyTile = 4;  // keys per scores tile

// Query tokens per unit for vectors of W lanes and G query heads per KV head: a multiple of W (each vector
// of scores holds W tokens of one head) giving the unit at least 4 vectors of rows when G < 4, so the
// scores tile multiplies each key by several vectors (SmolLM2, G = 3, AVX-512: 16 tokens, 48 rows).
int64_t unit_tokens(int W, int64_t G) { return W * std::max<int64_t>(1, 4 / G); }

// Per-thread work space of one unit of R = G * TQ query rows, row r = g * TQ + t (head g of the group,
// token t of the block); Dp = head_dim rounded up to the vector width.
struct Work {
  std::vector<float> mem;
  std::vector<int32_t> lim;  // R: the last key row r may see (-1: none, a padding row)
  float* qt;     // head_dim x R  the queries, scaled, transposed (a query per lane)
  float* st;     // kKeys x R     scores of the block, keys x queries, then their exp
  float* o;      // R x Dp        unnormalized outputs
  float* kb;     // kKeys x head_dim   the block's K rows in fp32 (rows past the block zero)
  float* vb;     // kKeys x Dp         its V rows in fp32 (columns past head_dim zero)
  float* m;      // R  running max score
  float* l;      // R  running sum of exp(score - m)
  float* alpha;  // R  this block's rescale of the row's earlier state
  Work(int64_t R, int64_t D, int64_t Dp)
      : mem(static_cast<size_t>(D * R + kKeys * R + R * Dp + kKeys * D + kKeys * Dp + 3 * R + kKeys / 2 * R)),
        lim(static_cast<size_t>(R)) {
    float* p = mem.data();
    qt = p, p += D * R;
    st = p, p += kKeys * R;
    o = p, p += R * Dp;
    kb = p, p += kKeys * D;
    vb = p, p += kKeys * Dp;
    m = p, p += R;
    l = p, p += R;
    alpha = p, p += R;
    p2 = reinterpret_cast<uint32_t*>(p);
  }
  // The vdpbf16ps kernel's views of the same space: qt holds Q^T as (head_dim / 2) x R bf16 pairs, vb the
  // block's V as (kKeys / 2) x Dp pairs of rows (2i, 2i + 1), p2 the probabilities as (kKeys / 2) x R pairs.
  uint32_t* p2;
  uint32_t* qt2() { return reinterpret_cast<uint32_t*>(qt); }
  uint32_t* vb2() { return reinterpret_cast<uint32_t*>(vb); }
};

// The multiply-add of a kernel. Fma: fp32 lanes, one feature (scores) or key (P V) a step, a key element
// or probability broadcast as a float. DotMul (below): bf16 pairs, two a step, broadcast as a 32-bit word.
// Elem: an element of Q^T, of the block's V and of P as the tiles read them; Key: a K row's element.
template <int W>
struct FmaMul {
  static constexpr int kWidth = W;
  using Elem = float;
  using Key = float;
  using Vec = typename V<W>::f;
  HAVOC_INLINE static Vec load(const float* p) { return loadv<W>(p); }
  HAVOC_INLINE static Vec bcast(float x) { return splat<W>(x); }
  HAVOC_INLINE static float key(const float* row, int64_t step) { return row[step]; }
  HAVOC_INLINE static typename V<W>::f madd(typename V<W>::f acc, Vec a, Vec b) { return acc + a * b; }
};

// st[j, c W ..] = sum over steps p of key(krow[j], p) qt[p, c W ..] for keys j .. j + kKeyTile and RC
// vectors of queries from vector c0: kKeyTile x RC accumulators, one key element broadcast against RC query
// vectors per step.
template <class Mul, int RC>
HAVOC_INLINE void scores_tile(const typename Mul::Elem* qt, int64_t R, const typename Mul::Key* const* krow,
                              int64_t steps, int64_t j, int64_t c0, float* st) {
  constexpr int W = Mul::kWidth;
  using F = typename V<W>::f;
  F acc[kKeyTile][RC];
  for (int jj = 0; jj < kKeyTile; ++jj)
    for (int c = 0; c < RC; ++c) acc[jj][c] = F{};
  for (int64_t p = 0; p < steps; ++p) {
    typename Mul::Vec qv[RC];
    for (int c = 0; c < RC; ++c) qv[c] = Mul::load(qt + p * R + (c0 + c) * W);
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const typename Mul::Vec kv = Mul::bcast(Mul::key(krow[j + jj], p));
      for (int c = 0; c < RC; ++c) acc[jj][c] = Mul::madd(acc[jj][c], kv, qv[c]);
    }
  }
  for (int jj = 0; jj < kKeyTile; ++jj)
    for (int c = 0; c < RC; ++c) storev<W>(st + (j + jj) * R + (c0 + c) * W, acc[jj][c]);
}

template <int W>
constexpr int kMaxRC = W >= 16 ? 4 : 2;  // 16 (or 8) accumulators + RC query vectors + a broadcast

// The scores of keys [0, nj4) (a multiple of kKeyTile) against all R query rows.
template <class Mul>
HAVOC_INLINE void scores(const typename Mul::Elem* qt, int64_t R, const typename Mul::Key* const* krow,
                         int64_t steps, int64_t nj4, float* st) {
  constexpr int W = Mul::kWidth, kRC = kMaxRC<W>;
  const int64_t nc = R / W;
  for (int64_t c0 = 0; c0 < nc; c0 += kRC) {
    const int64_t rc = std::min<int64_t>(kRC, nc - c0);
    for (int64_t j = 0; j < nj4; j += kKeyTile) {
      switch (rc) {
        case 1: scores_tile<Mul, 1>(qt, R, krow, steps, j, c0, st); break;
        case 2: scores_tile<Mul, 2>(qt, R, krow, steps, j, c0, st); break;
        case 3: if constexpr (kRC >= 3) scores_tile<Mul, 3>(qt, R, krow, steps, j, c0, st); break;
        case 4: if constexpr (kRC >= 4) scores_tile<Mul, 4>(qt, R, krow, steps, j, c0, st); break;
        default: break;
      }
    }
  }
}

// o[r + i, d0 ..] = alpha[r + i] o[r + i, d0 ..] + sum over steps s of p[s, r + i] v[s, d0 ..] for MR rows
// and DC vectors of features: the probabilities broadcast, V rows loaded once per MR rows.
template <class Mul, int MR, int DC>
HAVOC_INLINE void pv_tile(float* o, int64_t Dp, const typename Mul::Elem* p, int64_t R,
                          const typename Mul::Elem* v, int64_t steps, const float* alpha, int64_t r, int64_t d0) {
  constexpr int W = Mul::kWidth;
  using F = typename V<W>::f;
  F acc[MR][DC];
  for (int i = 0; i < MR; ++i) {
    const F al = splat<W>(alpha[r + i]);
    for (int c = 0; c < DC; ++c) acc[i][c] = loadv<W>(o + (r + i) * Dp + d0 + c * W) * al;
  }
  for (int64_t j = 0; j < steps; ++j) {
    typename Mul::Vec vv[DC];
    for (int c = 0; c < DC; ++c) vv[c] = Mul::load(v + j * Dp + d0 + c * W);
    for (int i = 0; i < MR; ++i) {
      const typename Mul::Vec pv = Mul::bcast(p[j * R + r + i]);
      for (int c = 0; c < DC; ++c) acc[i][c] = Mul::madd(acc[i][c], pv, vv[c]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int c = 0; c < DC; ++c) storev<W>(o + (r + i) * Dp + d0 + c * W, acc[i][c]);
}

template <int W>
constexpr int kPvRows = W >= 16 ? 4 : 2;

template <class Mul>
HAVOC_INLINE void pv_rows(float* o, int64_t Dp, const typename Mul::Elem* p, int64_t R,
                          const typename Mul::Elem* v, int64_t steps, const float* alpha) {
  constexpr int W = Mul::kWidth, MR = kPvRows<W>;  // R is a multiple of W, so of MR
  const int64_t nd = Dp / W;
  for (int64_t r = 0; r < R; r += MR)
    for (int64_t c0 = 0; c0 < nd; c0 += 4) {
      switch (std::min<int64_t>(4, nd - c0)) {
        case 1: pv_tile<Mul, MR, 1>(o, Dp, p, R, v, steps, alpha, r, c0 * W); break;
        case 2: pv_tile<Mul, MR, 2>(o, Dp, p, R, v, steps, alpha, r, c0 * W); break;
        case 3: pv_tile<Mul, MR, 3>(o, Dp, p, R, v, steps, alpha, r, c0 * W); break;
        default: pv_tile<Mul, MR, 4>(o, Dp, p, R, v, steps, alpha, r, c0 * W); break;
      }
    }
}

// dst[0 .. D) = src[0 .. D) in fp32.
template <int W, class T>
HAVOC_INLINE void row_f32(const T* src, int64_t D, float* dst) {
  int64_t d = 0;
  for (; d + W <= D; d += W) storev<W>(dst + d, loadv<W>(src + d));
  for (; d < D; ++d) dst[d] = load(src + d);
}

#ifdef HAVOC_DOT_VARIANTS
// --- bf16 x bf16 by AVX512-BF16's vdpbf16ps (bf16 storage, even head_dim) --------------------------------
// The same unit with pairs: a dword holds two bf16 and vdpbf16ps adds both products of each lane's pair to
// its fp32 sum, 32 multiply-adds an instruction against 16 FMAs. Scores pair consecutive features (Q^T in
// pairs, K's pair broadcast straight from its row, no fp32 copy); P V pairs consecutive keys (the
// probabilities rounded to bf16, as torch's bf16 flash attention does, V rows 2i and 2i + 1 interleaved).

typedef short v32hi __attribute__((vector_size(64)));
typedef int v16si __attribute__((vector_size(64)));

HAVOC_INLINE v32hi splat_pair(uint32_t w) {
  const v16si v = v16si{} + static_cast<int32_t>(w);
  v32hi h;
  std::memcpy(&h, &v, sizeof h);
  return h;
}

HAVOC_INLINE uint32_t pair_at(const uint16_t* p) {
  uint32_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

// bf16 pairs: Elem a 32-bit word of two bf16, a K row's element p the pair of features 2p, 2p + 1.
struct DotMul {
  static constexpr int kWidth = 16;
  using Elem = uint32_t;
  using Key = uint16_t;
  using Vec = v32hi;
  HAVOC_INLINE static Vec load(const uint32_t* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  HAVOC_INLINE static Vec bcast(uint32_t w) { return splat_pair(w); }
  HAVOC_INLINE static uint32_t key(const uint16_t* row, int64_t step) { return pair_at(row + 2 * step); }
  HAVOC_INLINE static V<16>::f madd(V<16>::f acc, Vec a, Vec b) { return __builtin_ia32_dpbf16ps_v16sf(acc, a, b); }
};

// out[d] = a[d] | b[d] << 16 for d < D (b null: zeros), zeros to Dp: the bf16 pairs of two rows.
HAVOC_INLINE void pair_rows(const uint16_t* a, const uint16_t* b, int64_t D, int64_t Dp, uint32_t* out) {
  using U = V<16>::u;
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    V<16>::h ha, hb = {};
    std::memcpy(&ha, a + d, sizeof ha);
    if (b != nullptr) std::memcpy(&hb, b + d, sizeof hb);
    const U w = __builtin_convertvector(ha, U) | (__builtin_convertvector(hb, U) << 16);
    std::memcpy(out + d, &w, sizeof w);
  }
  for (; d < D; ++d) out[d] = a[d] | (b != nullptr ? static_cast<uint32_t>(b[d]) << 16 : 0u);
  for (; d < Dp; ++d) out[d] = 0;
}
#endif  // HAVOC_DOT_VARIANTS

template <int W, bool kDot>
struct MulFor {
  using type = FmaMul<W>;
};
#ifdef HAVOC_DOT_VARIANTS
template <>
struct MulFor<16, true> {
  using type = DotMul;
};
#endif

// One unit: queries [t0, t0 + TQ) of the G heads of KV head kvh of sequence b, over every key they see.
// kDot: the vdpbf16ps kernel (W = 16, bf16 storage, even head_dim), else fp32 FMAs.
template <int W, class T, bool kDot>
HAVOC_INLINE void attention_unit(const AttentionArgs& a, int64_t b, int64_t kvh, int64_t t0, Work& s) {
  using F = typename V<W>::f;
  using I = typename V<W>::i;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t D = a.head_dim, Dp = (D + W - 1) / W * W, G = a.n_heads / a.kv_heads;
  const int64_t TQ = unit_tokens(W, G), R = G * TQ, nq = std::min(TQ, a.q_len - t0);

  // Q^T (fp32 and scaled, or bf16 pairs with the scale left to the scores), each row's key limit, the state.
  const T* qb = static_cast<const T*>(a.q.data) + b * a.q.batch_stride;
  for (int64_t g = 0; g < G; ++g) {
    const T* qh = qb + (kvh * G + g) * a.q.head_stride;
    for (int64_t t = 0; t < TQ; ++t) {
      const int64_t r = g * TQ + t;
      const T* qr = t < nq ? qh + (t0 + t) * a.q.row_stride : nullptr;
      if constexpr (kDot) {
#ifdef HAVOC_DOT_VARIANTS
        for (int64_t p = 0; p < D / 2; ++p) s.qt2()[p * R + r] = qr != nullptr ? pair_at(qr + 2 * p) : 0u;
#endif
      } else {
        for (int64_t d = 0; d < D; ++d) s.qt[d * R + r] = qr != nullptr ? load(qr + d) * a.scale : 0.0f;
      }
      const int64_t last = a.causal ? a.q_offset + t0 + t : a.kv_len - 1;
      s.lim[r] = qr != nullptr ? static_cast<int32_t>(std::clamp<int64_t>(last, -1, a.kv_len - 1)) : -1;
      s.m[r] = kNegInf;
      s.l[r] = 0.0f;
    }
  }
  std::fill(s.o, s.o + R * Dp, 0.0f);
  const float score_scale = kDot ? a.scale : 1.0f;

  // Keys [0, end): the last query of the block sees no further.
  const int64_t end = a.causal ? std::clamp<int64_t>(a.q_offset + t0 + nq, 0, a.kv_len) : a.kv_len;
  const bool paged = a.block_table != nullptr;
  const T* kh = static_cast<const T*>(a.k.data) + (paged ? 0 : b * a.k.batch_stride) + kvh * a.k.head_stride;
  const T* vh = static_cast<const T*>(a.v.data) + (paged ? 0 : b * a.v.batch_stride) + kvh * a.v.head_stride;
  const int32_t* table = paged ? a.block_table + b * a.table_stride : nullptr;
  const uint8_t* km = a.key_mask ? a.key_mask + b * a.key_mask_stride : nullptr;
  const auto key_row = [&](const T* base, int64_t stride, int64_t key) {
    return base + (paged ? table[key / a.block_size] * a.block_size + key % a.block_size : key) * stride;
  };
  // What the tiles read: Q^T, each key's row, the probabilities and V, as fp32 or as bf16 pairs.
  using Mul = typename MulFor<W, kDot>::type;
  using Elem = typename Mul::Elem;
  const Elem* qt = reinterpret_cast<const Elem*>(s.qt);
  const Elem* probs = kDot ? reinterpret_cast<const Elem*>(s.p2) : reinterpret_cast<const Elem*>(s.st);
  const Elem* vrows = reinterpret_cast<const Elem*>(s.vb);
  const typename Mul::Key* krow[kKeys];
  for (int64_t j0 = 0; j0 < end; j0 += kKeys) {
    const int64_t nj = std::min(kKeys, end - j0), nj4 = (nj + kKeyTile - 1) / kKeyTile * kKeyTile;
    if constexpr (kDot) {
#ifdef HAVOC_DOT_VARIANTS
      // K: each key's row as it is (rows past the block: a zero row); V: rows paired.
      std::fill(s.kb, s.kb + D, 0.0f);
      for (int64_t j = 0; j < nj4; ++j)
        krow[j] = j < nj ? key_row(kh, a.k.row_stride, j0 + j) : reinterpret_cast<const T*>(s.kb);
      for (int64_t j = 0; j < nj; j += 2)
        pair_rows(key_row(vh, a.v.row_stride, j0 + j), j + 1 < nj ? key_row(vh, a.v.row_stride, j0 + j + 1) : nullptr,
                  D, Dp, s.vb2() + (j / 2) * Dp);
#endif
    } else {
      // K and V rows in fp32 (K rows past the block zero, V columns past head_dim zero).
      for (int64_t j = 0; j < nj; ++j) {
        row_f32<W>(key_row(kh, a.k.row_stride, j0 + j), D, s.kb + j * D);
        row_f32<W>(key_row(vh, a.v.row_stride, j0 + j), D, s.vb + j * Dp);
        std::fill(s.vb + j * Dp + D, s.vb + (j + 1) * Dp, 0.0f);
      }
      std::fill(s.kb + nj * D, s.kb + nj4 * D, 0.0f);
      for (int64_t j = 0; j < nj4; ++j) krow[j] = s.kb + j * D;
    }
    scores<Mul>(qt, R, krow, kDot ? D / 2 : D, nj4, s.st);

    // Online softmax, W query rows at a time: keys a row may not see score -inf.
    for (int64_t c = 0; c < R / W; ++c) {
      I lim;
      std::memcpy(&lim, s.lim.data() + c * W, sizeof lim);
      const F m_old = loadv<W>(s.m + c * W);
      F bmax = splat<W>(kNegInf);
      for (int64_t j = 0; j < nj; ++j) {
        float* sp = s.st + j * R + c * W;
        F x = loadv<W>(sp) * score_scale;
        x = (I{} + static_cast<int32_t>(j0 + j)) <= lim ? x : splat<W>(kNegInf);
        if (km != nullptr && km[j0 + j] == 0) x = splat<W>(kNegInf);
        storev<W>(sp, x);
        bmax = bmax > x ? bmax : x;
      }
      const F m_new = bmax > m_old ? bmax : m_old;
      const F m_safe = m_new == kNegInf ? splat<W>(0.0f) : m_new;  // no key yet: every exp is 0
      const F alpha = exp_neg<W>(m_old - m_safe);
      F sum = {};
      for (int64_t j = 0; j < nj; ++j) {
        float* sp = s.st + j * R + c * W;
        const F p = exp_neg<W>(loadv<W>(sp) - m_safe);
        storev<W>(sp, p);
        sum += p;
      }
      storev<W>(s.l + c * W, loadv<W>(s.l + c * W) * alpha + sum);
      storev<W>(s.m + c * W, m_new);
      storev<W>(s.alpha + c * W, alpha);
      if constexpr (kDot) {  // the probabilities as bf16 pairs of consecutive keys
        using U = typename V<W>::u;
        for (int64_t j = 0; j < nj; j += 2) {
          const U lo = bf16_bits<W>(loadv<W>(s.st + j * R + c * W));
          const U hi = j + 1 < nj ? bf16_bits<W>(loadv<W>(s.st + (j + 1) * R + c * W)) : U{};
          const U w = lo | (hi << 16);
          std::memcpy(s.p2 + (j / 2) * R + c * W, &w, sizeof w);
        }
      }
    }

    pv_rows<Mul>(s.o, Dp, probs, R, vrows, kDot ? (nj + 1) / 2 : nj, s.alpha);
  }

  T* ob = static_cast<T*>(const_cast<void*>(a.out.data)) + b * a.out.batch_stride;  // out is written
  for (int64_t g = 0; g < G; ++g)
    for (int64_t t = 0; t < nq; ++t) {
      const int64_t r = g * TQ + t;
      const float inv = s.l[r] > 0.0f ? 1.0f / s.l[r] : 0.0f;  // l >= 1 once a key was seen
      T* out = ob + (kvh * G + g) * a.out.head_stride + (t0 + t) * a.out.row_stride;
      for (int64_t d = 0; d < D; ++d) store(out + d, s.o[r * Dp + d] * inv);
    }
}

using UnitFn = void (*)(const AttentionArgs&, int64_t, int64_t, int64_t, Work&);

struct Kernel {
  UnitFn unit;
  int width;
};

#define HAVOC_ATTENTION_UNITS(NAME, W, ATTR)                                                     \
  ATTR void NAME##_f32(const AttentionArgs& a, int64_t b, int64_t kvh, int64_t t0, Work& s) {   \
    attention_unit<W, float, false>(a, b, kvh, t0, s);                                           \
  }                                                                                              \
  ATTR void NAME##_bf16(const AttentionArgs& a, int64_t b, int64_t kvh, int64_t t0, Work& s) {  \
    attention_unit<W, uint16_t, false>(a, b, kvh, t0, s);                                        \
  }

HAVOC_ATTENTION_UNITS(attn_scalar, 4, )
#ifdef HAVOC_X86_DISPATCH
HAVOC_ATTENTION_UNITS(attn_avx2, 8, HAVOC_TARGET_AVX2)
HAVOC_ATTENTION_UNITS(attn_avx512, 16, HAVOC_TARGET_AVX512)
#endif
#undef HAVOC_ATTENTION_UNITS

#ifdef HAVOC_DOT_VARIANTS
HAVOC_TARGET_AVX512_BF16 void attn_avx512_bf16_dot(const AttentionArgs& a, int64_t b, int64_t kvh, int64_t t0,
                                                   Work& s) {
  attention_unit<16, uint16_t, true>(a, b, kvh, t0, s);
}
#endif

// Why this build and CPU cannot run the vdpbf16ps kernel ("" when they can): the decode kernels' variant
// of the same name is compiled for the same target (HAVOC_TARGET_AVX512_BF16) and needs the same CPU.
std::string dot_missing() { return linear_variant_missing("avx512_bf16"); }

// isa "avx512_bf16" (and "auto" where the CPU has it and vdpbf16ps pays: bf16_dot_pays): vdpbf16ps for
// bf16 with an even head_dim, the avx512 FMA kernel otherwise.
Kernel pick(const std::string& isa, KVDType dtype, int64_t head_dim) {
  const bool bf16 = dtype == KVDType::kBFloat16;
  if (isa == "avx512_bf16" || isa == "auto") {
    const std::string why = dot_missing();
    if (isa == "avx512_bf16" && !why.empty())
      throw std::invalid_argument("kernel variant 'avx512_bf16' is not available: " + why);
#ifdef HAVOC_DOT_VARIANTS
    if (why.empty() && bf16 && head_dim % 2 == 0 && (isa == "avx512_bf16" || bf16_dot_pays()))
      return {attn_avx512_bf16_dot, 16};
#endif
  }
  const std::string level = resolve_isa(isa == "avx512_bf16" ? "avx512" : isa);
#ifdef HAVOC_X86_DISPATCH
  if (level == "avx2") return {bf16 ? attn_avx2_bf16 : attn_avx2_f32, 8};
  if (level == "avx512") return {bf16 ? attn_avx512_bf16 : attn_avx512_f32, 16};
#endif
  return {bf16 ? attn_scalar_bf16 : attn_scalar_f32, 4};
}

void validate(const AttentionArgs& a) {
  if (a.batch < 0 || a.q_len < 0 || a.kv_len < 0) throw std::invalid_argument("negative attention dimensions");
  if (a.head_dim < 1) throw std::invalid_argument("head_dim must be positive");
  if (a.kv_heads < 1 || a.n_heads < 1 || a.n_heads % a.kv_heads != 0)
    throw std::invalid_argument("n_heads (" + std::to_string(a.n_heads) + ") must be a positive multiple of "
                                "kv_heads (" + std::to_string(a.kv_heads) + ")");
  if (a.block_table != nullptr && a.block_size < 1) throw std::invalid_argument("block_size must be positive");
  if (a.kv_len > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("kv_len " + std::to_string(a.kv_len) + " exceeds 2^31 - 1 keys");
}

}  // namespace

std::vector<std::string> attention_isas() {
  std::vector<std::string> out = runnable_isas();
  if (dot_missing().empty()) out.push_back("avx512_bf16");
  return out;
}

void attention(const AttentionArgs& a, const std::string& isa) {
  validate(a);
  const Kernel k = pick(isa, a.dtype, a.head_dim);
  if (a.batch == 0 || a.q_len == 0) return;
  const int64_t G = a.n_heads / a.kv_heads, TQ = unit_tokens(k.width, G), R = G * TQ;
  const int64_t D = a.head_dim, Dp = (D + k.width - 1) / k.width * k.width;
  const int64_t blocks = (a.q_len + TQ - 1) / TQ, heads = a.batch * a.kv_heads, n_units = blocks * heads;
  // NOTE: below ~64K multiply-adds (the tiny test model) one thread beats waking the team.
  const bool parallel = n_units > 1 && a.q_len * std::max<int64_t>(a.kv_len, 1) * a.n_heads * D >= (int64_t{1} << 16);
#pragma omp parallel if (parallel)
  {
    Work s(R, D, Dp);
    // Latest query blocks first: with a causal mask they see the most keys, and the dynamic schedule
    // evens out the short ones at the end.
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < n_units; ++u) {
      const int64_t blk = blocks - 1 - u / heads, bh = u % heads;
      k.unit(a, bh / a.kv_heads, bh % a.kv_heads, blk * TQ, s);
    }
  }
}

}  // namespace havoc
