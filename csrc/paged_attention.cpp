#include "paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "build_info.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simd.h"

namespace havoc {

size_t dtype_size(KVDType dtype) { return dtype == KVDType::kFloat32 ? 4 : 2; }

namespace {

using namespace simd;

// --- checks --------------------------------------------------------------------------------------------

void check_shape(const PoolShape& s) {
  if (s.num_blocks < 1 || s.block_size < 1 || s.kv_heads < 1 || s.head_dim < 1)
    throw std::invalid_argument("pool dimensions must all be positive");
}

std::string slot_error(int64_t i, int64_t slot, int64_t n_slots) {
  return "slot " + std::to_string(slot) + " (row " + std::to_string(i) + ") is outside the pool's [0, " +
         std::to_string(n_slots) + ") slots";
}

// q . k over D features with fp32 accumulation (k widened from bf16 in registers). Two accumulator
// chains; the dots of a token's heads are independent and overlap out of order.
template <int W, class T>
HAVOC_INLINE float dot(const float* q, const T* k, int64_t D) {
  typename V<W>::f a0 = {}, a1 = {};
  int64_t d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    a0 += loadv<W>(q + d) * loadv<W>(k + d);
    a1 += loadv<W>(q + d + W) * loadv<W>(k + d + W);
  }
  if (d + W <= D) a0 += loadv<W>(q + d) * loadv<W>(k + d), d += W;
  float sum = hsum<W>(a0 + a1);
  for (; d < D; ++d) sum += q[d] * load(k + d);
  return sum;
}

// acc[0:W*C] += sum_i p[i] * v[i * stride + 0:W*C]: C accumulators stay in registers across the n tokens
// (one load and store per tile, not per token) as C independent FMA chains.
template <int W, int C, class T>
HAVOC_INLINE void pv_chunk(float* acc, const float* p, const T* v, int64_t stride, int64_t n) {
  typename V<W>::f a[C];
  for (int c = 0; c < C; ++c) a[c] = loadv<W>(acc + c * W);
  for (int64_t i = 0; i < n; ++i) {
    const typename V<W>::f pi = splat<W>(p[i]);
    const T* vi = v + i * stride;
    for (int c = 0; c < C; ++c) a[c] += pi * loadv<W>(vi + c * W);
  }
  for (int c = 0; c < C; ++c) storev<W>(acc + c * W, a[c]);
}

// The same over all D features of a head: 4 chains at a time, then 1, then scalars.
template <int W, class T>
HAVOC_INLINE void pv(float* acc, const float* p, const T* v, int64_t stride, int64_t n, int64_t D) {
  int64_t d = 0;
  for (; d + 4 * W <= D; d += 4 * W) pv_chunk<W, 4>(acc + d, p, v + d, stride, n);
  for (; d + W <= D; d += W) pv_chunk<W, 1>(acc + d, p, v + d, stride, n);
  for (; d < D; ++d) {
    float x = acc[d];
    for (int64_t i = 0; i < n; ++i) x += p[i] * load(v + i * stride + d);
    acc[d] = x;
  }
}

// The G query heads of one KV head at once (G a template constant): the K or V slice of a token is loaded
// (and widened from bf16) once for the G heads instead of once per head. Each head's sums are dot()'s and
// pv()'s, in their order, so the results are the same bits. Needs D a multiple of 2W and of C W.

// out[g * out_stride] = dot(q + g * D, k, D) for g < G.
template <int W, int G, class T>
HAVOC_INLINE void dots_group(const float* q, const T* k, int64_t D, float* out, int64_t out_stride) {
  using F = typename V<W>::f;
  F a0[G], a1[G];
  for (int g = 0; g < G; ++g) a0[g] = F{}, a1[g] = F{};
  for (int64_t d = 0; d < D; d += 2 * W) {
    const F k0 = loadv<W>(k + d), k1 = loadv<W>(k + d + W);
    for (int g = 0; g < G; ++g) {
      a0[g] += loadv<W>(q + g * D + d) * k0;
      a1[g] += loadv<W>(q + g * D + d + W) * k1;
    }
  }
  for (int g = 0; g < G; ++g) out[g * out_stride] = hsum<W>(a0[g] + a1[g]);
}

// pv(acc + g * D, p + g * p_stride, v, stride, n, D) for g < G, C vectors of features at a time.
template <int W, int G, int C, class T>
HAVOC_INLINE void pv_group(float* acc, const float* p, int64_t p_stride, const T* v, int64_t stride, int64_t n,
                           int64_t D) {
  using F = typename V<W>::f;
  for (int64_t d = 0; d < D; d += C * W) {
    F a[G][C];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < C; ++c) a[g][c] = loadv<W>(acc + g * D + d + c * W);
    for (int64_t i = 0; i < n; ++i) {
      F vv[C];
      for (int c = 0; c < C; ++c) vv[c] = loadv<W>(v + i * stride + d + c * W);
      for (int g = 0; g < G; ++g) {
        const F pi = splat<W>(p[g * p_stride + i]);
        for (int c = 0; c < C; ++c) a[g][c] += pi * vv[c];
      }
    }
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < C; ++c) storev<W>(acc + g * D + d + c * W, a[g][c]);
  }
}

