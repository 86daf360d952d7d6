#include "cpu_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "build_info.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif


namespace havoc {

namespace {

using namespace simd;

// --- the product: tiles of NR weight rows x MR activation rows ----------------------------------------

struct GemmArgs {
  const float* x;
  int64_t M, ldx;
  WeightView w;
  float* y;
  int64_t ldy;
  int64_t y_col0;  // y's column 0 is weight row y_col0 (a tile buffer of linear_argmax), else 0
  bool accumulate;
  // bf16 weights only, else null: x with each 32-column block split into its even then its odd columns
  // (pair_columns), so the even and odd bf16 weights of a 64-byte load multiply contiguous x vectors.
  const float* xp = nullptr;
  int64_t ldxp = 0;
};

template <int W>
HAVOC_INLINE typename V<W>::f wload(const float* p) {
  return loadv<W>(p);
}
template <int W>
HAVOC_INLINE typename V<W>::f wload(const uint16_t* p) {
  return loadv<W>(p);
}

HAVOC_INLINE float wscalar(const float* p) { return *p; }
HAVOC_INLINE float wscalar(const uint16_t* p) { return bf16_to_f32(*p); }

// Block c (inputs 16 c .. 16 c + 15 of a 64-input block) of W int8 lanes packed as WeightView describes,
// sign-extended and converted: shift byte c to the top, arithmetic shift back down.
template <int W, int C>
HAVOC_INLINE typename V<W>::f unpack8(typename V<W>::u v) {
  const typename V<W>::i t = (typename V<W>::i)(v << (24 - 8 * C)) >> 24;
  return __builtin_convertvector(t, typename V<W>::f);
}

// One 64-input block for NR int8 rows and MR activation rows: 16 / W loads per row, 4 blocks of W each.
template <int W, int NR, int MR, int C>
HAVOC_INLINE void int8_quarter(typename V<W>::f (&acc)[NR][MR], const typename V<W>::u (&raw)[NR],
                               const typename V<W>::f (&s)[NR], const float* x, int64_t ldx, int64_t k) {
  typename V<W>::f wv[NR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) wv[r] = unpack8<W, C>(raw[r]) * s[r];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const typename V<W>::f xv = loadv<W>(x + i * ldx + k + 16 * C);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[r][i] += wv[r] * xv;
  }
}

// Software prefetch distance of the bf16 and int8 weight streams, in bytes. Their rows are short (1152 and
// 576 bytes for K = 576), so the hardware prefetchers barely ramp up before a tile moves on; fetching 4 KiB
// ahead took the SmolLM2 head (49152 x 576) from 14.4 to 17.6 GB/s in bf16 and from 6.8 to 10.5 GB/s in
// int8, and left long rows (K = 4096) within noise (interleaved runs, 2-core VM). fp32 gained nothing.
constexpr int64_t kPrefetchBytes = 4096;

// y[m + i, n + r] for r < NR, i < MR: NR x MR dot products over K, NR x MR vector accumulators in
// registers. int8 rows are scaled group by group as they are unpacked (one multiply per weight vector,
// shared by the MR rows), so the accumulation is the same as for fp32.
template <int W, class T, int NR, int MR>
HAVOC_INLINE void tile(const GemmArgs& a, int64_t n, int64_t m) {
  using F = typename V<W>::f;
  constexpr bool q8 = std::is_same<T, int8_t>::value;
  const int64_t K = a.w.cols, ld = a.w.ld();
  const T* w = static_cast<const T*>(a.w.data) + n * ld;
  const float* x = a.x + m * a.ldx;
  F acc[NR][MR];
  float tail[NR][MR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[r][i] = F{}, tail[r][i] = 0.0f;
  if constexpr (q8) {
    using U = typename V<W>::u;
    const int64_t G = a.w.group, ng = a.w.groups();
    for (int64_t g = 0, k0 = 0; g < ng; ++g, k0 += G) {
      const int64_t k1 = std::min(K, k0 + G);
      F s[NR];
      float ss[NR];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) ss[r] = a.w.scales[(n + r) * ng + g], s[r] = splat<W>(ss[r]);
      int64_t k = k0;
      for (; k + 64 <= k1; k += 64) {
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) __builtin_prefetch(w + r * ld + k + kPrefetchBytes, 0, 3);
        for (int h = 0; h < 16 / W; ++h) {  // the lanes j in [h W, h W + W) of the block
          U raw[NR];
#pragma GCC unroll 8
          for (int r = 0; r < NR; ++r) std::memcpy(&raw[r], w + r * ld + k + 4 * W * h, sizeof(U));
          const int64_t kh = k + W * h;
          int8_quarter<W, NR, MR, 0>(acc, raw, s, x, a.ldx, kh);
          int8_quarter<W, NR, MR, 1>(acc, raw, s, x, a.ldx, kh);
          int8_quarter<W, NR, MR, 2>(acc, raw, s, x, a.ldx, kh);
          int8_quarter<W, NR, MR, 3>(acc, raw, s, x, a.ldx, kh);
        }
      }
      for (; k < k1; ++k)  // the last, partial block of a row
        for (int r = 0; r < NR; ++r) {
          const float wf = static_cast<float>(w[r * ld + int8_offset(k)]) * ss[r];
          for (int i = 0; i < MR; ++i) tail[r][i] += wf * x[i * a.ldx + k];
        }
    }
  } else {
    int64_t k = 0;
    if constexpr (std::is_same<T, uint16_t>::value) {
      // A vector of W 32-bit words holds 2W bf16 weights: `<< 16` makes the even ones fp32, masking the
      // low half the odd ones — two ALU operations per 2W weights, against a widen per W (which GCC 12
      // splits for W = 16 into two 8-lane widens, an extract and an insert); x comes pre-paired to match.
      using U = typename V<W>::u;
      if (a.xp != nullptr) {
        const float* xp = a.xp + m * a.ldxp;
        for (; k + 32 <= K; k += 32) {
#pragma GCC unroll 8
          for (int r = 0; r < NR; ++r) __builtin_prefetch(w + r * ld + k + kPrefetchBytes / 2, 0, 3);
#pragma GCC unroll 4
          for (int c = 0; c < 16 / W; ++c) {  // columns k + 2Wc .. k + 2Wc + 2W - 1
            F we[NR], wo[NR];
#pragma GCC unroll 8
            for (int r = 0; r < NR; ++r) {
              U raw;
              std::memcpy(&raw, w + r * ld + k + 2 * W * c, sizeof raw);
              const U e = raw << 16, o = raw & 0xffff0000u;
              std::memcpy(&we[r], &e, sizeof e);
              std::memcpy(&wo[r], &o, sizeof o);
            }
#pragma GCC unroll 8
            for (int i = 0; i < MR; ++i) {
              const F xe = loadv<W>(xp + i * a.ldxp + k + W * c), xo = loadv<W>(xp + i * a.ldxp + k + 16 + W * c);
#pragma GCC unroll 8
              for (int r = 0; r < NR; ++r) {
                acc[r][i] += we[r] * xe;  // two FMAs: a product summed first costs a multiply and an add
                acc[r][i] += wo[r] * xo;
              }
            }
          }
        }
      }
    }
    for (; k + W <= K; k += W) {
      F wv[NR];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) wv[r] = wload<W>(w + r * ld + k);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const F xv = loadv<W>(x + i * a.ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) acc[r][i] += wv[r] * xv;
      }
    }
    for (; k < K; ++k)
      for (int r = 0; r < NR; ++r) {
        const float wf = wscalar(w + r * ld + k);
        for (int i = 0; i < MR; ++i) tail[r][i] += wf * x[i * a.ldx + k];
      }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const float v = hsum<W>(acc[r][i]) + tail[r][i];
      float* yp = a.y + (m + i) * a.ldy + (n - a.y_col0) + r;
      *yp = a.accumulate ? *yp + v : v;
    }
}

// MR activation rows at a time: 16 zmm accumulators + 4 weight vectors fit AVX-512's 32 registers; AVX2
// and the SSE baseline have 16, so they take 2.
template <int W>
constexpr int kMaxMR = W >= 16 ? 4 : 2;

template <int W, class T, int NR>
HAVOC_INLINE void tile_rows(const GemmArgs& a, int64_t n) {
  constexpr int MR = kMaxMR<W>;
  int64_t m = 0;
  for (; m + MR <= a.M; m += MR) tile<W, T, NR, MR>(a, n, m);
  switch (a.M - m) {
    case 1: tile<W, T, NR, 1>(a, n, m); break;
    case 2: if constexpr (MR > 2) tile<W, T, NR, 2>(a, n, m); break;
    case 3: if constexpr (MR > 3) tile<W, T, NR, 3>(a, n, m); break;
    default: break;
  }
}

// Weight rows [n0, n1) for every activation row: 4 rows at a time (4 weight streams in flight), then
// the remainder one by one.
template <int W, class T>
HAVOC_INLINE void gemm_rows(const GemmArgs& a, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) tile_rows<W, T, 4>(a, n);
  for (; n < n1; ++n) tile_rows<W, T, 1>(a, n);
}

// --- small elementwise kernels of the decode step ---------------------------------------------------------