// Feature vectors per pass of pv_group: G x C accumulators, C values and a broadcast in the registers
// (AVX-512's 32 hold 4 x 4 + 4 + 1; AVX2's 16 take C = 2).
template <int W>
constexpr int kPvGroupC = W >= 16 ? 4 : 2;

// --- decode attention ----------------------------------------------------------------------------------

// Tokens scored per pass (a multiple of every W): the n_heads x kTile scores stay in L1 between the QK and
// PV halves of a pass. A pass never crosses a block, so with block_size 16 it is 16 tokens.
constexpr int64_t kTile = 32;

// Per-thread work space, in floats.
struct Scratch {
  std::vector<float> mem;
  float* qf;   // H * D        the queries, scaled
  float* acc;  // H * D        unnormalized outputs
  float* m;    // H            running max score
  float* l;    // H            running sum of exp(score - m)
  float* sc;   // H * kTile    scores, then probabilities, of the current tile
  Scratch(int64_t H, int64_t D) : mem(static_cast<size_t>(2 * H * D + 2 * H + H * kTile)) {
    float* p = mem.data();
    qf = p, p += H * D;
    acc = p, p += H * D;
    m = p, p += H;
    l = p, p += H;
    sc = p;
  }
  // A split's partial state for merge_parts: its H maxima, H sums and H x D accumulators, in that order.
  void save(float* p, int64_t H, int64_t D) const {
    std::copy(m, m + H, p);
    std::copy(l, l + H, p + H);
    std::copy(acc, acc + H * D, p + 2 * H);
  }
};