// y[m] = x[m] * rsqrt(mean(x[m]^2) + eps) * g, in the reference's order (normalize, then the gain).
template <int W>
HAVOC_INLINE void rms_norm_impl(const float* x, const float* g, float* y, int64_t M, int64_t D, float eps) {
  using F = typename V<W>::f;
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * D;
    float* ym = y + m * D;
    F a0 = {}, a1 = {};
    int64_t d = 0;
    for (; d + 2 * W <= D; d += 2 * W) {
      const F u = loadv<W>(xm + d), v = loadv<W>(xm + d + W);
      a0 += u * u;
      a1 += v * v;
    }
    float ss = hsum<W>(a0 + a1);
    for (; d < D; ++d) ss += xm[d] * xm[d];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
    d = 0;
    for (; d + W <= D; d += W) storev<W>(ym + d, (loadv<W>(xm + d) * r) * loadv<W>(g + d));
    for (; d < D; ++d) ym[d] = (xm[d] * r) * g[d];
  }
}

// out[m, i] = silu(gu[m, i]) * gu[m, F + i]: silu(x) = x * sigmoid(x), sigmoid through exp(-|x|) <= 1.
template <int W>
HAVOC_INLINE void swiglu_impl(const float* gu, float* out, int64_t M, int64_t Fh) {
  using F = typename V<W>::f;
  using I = typename V<W>::i;
  for (int64_t m = 0; m < M; ++m) {
    const float* g = gu + m * 2 * Fh;
    const float* u = g + Fh;
    float* o = out + m * Fh;
    int64_t i = 0;
    for (; i + W <= Fh; i += W) {
      const F x = loadv<W>(g + i);
      const I neg = x < 0.0f;
      const F e = exp_neg<W>(neg ? x : -x);  // exp(-|x|)
      const F sig = (neg ? e : splat<W>(1.0f)) / (e + 1.0f);
      storev<W>(o + i, x * sig * loadv<W>(u + i));
    }
    for (; i < Fh; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

using RowsFn = void (*)(const GemmArgs&, int64_t, int64_t);
using NormFn = void (*)(const float*, const float*, float*, int64_t, int64_t, float);
using SwigluFn = void (*)(const float*, float*, int64_t, int64_t);

struct IsaKernels {
  RowsFn rows[3];  // by WeightDType
  NormFn rms_norm;
  SwigluFn swiglu;
};

// One set per ISA, the bodies compiled for that target with its native vector width.
#define HAVOC_ISA_KERNELS(NAME, W, ATTR)                                                                     \
  ATTR void NAME##_rows_f32(const GemmArgs& a, int64_t n0, int64_t n1) { gemm_rows<W, float>(a, n0, n1); }   \
  ATTR void NAME##_rows_bf16(const GemmArgs& a, int64_t n0, int64_t n1) { gemm_rows<W, uint16_t>(a, n0, n1); } \
  ATTR void NAME##_rows_i8(const GemmArgs& a, int64_t n0, int64_t n1) { gemm_rows<W, int8_t>(a, n0, n1); }   \
  ATTR void NAME##_rms_norm(const float* x, const float* g, float* y, int64_t M, int64_t D, float eps) {     \
    rms_norm_impl<W>(x, g, y, M, D, eps);                                                                    \
  }                                                                                                          \
  ATTR void NAME##_swiglu(const float* gu, float* out, int64_t M, int64_t Fh) { swiglu_impl<W>(gu, out, M, Fh); } \
  const IsaKernels NAME##_kernels = {{NAME##_rows_f32, NAME##_rows_bf16, NAME##_rows_i8}, NAME##_rms_norm,   \
                                     NAME##_swiglu};

HAVOC_ISA_KERNELS(scalar, 4, )
#ifdef HAVOC_X86_DISPATCH
HAVOC_ISA_KERNELS(avx2, 8, HAVOC_TARGET_AVX2)
HAVOC_ISA_KERNELS(avx512, 16, HAVOC_TARGET_AVX512)
#endif
#undef HAVOC_ISA_KERNELS

const IsaKernels& kernels_for(const std::string& isa) {
  const std::string level = simd::resolve_isa(isa);
#ifdef HAVOC_X86_DISPATCH
  if (level == "avx2") return avx2_kernels;
  if (level == "avx512") return avx512_kernels;
#endif
  return scalar_kernels;
}

void check_weight(const WeightView& w, const char* what) {
  const std::string name(what);
  if (w.data == nullptr || w.rows < 1 || w.cols < 1)
    throw std::invalid_argument(name + ": a weight needs at least one row and one column");
  if (w.dtype == WeightDType::kInt8) {
    if (w.group < 64 || w.group % 64 != 0)
      throw std::invalid_argument(name + ": int8 group size must be a positive multiple of 64, got " +
                                  std::to_string(w.group));
    if (w.scales == nullptr) throw std::invalid_argument(name + ": int8 weights need their scales");
  }
}

// Weight rows per work item: contiguous stretches long enough for the prefetchers (64 rows of 576 fp32
// inputs = 144 KB), many enough to balance 2-16 threads.
constexpr int64_t kChunk = 64;

// For bf16 weights: x's 32-column blocks with the even columns first, then the odd ones (xp[k0 + j] =
// x[k0 + 2j], xp[k0 + 16 + j] = x[k0 + 2j + 1]); columns past the last whole block are left out (the
// kernel reads those from x). One layout for every vector width W: the 2W columns of a W-lane weight
// load starting at k0 + 2Wc have their even columns at xp[k0 + Wc ...] and odd ones 16 further.
void pair_columns(GemmArgs& a, std::vector<float>& buf) {
  const int64_t K = a.w.cols, blocks = K / 32;
  if (a.w.dtype != WeightDType::kBFloat16 || blocks == 0) return;
  a.ldxp = blocks * 32;
  if (buf.size() < static_cast<size_t>(a.M * a.ldxp)) buf.resize(static_cast<size_t>(a.M * a.ldxp));
  for (int64_t m = 0; m < a.M; ++m) {
    const float* x = a.x + m * a.ldx;
    float* xp = buf.data() + m * a.ldxp;
    for (int64_t k0 = 0; k0 < a.ldxp; k0 += 32)
      for (int j = 0; j < 16; ++j) xp[k0 + j] = x[k0 + 2 * j], xp[k0 + 16 + j] = x[k0 + 2 * j + 1];
  }
  a.xp = buf.data();
}

void run_linear(const IsaKernels& k, GemmArgs a) {
  thread_local std::vector<float> paired;
  pair_columns(a, paired);
  const RowsFn rows = k.rows[static_cast<int>(a.w.dtype)];
  const int64_t N = a.w.rows;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  // NOTE: below ~64K multiply-adds (the tiny test model) one thread beats waking the team.
  const bool parallel = chunks > 1 && N * a.w.cols * a.M >= (int64_t{1} << 16);
  if (!parallel) return rows(a, 0, N);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) rows(a, c * kChunk, std::min(N, (c + 1) * kChunk));
}

void run_linear_argmax(const IsaKernels& k, GemmArgs a, int64_t* index, float* value) {
  thread_local std::vector<float> paired;
  pair_columns(a, paired);
  const RowsFn rows = k.rows[static_cast<int>(a.w.dtype)];
  const int64_t N = a.w.rows, M = a.M;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  const bool parallel = chunks > 1 && N * a.w.cols * M >= (int64_t{1} << 16);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t m = 0; m < M; ++m) index[m] = -1, value[m] = kNegInf;
#pragma omp parallel if (parallel)
  {
    std::vector<float> buf(static_cast<size_t>(M * kChunk)), best(static_cast<size_t>(M), kNegInf);
    std::vector<int64_t> at(static_cast<size_t>(M), -1);
    GemmArgs t = a;
    t.y = buf.data();
    t.ldy = kChunk;
    t.accumulate = false;
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; ++c) {  // a thread's chunks come in increasing order: '>' keeps the first
      const int64_t n0 = c * kChunk, n1 = std::min(N, n0 + kChunk);
      t.y_col0 = n0;
      rows(t, n0, n1);
      for (int64_t m = 0; m < M; ++m) {
        const float* ym = buf.data() + m * kChunk;
        for (int64_t j = 0; j < n1 - n0; ++j)
          if (ym[j] > best[m]) best[m] = ym[j], at[m] = n0 + j;
      }
    }
#pragma omp critical(havoc_linear_argmax)
    for (int64_t m = 0; m < M; ++m)
      if (at[m] >= 0 && (index[m] < 0 || best[m] > value[m] || (best[m] == value[m] && at[m] < index[m])))
        index[m] = at[m], value[m] = best[m];
  }
  for (int64_t m = 0; m < M; ++m)
    if (index[m] < 0) index[m] = 0;  // every logit NaN (or -inf): say 0 rather than an invalid id
}