// Online softmax over tokens [t0, t1) of sequence b for all its heads, leaving the unnormalized state
// (m, l, acc) in `s` (FlashAttention's recurrence: one pass over K and V). The scores loop runs
// token-major: a token's K row — every KV head, kv_heads * head_dim contiguous elements — is consumed
// whole, each KV head's slice by its G query heads, so a block is read front to back.
// NOTE: (sequence, KV head) work units instead read head_dim elements every kv_heads * head_dim: for
// 32/8 heads at D=128, 512 B per 4 KB page, which the hardware prefetchers do not follow across pages.
// always_inline: it is compiled into each ISA's wrapper below.
// GT: the query heads per KV head as a constant (dots_group, pv_group), or 0 for any (head by head).
template <int W, class T, int GT>
HAVOC_INLINE void decode_unit_g(const DecodeAttentionArgs& a, int64_t b, int64_t t0, int64_t t1, Scratch& s) {
  using F = typename V<W>::f;
  const int64_t D = a.shape.head_dim, KV = a.shape.kv_heads, BS = a.shape.block_size;
  const int64_t H = a.n_heads, G = H / KV;
  const int64_t row = KV * D;  // elements per token in a pool
  const T* q = static_cast<const T*>(a.q) + b * a.q_seq_stride;
  const T* kp = static_cast<const T*>(a.k_pool);
  const T* vp = static_cast<const T*>(a.v_pool);
  const int32_t* table = a.block_tables + b * a.table_width;
  float* const qf = s.qf;
  float* const acc = s.acc;
  float* const sc = s.sc;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  for (int64_t h = 0; h < H; ++h) {
    const T* qh = q + h * a.q_head_stride;
    int64_t d = 0;
    for (; d + W <= D; d += W) storev<W>(qf + h * D + d, loadv<W>(qh + d) * a.scale);
    for (; d < D; ++d) qf[h * D + d] = load(qh + d) * a.scale;
    s.m[h] = kNegInf;
    s.l[h] = 0.0f;
  }
  std::fill(acc, acc + H * D, 0.0f);

  for (int64_t t = t0; t < t1;) {
    const int64_t blk = table[t / BS], off = t % BS;
    const int64_t n = std::min({t1 - t, BS - off, kTile});
    const int64_t nv = (n + W - 1) / W;  // score vectors in this tile; lanes past n are -inf
    const T* k0 = kp + (blk * BS + off) * row;
    const T* v0 = vp + (blk * BS + off) * row;
    // Scores: query head h = kvh * G + g against KV head kvh (no h / G: an idiv per head and token).
    for (int64_t i = 0; i < n; ++i) {
      const T* kr = k0 + i * row;
      if constexpr (GT > 0) {
        for (int64_t kvh = 0; kvh < KV; ++kvh)
          dots_group<W, GT>(qf + kvh * GT * D, kr + kvh * D, D, sc + kvh * GT * kTile + i, kTile);
      } else {
        for (int64_t kvh = 0, h = 0; kvh < KV; ++kvh)
          for (int64_t g = 0; g < G; ++g, ++h) sc[h * kTile + i] = dot<W>(qf + h * D, kr + kvh * D, D);
      }
    }
    for (int64_t h = 0; h < H; ++h) {
      float* sh = sc + h * kTile;
      std::fill(sh + n, sh + nv * W, kNegInf);
      F mv = loadv<W>(sh);
      for (int64_t c = 1; c < nv; ++c) {
        const F x = loadv<W>(sh + c * W);
        mv = mv > x ? mv : x;
      }
      const float mx = std::max(s.m[h], hmax<W>(mv));
      const float alpha = exp_neg<W>(splat<W>(s.m[h] - mx))[0];  // the old state's weight: 0 at first
      F sum = {};
      for (int64_t c = 0; c < nv; ++c) {
        const F p = exp_neg<W>(loadv<W>(sh + c * W) - mx);
        storev<W>(sh + c * W, p);
        sum += p;
      }
      s.l[h] = s.l[h] * alpha + hsum<W>(sum);
      s.m[h] = mx;
      if (alpha != 1.0f)
        for (int64_t d = 0; d < D; ++d) acc[h * D + d] *= alpha;
    }
    // acc += P V. Each head reads its KV head's slice of the tile's V rows (from L1/L2 after the first
    // of the G heads).
    if constexpr (GT > 0) {
      for (int64_t kvh = 0; kvh < KV; ++kvh)
        pv_group<W, GT, kPvGroupC<W>>(acc + kvh * GT * D, sc + kvh * GT * kTile, kTile, v0 + kvh * D, row, n, D);
    } else {
      for (int64_t kvh = 0, h = 0; kvh < KV; ++kvh)
        for (int64_t g = 0; g < G; ++g, ++h) pv<W>(acc + h * D, sc + h * kTile, v0 + kvh * D, row, n, D);
    }
    t += n;
  }
}

// out (H heads of D, the output's dtype) = acc / l per head; 0 where no token was seen.
template <int W, class T>
HAVOC_INLINE void normalized(T* out, const float* l, const float* acc, int64_t H, int64_t D) {
  for (int64_t h = 0; h < H; ++h) {
    // l >= 1 whenever a token was seen (the max term contributes exp(0)); l == 0: no tokens, zeros.
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    int64_t d = 0;
    for (; d + W <= D; d += W) storev<W>(out + h * D + d, loadv<W>(acc + h * D + d) * inv);
    for (; d < D; ++d) store(out + h * D + d, acc[h * D + d] * inv);
  }
}