// --- the decode step's helpers ---------------------------------------------------------------------------

template <class T>
HAVOC_INLINE void to_pool(T* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store(dst + i, src[i]);
}

void embed_row(const WeightView& e, int64_t id, float* out) {
  const int64_t D = e.cols;
  switch (e.dtype) {
    case WeightDType::kFloat32:
      std::memcpy(out, static_cast<const float*>(e.data) + id * D, sizeof(float) * D);
      break;
    case WeightDType::kBFloat16: {
      const uint16_t* r = static_cast<const uint16_t*>(e.data) + id * D;
      for (int64_t d = 0; d < D; ++d) out[d] = bf16_to_f32(r[d]);
      break;
    }
    case WeightDType::kInt8: {
      const int8_t* r = static_cast<const int8_t*>(e.data) + id * e.ld();
      const float* s = e.scales + id * e.groups();
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<float>(r[int8_offset(d)]) * s[d / e.group];
      break;
    }
  }
}

}  // namespace

std::vector<std::string> linear_isas() { return simd::runnable_isas(); }

void linear(const float* x, int64_t M, int64_t ldx, const WeightView& w, float* y, int64_t ldy, bool accumulate,
            const std::string& isa) {
  check_weight(w, "weight");
  if (M < 0) throw std::invalid_argument("negative number of rows");
  if (ldx < w.cols || ldy < w.rows) throw std::invalid_argument("row strides shorter than the rows");
  const IsaKernels& k = kernels_for(isa);
  if (M == 0) return;
  run_linear(k, GemmArgs{x, M, ldx, w, y, ldy, 0, accumulate});
}