// The unit for this shape: grouped heads where G is 1-4 and D fits the grouped passes, else head by head;
// with `finish`, sequence b's normalized output.
template <int W, class T>
HAVOC_INLINE void decode_unit(const DecodeAttentionArgs& a, int64_t b, int64_t t0, int64_t t1, Scratch& s,
                              bool finish) {
  const int64_t D = a.shape.head_dim, H = a.n_heads;
  const bool fits = D % (2 * W) == 0 && D % (kPvGroupC<W> * W) == 0;
  switch (fits ? H / a.shape.kv_heads : 0) {
    case 1: decode_unit_g<W, T, 1>(a, b, t0, t1, s); break;
    case 2: decode_unit_g<W, T, 2>(a, b, t0, t1, s); break;
    case 3: decode_unit_g<W, T, 3>(a, b, t0, t1, s); break;
    case 4: decode_unit_g<W, T, 4>(a, b, t0, t1, s); break;
    default: decode_unit_g<W, T, 0>(a, b, t0, t1, s);
  }
  if (finish) normalized<W>(static_cast<T*>(a.out) + b * H * D, s.l, s.acc, H, D);
}

using UnitFn = void (*)(const DecodeAttentionArgs&, int64_t, int64_t, int64_t, Scratch&, bool);

// One wrapper per ISA and storage type; the body is decode_unit, compiled for that target with its
// native vector width.
#define HAVOC_DECODE_UNITS(NAME, W, ATTR)                                                                       \
  ATTR void NAME##_f32(const DecodeAttentionArgs& a, int64_t b, int64_t t0, int64_t t1, Scratch& s, bool fin) {  \
    decode_unit<W, float>(a, b, t0, t1, s, fin);                                                                \
  }                                                                                                             \
  ATTR void NAME##_bf16(const DecodeAttentionArgs& a, int64_t b, int64_t t0, int64_t t1, Scratch& s, bool fin) { \
    decode_unit<W, uint16_t>(a, b, t0, t1, s, fin);                                                             \
  }

HAVOC_DECODE_UNITS(unit_scalar, 4, )
#ifdef HAVOC_X86_DISPATCH
HAVOC_DECODE_UNITS(unit_avx2, 8, HAVOC_TARGET_AVX2)
HAVOC_DECODE_UNITS(unit_avx512, 16, HAVOC_TARGET_AVX512)
#endif
#undef HAVOC_DECODE_UNITS

UnitFn pick_unit(const std::string& isa, KVDType dtype) {
  const bool bf16 = dtype == KVDType::kBFloat16;
  const std::string level = simd::resolve_isa(isa);
#ifdef HAVOC_X86_DISPATCH
  if (level == "avx2") return bf16 ? unit_avx2_bf16 : unit_avx2_f32;
  if (level == "avx512") return bf16 ? unit_avx512_bf16 : unit_avx512_f32;
#endif
  return bf16 ? unit_scalar_bf16 : unit_scalar_f32;
}

int threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// merge_parts's output (outside the ISA wrappers: the baseline's vectors).
template <class T>
void store_normalized(const DecodeAttentionArgs& a, int64_t b, const float* l, const float* acc) {
  normalized<4>(static_cast<T*>(a.out) + b * a.n_heads * a.shape.head_dim, l, acc, a.n_heads, a.shape.head_dim);
}

void validate(const DecodeAttentionArgs& a) {
  check_shape(a.shape);
  if (a.n_seqs < 0) throw std::invalid_argument("negative batch size");
  if (a.n_heads < 1 || a.n_heads % a.shape.kv_heads != 0)
    throw std::invalid_argument("n_heads (" + std::to_string(a.n_heads) + ") must be a positive multiple of "
                                "kv_heads (" + std::to_string(a.shape.kv_heads) + ")");
  if (a.table_width < 0) throw std::invalid_argument("negative block table width");
  const int64_t BS = a.shape.block_size;
  for (int64_t b = 0; b < a.n_seqs; ++b) {
    const int64_t L = a.lengths[b];
    if (L < 0 || L > a.table_width * BS)
      throw std::out_of_range("length " + std::to_string(L) + " of sequence " + std::to_string(b) +
                              " does not fit its block table (" + std::to_string(a.table_width) +
                              " blocks of " + std::to_string(BS) + ")");
    const int32_t* row = a.block_tables + b * a.table_width;
    for (int64_t j = 0, used = (L + BS - 1) / BS; j < used; ++j)
      if (row[j] < 0 || row[j] >= a.shape.num_blocks)
        throw std::out_of_range("block id " + std::to_string(row[j]) + " (sequence " + std::to_string(b) +
                                ", table entry " + std::to_string(j) + ") is outside the pool's [0, " +
                                std::to_string(a.shape.num_blocks) + ") blocks");
  }
}