void linear_argmax(const float* x, int64_t M, int64_t ldx, const WeightView& w, int64_t* index, float* value,
                   const std::string& isa) {
  check_weight(w, "weight");
  if (M < 0) throw std::invalid_argument("negative number of rows");
  if (ldx < w.cols) throw std::invalid_argument("row stride shorter than the rows");
  const IsaKernels& k = kernels_for(isa);
  if (M == 0) return;
  run_linear_argmax(k, GemmArgs{x, M, ldx, w, nullptr, 0, 0, false}, index, value);
}

// --- Decoder -------------------------------------------------------------------------------------------

Decoder::Decoder(const DecoderConfig& config, std::vector<DecoderLayer> layers, const float* final_norm,
                 WeightView embedding, WeightView head, KVDType kv_dtype, PoolShape pool, std::string isa)
    : cfg_(config),
      layers_(std::move(layers)),
      final_norm_(final_norm),
      embedding_(embedding),
      head_(head),
      kv_dtype_(kv_dtype),
      pool_(pool),
      isa_(std::move(isa)) {
  const DecoderConfig& c = cfg_;
  if (c.dim < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.head_dim < 1 || c.ffn_hidden < 1 || c.vocab_size < 1)
    throw std::invalid_argument("decoder dimensions must be positive");
  if (c.n_heads % c.n_kv_heads) throw std::invalid_argument("n_heads must be a multiple of n_kv_heads");
  if (c.rotary_dim < 2 || c.rotary_dim % 2 || c.rotary_dim > c.head_dim)
    throw std::invalid_argument("rotary_dim must be even and in [2, head_dim]");
  if (static_cast<int64_t>(layers_.size()) != c.n_layers)
    throw std::invalid_argument("got " + std::to_string(layers_.size()) + " layers for a config of " +
                                std::to_string(c.n_layers));
  if (pool_.kv_heads != c.n_kv_heads || pool_.head_dim != c.head_dim || pool_.num_blocks < 1 || pool_.block_size < 1)
    throw std::invalid_argument("the KV pools' shape does not fit the config");
  auto expect = [](const WeightView& w, int64_t rows, int64_t cols, const std::string& what) {
    check_weight(w, what.c_str());
    if (w.rows != rows || w.cols != cols)
      throw std::invalid_argument(what + " is (" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                                  "), expected (" + std::to_string(rows) + ", " + std::to_string(cols) + ")");
  };
  const int64_t qkv = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim, hd = c.n_heads * c.head_dim;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& L = layers_[i];
    const std::string p = "layer " + std::to_string(i) + " ";
    expect(L.wqkv, qkv, c.dim, p + "wqkv");
    expect(L.wo, c.dim, hd, p + "wo");
    expect(L.w13, 2 * c.ffn_hidden, c.dim, p + "w13");
    expect(L.w2, c.dim, c.ffn_hidden, p + "w2");
    if (!L.attention_norm || !L.ffn_norm || !L.k_pool || !L.v_pool)
      throw std::invalid_argument(p + "is missing a norm weight or a pool");
  }
  expect(embedding_, c.vocab_size, c.dim, "embedding");
  expect(head_, c.vocab_size, c.dim, "head");
  if (!final_norm_) throw std::invalid_argument("missing the final norm weight");
  kernels_for(isa_);  // throws for an unknown isa now rather than at the first step
  // inv_freq as havoc.kernels.reference.rope_cos_sin computes it: 1 / theta ** (2i / rotary_dim) in fp32.
  for (int64_t i = 0; i < c.rotary_dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(c.rotary_dim);
    inv_freq_.push_back(1.0f / std::pow(static_cast<float>(c.rope_theta), e));
  }
}