// The merge of split-K partial states: out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s with
// M = max_s m_s, over the `n` parts at p0 (each `part` floats: H maxima, H sums, H x D accumulators).
void merge_parts(const DecodeAttentionArgs& a, int64_t b, const float* p0, int64_t n, int64_t part, float* l,
                 float* acc) {
  const int64_t H = a.n_heads, D = a.shape.head_dim;
  for (int64_t h = 0; h < H; ++h) {
    float M = -std::numeric_limits<float>::infinity();
    for (int64_t sp = 0; sp < n; ++sp) M = std::max(M, p0[sp * part + h]);
    float L = 0.0f;
    float* ah = acc + h * D;
    std::fill(ah, ah + D, 0.0f);
    for (int64_t sp = 0; sp < n; ++sp) {
      const float* p = p0 + sp * part;
      if (p[H + h] == 0.0f) continue;  // an empty split (so M is finite below)
      const float w = std::exp(p[h] - M);
      L += w * p[H + h];
      const float* pa = p + 2 * H + h * D;
      for (int64_t d = 0; d < D; ++d) ah[d] += w * pa[d];
    }
    l[h] = L;
  }
  a.dtype == KVDType::kBFloat16 ? store_normalized<uint16_t>(a, b, l, acc) : store_normalized<float>(a, b, l, acc);
}

// paged_decode_attention with a.split_tokens > 0: sequence b is cut at multiples of split_tokens into
// parts[b] = ceil(L / split_tokens) work units (units of sequence b start at first[b]), so the order of
// its reduction depends on its length alone.
std::vector<int64_t> units_by_length(const DecodeAttentionArgs& a) {
  if (a.split_tokens % a.shape.block_size) throw std::invalid_argument("split_tokens must be a multiple of the block size");
  std::vector<int64_t> first(static_cast<size_t>(a.n_seqs + 1), 0);
  for (int64_t b = 0; b < a.n_seqs; ++b)
    first[b + 1] = first[b] + std::max<int64_t>(1, (a.lengths[b] + a.split_tokens - 1) / a.split_tokens);
  return first;
}

// The units, then the merges of the sequences cut in several, shared by the threads of the team that
// calls it (every thread calls it; orphaned worksharing, so one thread alone does all). `partial` holds
// (units, H (D + 2)) floats where some sequence has more than one unit.
void split_units(const DecodeAttentionArgs& a, UnitFn unit, const std::vector<int64_t>& first, float* partial) {
  const int64_t H = a.n_heads, D = a.shape.head_dim, S = a.split_tokens, n = a.n_seqs;
  const int64_t n_units = first[n], part = H * (D + 2);
  {
    Scratch s(H, D);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < n_units; ++u) {
      const int64_t b = std::upper_bound(first.begin(), first.end(), u) - first.begin() - 1;
      const int64_t sp = u - first[b], L = a.lengths[b];
      const bool whole = first[b + 1] - first[b] == 1;
      unit(a, b, std::min(L, sp * S), std::min(L, (sp + 1) * S), s, whole);
      if (!whole) s.save(partial + u * part, H, D);
    }
  }
  if (n_units == n) return;
  std::vector<float> l(H), acc(H * D);
#pragma omp for schedule(dynamic, 1)
  for (int64_t b = 0; b < n; ++b)
    if (first[b + 1] - first[b] > 1)
      merge_parts(a, b, partial + first[b] * part, first[b + 1] - first[b], part, l.data(), acc.data());
}

void split_by_length(const DecodeAttentionArgs& a, UnitFn unit, int64_t total_len) {
  const std::vector<int64_t> first = units_by_length(a);
  const int64_t n_units = first[a.n_seqs], part = a.n_heads * (a.shape.head_dim + 2);
  std::vector<float> partial(n_units > a.n_seqs ? static_cast<size_t>(n_units * part) : 0);
  const bool parallel = n_units > 1 && total_len * a.n_heads * a.shape.head_dim >= (int64_t{1} << 16);
#pragma omp parallel if (parallel)
  split_units(a, unit, first, partial.data());
}

}  // namespace

// --- write / copy ----------------------------------------------------------------------------------------

void write_kv(void* k_pool, void* v_pool, const PoolShape& shape, size_t elem_size, RowsView k, RowsView v,
              const int64_t* slots, int64_t n_rows) {
  check_shape(shape);
  const int64_t n_slots = shape.slots();
  for (int64_t i = 0; i < n_rows; ++i)
    if (slots[i] < 0 || slots[i] >= n_slots) throw std::out_of_range(slot_error(i, slots[i], n_slots));
  const int64_t KV = shape.kv_heads, D = shape.head_dim;
  const size_t row_bytes = static_cast<size_t>(D) * elem_size;
  auto* kd = static_cast<char*>(k_pool);
  auto* vd = static_cast<char*>(v_pool);
  const auto* ks = static_cast<const char*>(k.data);
  const auto* vs = static_cast<const char*>(v.data);
  // NOTE: a decode step's few rows are faster on one thread than waking the team (~2-5 us); a prefill
  // chunk's are a memory copy the two threads split.
  const bool parallel = static_cast<size_t>(n_rows * KV) * row_bytes >= (size_t{1} << 18);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < n_rows; ++i) {
    const size_t dst = static_cast<size_t>(slots[i] * KV * D) * elem_size;
    for (int64_t h = 0; h < KV; ++h) {
      const size_t at = dst + static_cast<size_t>(h) * row_bytes;
      std::memcpy(kd + at, ks + static_cast<size_t>(i * k.row_stride + h * k.head_stride) * elem_size,
                  row_bytes);
      std::memcpy(vd + at, vs + static_cast<size_t>(i * v.row_stride + h * v.head_stride) * elem_size,
                  row_bytes);
    }
  }
}

void copy_blocks(const std::vector<void*>& pools, const PoolShape& shape, size_t elem_size,
                 const int64_t* copies, int64_t n_copies) {
  check_shape(shape);
  std::vector<int64_t> dsts(static_cast<size_t>(n_copies)), srcs(static_cast<size_t>(n_copies));
  for (int64_t i = 0; i < n_copies; ++i) {
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t id = copies[2 * i + j];
      if (id < 0 || id >= shape.num_blocks)
        throw std::out_of_range("block id " + std::to_string(id) + " (copy " + std::to_string(i) +
                                ") is outside the pool's [0, " + std::to_string(shape.num_blocks) +
                                ") blocks");
    }
    srcs[i] = copies[2 * i];
    dsts[i] = copies[2 * i + 1];
  }
  std::sort(dsts.begin(), dsts.end());
  std::sort(srcs.begin(), srcs.end());
  if (std::adjacent_find(dsts.begin(), dsts.end()) != dsts.end())
    throw std::invalid_argument("two block copies have the same destination");
  for (size_t i = 0, j = 0; i < dsts.size() && j < srcs.size();) {  // sorted-list intersection
    if (dsts[i] == srcs[j]) throw std::invalid_argument("block " + std::to_string(dsts[i]) +
                                                        " is both a copy's source and a destination");
    dsts[i] < srcs[j] ? ++i : ++j;
  }
  const size_t block_bytes = static_cast<size_t>(shape.block_size * shape.slot_elems()) * elem_size;
  const int64_t n_pools = static_cast<int64_t>(pools.size());
  const bool parallel = static_cast<size_t>(n_pools * n_copies) * block_bytes >= (size_t{1} << 18);
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t p = 0; p < n_pools; ++p)
    for (int64_t i = 0; i < n_copies; ++i) {
      char* base = static_cast<char*>(pools[p]);
      std::memcpy(base + static_cast<size_t>(copies[2 * i + 1]) * block_bytes,
                  base + static_cast<size_t>(copies[2 * i]) * block_bytes, block_bytes);
    }
}