void Decoder::step(const int64_t* tokens, const int64_t* positions, int64_t n, const int64_t* slots,
                   const int32_t* block_tables, int64_t table_width, const int32_t* lengths, float* logits,
                   int64_t* next_tokens, const int64_t* logit_rows, int64_t n_logit_rows,
                   const int64_t* argmax_rows, int64_t n_argmax_rows) {
  std::lock_guard<std::mutex> lock(mutex_);
  const DecoderConfig& c = cfg_;
  if (n < 0 || table_width < 0) throw std::invalid_argument("negative batch size or table width");
  if (n == 0) return;
  if (logit_rows == nullptr) n_logit_rows = n;
  if (argmax_rows == nullptr) n_argmax_rows = n;
  for (const auto& [rows, k] : {std::pair{logit_rows, n_logit_rows}, std::pair{argmax_rows, n_argmax_rows}}) {
    if (k < 0) throw std::invalid_argument("negative number of output rows");
    for (int64_t j = 0; rows != nullptr && j < k; ++j)
      if (rows[j] < 0 || rows[j] >= n)
        throw std::out_of_range("output row " + std::to_string(rows[j]) + " is outside the step's [0, " +
                                std::to_string(n) + ") rows");
  }
  // Everything is checked before the first write (paged_decode_attention checks tables and lengths again
  // per layer; by then they are known good).
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      throw std::out_of_range("token id " + std::to_string(tokens[i]) + " (row " + std::to_string(i) +
                              ") is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (positions[i] < 0) throw std::out_of_range("negative position in row " + std::to_string(i));
    if (slots[i] < 0 || slots[i] >= pool_.slots())
      throw std::out_of_range("slot " + std::to_string(slots[i]) + " (row " + std::to_string(i) +
                              ") is outside the pool's [0, " + std::to_string(pool_.slots()) + ") slots");
    const int64_t L = lengths[i];
    if (L < 1 || L > table_width * pool_.block_size)
      throw std::out_of_range("length " + std::to_string(L) + " of sequence " + std::to_string(i) +
                              " does not fit its block table");
    for (int64_t j = 0, used = (L + pool_.block_size - 1) / pool_.block_size; j < used; ++j) {
      const int32_t b = block_tables[i * table_width + j];
      if (b < 0 || b >= pool_.num_blocks)
        throw std::out_of_range("block id " + std::to_string(b) + " (sequence " + std::to_string(i) +
                                ") is outside the pool's [0, " + std::to_string(pool_.num_blocks) + ") blocks");
    }
  }
  const IsaKernels& k = kernels_for(isa_);
  const int64_t D = c.dim, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim, Fh = c.ffn_hidden;
  const int64_t ldq = (H + 2 * KV) * hd, rot = c.rotary_dim, half = rot / 2;
  // Work space: h, xn (n x D); qkv (n x ldq); attn (n x H hd); gu (n x 2F); act (n x F); cos, sin (n x rot/2).
  const int64_t need = n * (2 * D + ldq + H * hd + 3 * Fh + rot);
  if (static_cast<int64_t>(work_.size()) < need) work_.resize(static_cast<size_t>(need));
  float* h = work_.data();
  float* xn = h + n * D;
  float* qkv = xn + n * D;
  float* attn = qkv + n * ldq;
  float* gu = attn + n * H * hd;
  float* act = gu + n * 2 * Fh;
  float* cosv = act + n * Fh;
  float* sinv = cosv + n * half;
  const bool bf16 = kv_dtype_ == KVDType::kBFloat16;
  if (bf16 && static_cast<int64_t>(work_bf16_.size()) < 2 * n * H * hd)
    work_bf16_.resize(static_cast<size_t>(2 * n * H * hd));
  uint16_t* qb = work_bf16_.data();
  uint16_t* ob = bf16 ? qb + n * H * hd : nullptr;

  for (int64_t i = 0; i < n; ++i) {
    embed_row(embedding_, tokens[i], h + i * D);
    const float p = static_cast<float>(positions[i]);
    for (int64_t j = 0; j < half; ++j) {
      const float ang = p * inv_freq_[j];
      cosv[i * half + j] = std::cos(ang);
      sinv[i * half + j] = std::sin(ang);
    }
  }

  const size_t es = dtype_size(kv_dtype_);
  for (const DecoderLayer& L : layers_) {
    k.rms_norm(h, L.attention_norm, xn, n, D, c.norm_eps);
    run_linear(k, GemmArgs{xn, n, D, L.wqkv, qkv, ldq, 0, false});
    // RoPE (rotate-half) on the q and k heads, in place: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin.
    for (int64_t i = 0; i < n; ++i)
      for (int64_t hh = 0; hh < H + KV; ++hh) {
        float* x1 = qkv + i * ldq + hh * hd;
        float* x2 = x1 + half;
        const float* cs = cosv + i * half;
        const float* sn = sinv + i * half;
        for (int64_t j = 0; j < half; ++j) {
          const float a = x1[j], b = x2[j];
          x1[j] = a * cs[j] - b * sn[j];
          x2[j] = b * cs[j] + a * sn[j];
        }
      }
    // This token's K and V into its slot: pool[slot] is (KV, hd), contiguous like qkv's k and v parts.
    for (int64_t i = 0; i < n; ++i) {
      const float* kr = qkv + i * ldq + H * hd;
      const float* vr = kr + KV * hd;
      const size_t at = static_cast<size_t>(slots[i] * KV * hd);
      if (bf16) {
        to_pool(static_cast<uint16_t*>(L.k_pool) + at, kr, KV * hd);
        to_pool(static_cast<uint16_t*>(L.v_pool) + at, vr, KV * hd);
      } else {
        std::memcpy(static_cast<float*>(L.k_pool) + at, kr, KV * hd * es);
        std::memcpy(static_cast<float*>(L.v_pool) + at, vr, KV * hd * es);
      }
    }
    DecodeAttentionArgs a;
    a.dtype = kv_dtype_;
    a.k_pool = L.k_pool;
    a.v_pool = L.v_pool;
    a.shape = pool_;
    a.block_tables = block_tables;
    a.table_width = table_width;
    a.lengths = lengths;
    a.n_seqs = n;
    a.n_heads = H;
    a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    a.split_tokens = std::max(kSplitTokens / pool_.block_size, int64_t{1}) * pool_.block_size;
    if (bf16) {  // the attention kernel reads q and writes out in the pools' dtype
      for (int64_t i = 0; i < n; ++i) to_pool(qb + i * H * hd, qkv + i * ldq, H * hd);
      a.q = qb;
      a.q_seq_stride = H * hd;
      a.out = ob;
    } else {
      a.q = qkv;
      a.q_seq_stride = ldq;
      a.out = attn;
    }
    a.q_head_stride = hd;
    paged_decode_attention(a, 0, isa_ == "auto" ? "auto" : isa_);
    if (bf16)
      for (int64_t i = 0; i < n * H * hd; ++i) attn[i] = bf16_to_f32(ob[i]);
    run_linear(k, GemmArgs{attn, n, H * hd, L.wo, h, D, 0, true});  // h += attn @ wo.T
    k.rms_norm(h, L.ffn_norm, xn, n, D, c.norm_eps);
    run_linear(k, GemmArgs{xn, n, D, L.w13, gu, 2 * Fh, 0, false});
    k.swiglu(gu, act, n, Fh);
    run_linear(k, GemmArgs{act, n, Fh, L.w2, h, D, 0, true});  // h += act @ w2.T
  }
  k.rms_norm(h, final_norm_, xn, n, D, c.norm_eps);
  // The LM head reads only the rows asked for, gathered into one block (a prompt chunk wants its last).
  auto gather = [&](const int64_t* rows, int64_t k) -> const float* {
    if (rows == nullptr) return xn;
    if (static_cast<int64_t>(head_rows_.size()) < k * D) head_rows_.resize(static_cast<size_t>(k * D));
    for (int64_t j = 0; j < k; ++j) std::memcpy(head_rows_.data() + j * D, xn + rows[j] * D, sizeof(float) * D);
    return head_rows_.data();
  };
  if (logits && n_logit_rows > 0)
    run_linear(k, GemmArgs{gather(logit_rows, n_logit_rows), n_logit_rows, D, head_, logits, c.vocab_size, 0, false});
  if (next_tokens && n_argmax_rows > 0) {
    const bool same = logits && n_logit_rows == n_argmax_rows &&
                      (logit_rows == argmax_rows ||
                       (logit_rows && argmax_rows && std::equal(logit_rows, logit_rows + n_logit_rows, argmax_rows)));
    if (same) {  // the logits exist already: scan them instead of a second pass over the head
      for (int64_t i = 0; i < n_argmax_rows; ++i) {
        const float* r = logits + i * c.vocab_size;
        int64_t best = 0;
        for (int64_t j = 1; j < c.vocab_size; ++j)
          if (r[j] > r[best] || (r[best] != r[best] && r[j] == r[j])) best = j;
        next_tokens[i] = best;
      }
    } else {
      std::vector<float> value(static_cast<size_t>(n_argmax_rows));
      run_linear_argmax(k, GemmArgs{gather(argmax_rows, n_argmax_rows), n_argmax_rows, D, head_, nullptr, 0, 0, false},
                        next_tokens, value.data());
    }
  }
}

}  // namespace havoc