// --- decode attention ----------------------------------------------------------------------------------

std::vector<std::string> decode_attention_isas() { return simd::runnable_isas(); }

int64_t decode_attention_splits(int64_t n_seqs, int64_t max_length, int64_t block_size) {
  // Enough work items for the dynamic schedule to even out (4 per thread), but no split shorter than
  // kMinSplit tokens, where the partial states' merge would cost more than the balance gains.
  constexpr int64_t kMinSplit = 256;
  const int64_t t = threads();
  const int64_t units = std::max<int64_t>(1, n_seqs);
  if (t <= 1 || units >= 4 * t) return 1;
  const int64_t want = (4 * t + units - 1) / units;
  const int64_t blocks = (max_length + block_size - 1) / block_size;
  const int64_t by_len = std::max<int64_t>(1, max_length / kMinSplit);
  return std::max<int64_t>(1, std::min({want, by_len, blocks}));
}

void paged_decode_attention(const DecodeAttentionArgs& a, int64_t num_splits, const std::string& isa) {
  validate(a);
  if (num_splits < 0) throw std::invalid_argument("num_splits must be >= 0 (0: automatic)");
  const UnitFn unit = pick_unit(isa, a.dtype);
  const int64_t D = a.shape.head_dim, BS = a.shape.block_size, H = a.n_heads;
  if (a.n_seqs == 0) return;

  int64_t max_len = 0, total_len = 0;
  for (int64_t b = 0; b < a.n_seqs; ++b) {
    max_len = std::max<int64_t>(max_len, a.lengths[b]);
    total_len += a.lengths[b];
  }
  if (a.split_tokens > 0) return split_by_length(a, unit, total_len);
  const int64_t splits = num_splits > 0 ? num_splits : decode_attention_splits(a.n_seqs, max_len, BS);
  const int64_t n_units = a.n_seqs * splits;
  // Partial states of split-K: per unit H maxima, H sums and H x D accumulators.
  const int64_t part = H * (D + 2);
  std::vector<float> partial(splits > 1 ? static_cast<size_t>(n_units * part) : 0);
  // NOTE: below ~64K multiply-adds (e.g. the tiny test model) one thread beats waking the team.
  const bool parallel = n_units > 1 && total_len * H * D >= (int64_t{1} << 16);

#pragma omp parallel if (parallel)
  {
    Scratch s(H, D);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < n_units; ++u) {
      const int64_t b = u / splits, sp = u % splits;
      const int64_t L = a.lengths[b];
      const int64_t blocks = (L + BS - 1) / BS;
      const int64_t per = (blocks + splits - 1) / splits;  // blocks per split; the last may be short or empty
      const int64_t t0 = std::min(L, sp * per * BS), t1 = std::min(L, (sp + 1) * per * BS);
      unit(a, b, t0, t1, s, splits == 1);
      if (splits != 1) s.save(partial.data() + u * part, H, D);
    }
  }
  if (splits == 1) return;

#pragma omp parallel if (parallel)
  {
    std::vector<float> l(H), acc(H * D);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.n_seqs; ++b)
      merge_parts(a, b, partial.data() + b * splits * part, splits, part, l.data(), acc.data());
  }
}

void paged_decode_attention_team(const DecodeAttentionArgs& a, std::vector<float>& partial, const std::string& isa) {
  if (a.split_tokens <= 0) throw std::invalid_argument("paged_decode_attention_team splits by length (split_tokens > 0)");
  const UnitFn unit = pick_unit(isa, a.dtype);
  const std::vector<int64_t> first = units_by_length(a);
  const int64_t n_units = first[a.n_seqs], part = a.n_heads * (a.shape.head_dim + 2);
#pragma omp single
  if (static_cast<int64_t>(partial.size()) < n_units * part) partial.resize(static_cast<size_t>(n_units * part));
  split_units(a, unit, first, partial.data());  // ends on a barrier (its last worksharing loop)
}

}  // namespace havoc
