#include "cpu_decode.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

#include "attention.h"
#include "build_info.h"
#include "elementwise.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

#ifdef HAVOC_DOT_VARIANTS  // simd.h: the dot-product variants are compiled; AMX asks the OS for its state
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace havoc {

namespace {

using namespace simd;

#define HAVOC_LAMBDA_INLINE __attribute__((always_inline))

// int8 products of fewer activation rows than this run on the amx variant's vpdpbusd tile with the AMX
// epilogue's arithmetic (tile_int8_dot_exact): a B tile holds 16 rows, and for one row the tiles' per-group
// epilogue over 16 x 16 outputs cost 18.3 ms a SmolLM2 step's products against 12.6 (vpdpbusd). bf16 takes
// the tiles at any number of rows (20.4 against 20.2 ms at one row), so that every output of a bf16 weight
// is the tiles' sum whatever the batch.
constexpr int64_t kAmxMinRows = 4;

// --- the product: tiles of NR weight rows x MR activation rows ----------------------------------------

// One product y (=|+=) x @ W.T, with x already in the form the chosen variant's kernel for W's format
// reads (prepare() below fills the fields that apply; the others stay null).
struct GemmArgs {
  int64_t M = 0;
  WeightView w;
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t y_col0 = 0;  // y's column 0 is weight row y_col0 (a tile buffer of linear_argmax), else 0
  bool accumulate = false;
  // fp32 weights: x. bf16 weights on the widening variants: x rounded to bf16, kept as fp32 (the scalar
  // tail of a row reads it).
  const float* x = nullptr;
  int64_t ldx = 0;
  // bf16 weights, widening variants: the rounded x with each 32-column block split into its even then its
  // odd columns (pair_columns), so the even and odd bf16 weights of a 64-byte load multiply contiguous x
  // vectors.
  const float* xp = nullptr;
  int64_t ldxp = 0;
  // bf16 weights, vdpbf16ps: x as bf16 bits, input order.
  const uint16_t* xb = nullptr;
  int64_t ldxb = 0;
  // int8 weights, widening variants: x (int8_weight_only) or its int8 round trip q * scale (int8), zero
  // past cols and reordered per load of 4W weight bytes starting at k: xd[k + c W + l] = x[k + 4 l + c]
  // (lane l of such a load holds inputs k + 4l .. k + 4l + 3; byte c of every lane is unpacked together).
  const float* xd = nullptr;
  int64_t ldxd = 0;
  // int8 weights, int8 dot variants: the quantized x in input order, zero past cols (ldxq = w.ld()); per
  // (row, group) its scale and -128 * the sum of its q (the dot products see the weights' bytes q + 128).
  // Interleaved weights (WeightView): xq in the same interleaved layout, and per (row, block of B chunks)
  // 16 lanes: xs lane l the scale of chunk l mod B, xc lane l < B the correction of chunk l, else 0
  // (ldxs = 16 * blocks).
  const int8_t* xq = nullptr;
  int64_t ldxq = 0;
  // int8 weights, variants multiplying 16-bit words (avx2's vpmaddwd): xq widened, same layout and stride.
  const int16_t* xw = nullptr;
  const float* xs = nullptr;
  const int32_t* xc = nullptr;
  int64_t ldxs = 0;
  // amx: x in the layout of AMX's B tiles (amx_tiles), and for int8 the scales and corrections transposed
  // to (group, padded rows). Null for int8 below kAmxMinRows rows and for bf16 rows shorter than 32.
  const void* xt = nullptr;
  const float* xst = nullptr;
  const int32_t* xct = nullptr;
  int64_t ldxst = 0;
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

// Software prefetch distance of the bf16 and int8 weight streams, in bytes. Their rows are short (1152 and
// 576 bytes for K = 576), so the hardware prefetchers barely ramp up before a tile moves on; fetching 4 KiB
// ahead took the SmolLM2 head (49152 x 576) from 14.4 to 17.6 GB/s in bf16 and from 6.8 to 10.5 GB/s in
// int8, and left long rows (K = 4096) within noise (interleaved runs, 2-core VM). fp32 gained nothing at one
// activation row (more rows: below).
constexpr int64_t kPrefetchBytes = 4096;
// fp32 weights with more than one activation row: a tile's later activation rows reuse its weights from
// cache while the memory has nothing to do; fetching 8 KiB ahead keeps it busy. SmolLM2 fp32 decode steps
// on 2 MiB pages (AMX Xeon, medians of 30 alternating): batch 4 36.6 -> 29.4 ms, batch 8 41.9 -> 35.0 ms,
// batch 32 94.6 -> 92.0 ms (16 KiB ahead: 36.4 and 95.4); at batch 1 it cost 24.7 -> 26.7 ms.
constexpr int64_t kPrefetchBytesF32 = 8192;

// set_batch1_streams's override of batch1_streams() (0: none, the CPU's vendor decides).
std::atomic<int> g_batch1_streams{0};

int vendor_batch1_streams() {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_is("amd")) return 1;
#endif
  return 4;
}

template <int W, int NR, int MR>
HAVOC_INLINE void zero_tile(typename V<W>::f (&acc)[NR][MR], float (&tail)[NR][MR]) {
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[r][i] = typename V<W>::f{}, tail[r][i] = 0.0f;
}

#ifdef HAVOC_X86_DISPATCH
// Lanes of two 16-lane vectors (0-15 the first's, 16-31 the second's).
#ifdef __clang__
#define HAVOC_SHUFFLE16(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define HAVOC_SHUFFLE16(a, b, ...) __builtin_shuffle(a, b, (V<16>::i){__VA_ARGS__})
#endif

// The 16 sums hsum<16>(v[j]) in one vector, lane 4 (j % 4) + j / 4: the same additions in the same order
// as hsum<16> (lanes l + (l + 8), then l + (l + 4), then (0 + 2) + (1 + 3)) — so the same bits — with
// the accumulators packed two, four and eight to a vector: 15 additions and 30 shuffles where 16 hsums
// take 16 x 7 operations. A 4 x 4 tile over K = 576 spends 576 FMAs; its 16 hsums were a fifth on top.
HAVOC_INLINE V<16>::f hsum16x16(const V<16>::f (&v)[16]) {
  using F = V<16>::f;
  F s[8], t[4], x[2];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p)
    s[p] = HAVOC_SHUFFLE16(v[2 * p], v[2 * p + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           HAVOC_SHUFFLE16(v[2 * p], v[2 * p + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k)
    t[k] = HAVOC_SHUFFLE16(s[2 * k], s[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           HAVOC_SHUFFLE16(s[2 * k], s[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  // t[k], block b: accumulator 4k + b's 4 lanes. Block b of x[h]: (v0 + v2, v1 + v3) of 8h + b, then of 8h + 4 + b.
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h)
    x[h] = HAVOC_SHUFFLE16(t[2 * h], t[2 * h + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           HAVOC_SHUFFLE16(t[2 * h], t[2 * h + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  // block b: accumulators b, 4 + b, 8 + b, 12 + b
  return HAVOC_SHUFFLE16(x[0], x[1], 0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30) +
         HAVOC_SHUFFLE16(x[0], x[1], 1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27, 13, 15, 29, 31);
}
#undef HAVOC_SHUFFLE16
#endif

template <int W, int NR, int MR>
HAVOC_INLINE void store_tile(const GemmArgs& a, int64_t n, int64_t m, const typename V<W>::f (&acc)[NR][MR],
                             const float (&tail)[NR][MR]) {
#ifdef HAVOC_X86_DISPATCH
  // AVX-512 tiles of 8 to 16 accumulators: their sums packed (same bits; the unused slots are zeros, whose
  // sums no other lane meets)
  if constexpr (W == 16 && NR <= 4 && MR <= 4 && NR * MR >= 8) {
    V<16>::f v[16] = {};
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) v[4 * i + r] = acc[r][i];
    const V<16>::f sums = hsum16x16(v);  // lane 4r + i: v[4i + r] = acc[r][i]
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const float val = sums[4 * r + i] + tail[r][i];
        float* yp = a.y + (m + i) * a.ldy + (n - a.y_col0) + r;
        *yp = a.accumulate ? *yp + val : val;
      }
    return;
  }
#endif
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const float v = hsum<W>(acc[r][i]) + tail[r][i];
      float* yp = a.y + (m + i) * a.ldy + (n - a.y_col0) + r;
      *yp = a.accumulate ? *yp + v : v;
    }
}

// y[m + i, n + r] for r < NR, i < MR over fp32 or bf16 weights, widened to fp32 in registers: NR x MR
// dot products over K, NR x MR vector accumulators.
template <int W, class T, int NR, int MR>
HAVOC_INLINE void tile(const GemmArgs& a, int64_t n, int64_t m) {
  using F = typename V<W>::f;
  const int64_t K = a.w.cols, ld = a.w.ld();
  const T* w = static_cast<const T*>(a.w.data) + n * ld;
  const float* x = a.x + m * a.ldx;
  F acc[NR][MR];
  float tail[NR][MR];
  zero_tile<W, NR, MR>(acc, tail);
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
  const bool prefetch = std::is_same<T, float>::value && a.M > 1;
  for (; k + W <= K; k += W) {
    if (prefetch && k % 16 == 0)  // once per 64-byte line
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) __builtin_prefetch(w + r * ld + k + kPrefetchBytesF32 / 4, 0, 3);
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
      for (int i = 0; i < MR; ++i) tail[r][i] = std::fma(wf, x[i * a.ldx + k], tail[r][i]);  // fused on every path (tests: any batch, same bits)
    }
  store_tile<W, NR, MR>(a, n, m, acc, tail);
}

// Byte c of each 32-bit lane, sign-extended and converted: shift it to the top, arithmetic shift back.
template <int W, int C>
HAVOC_INLINE typename V<W>::f unpack8(typename V<W>::u v) {
  const typename V<W>::i t = (typename V<W>::i)(v << (24 - 8 * C)) >> 24;
  return __builtin_convertvector(t, typename V<W>::f);
}

// Byte c of a W-lane load of int8 weights for NR rows against the MR activation vectors it pairs with.
template <int W, int NR, int MR, int C>
HAVOC_INLINE void int8_quarter(typename V<W>::f (&acc)[NR][MR], const typename V<W>::u (&raw)[NR],
                               const typename V<W>::f (&s)[NR], const float* xd, int64_t ldxd) {
  typename V<W>::f wv[NR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) wv[r] = unpack8<W, C>(raw[r]) * s[r];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const typename V<W>::f xv = loadv<W>(xd + i * ldxd + C * W);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[r][i] += wv[r] * xv;
  }
}

// int8 weights widened to fp32 (the variants without an int8 dot product, and int8_weight_only): each
// W-lane load of 4W bytes is sign-restored (xor 0x80), unpacked byte by byte and scaled by its group's
// scale (one multiply per weight vector, shared by the MR rows); x comes reordered to match (xd).
template <int W, int NR, int MR>
HAVOC_INLINE void tile_int8_widen(const GemmArgs& a, int64_t n, int64_t m) {
  using F = typename V<W>::f;
  using U = typename V<W>::u;
  const int64_t ld = a.w.ld(), G = a.w.group, ng = a.w.groups();
  const uint8_t* w = static_cast<const uint8_t*>(a.w.data) + n * ld;
  const float* xd = a.xd + m * a.ldxd;
  F acc[NR][MR];
  float tail[NR][MR];
  zero_tile<W, NR, MR>(acc, tail);
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t k0 = g * G, k1 = std::min(ld, k0 + G);
    F s[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) s[r] = splat<W>(a.w.scales[(n + r) * ng + g]);
    for (int64_t k = k0; k < k1; k += 4 * W) {
      if (k % 64 == 0)
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) __builtin_prefetch(w + r * ld + k + kPrefetchBytes, 0, 3);
      U raw[NR];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) {
        std::memcpy(&raw[r], w + r * ld + k, sizeof(U));
        raw[r] ^= 0x80808080u;  // the stored q + 128 back to q
      }
      int8_quarter<W, NR, MR, 0>(acc, raw, s, xd + k, a.ldxd);
      int8_quarter<W, NR, MR, 1>(acc, raw, s, xd + k, a.ldxd);
      int8_quarter<W, NR, MR, 2>(acc, raw, s, xd + k, a.ldxd);
      int8_quarter<W, NR, MR, 3>(acc, raw, s, xd + k, a.ldxd);
    }
  }
  store_tile<W, NR, MR>(a, n, m, acc, tail);
}

// MR activation rows at a time: 16 zmm accumulators + 4 weight vectors fit AVX-512's 32 registers; AVX2
// and the SSE baseline have 16, so they take 2.
template <int W>
constexpr int kMaxMR = W >= 16 ? 4 : 2;

// Every activation row for NR weight rows at n: MR rows at a time, then the remainder.
template <int NR, int MR, class Tile>
HAVOC_INLINE void for_rows(const GemmArgs& a, int64_t n, Tile tile_fn) {
  int64_t m = 0;
  for (; m + MR <= a.M; m += MR) tile_fn(std::integral_constant<int, NR>{}, std::integral_constant<int, MR>{}, n, m);
  switch (a.M - m) {
    case 1: tile_fn(std::integral_constant<int, NR>{}, std::integral_constant<int, 1>{}, n, m); break;
    case 2: if constexpr (MR > 2) tile_fn(std::integral_constant<int, NR>{}, std::integral_constant<int, 2>{}, n, m); break;
    case 3: if constexpr (MR > 3) tile_fn(std::integral_constant<int, NR>{}, std::integral_constant<int, 3>{}, n, m); break;
    default: break;
  }
}

// Weight rows [n0, n1) for every activation row: NR rows at a time (NR weight streams in flight), then the
// remainder one by one — all of them one by one for one activation row where batch1_streams() is 1.
template <int NR, int MR, class Tile>
HAVOC_INLINE void for_tiles(const GemmArgs& a, int64_t n0, int64_t n1, Tile tile_fn) {
  int64_t n = n0;
  if (a.M != 1 || batch1_streams() != 1)
    for (; n + NR <= n1; n += NR) for_rows<NR, MR>(a, n, tile_fn);
  for (; n < n1; ++n) for_rows<1, MR>(a, n, tile_fn);
}

// The widening kernels' tiles: 4 weight rows x kMaxMR activation rows, except on AVX2 for kernels whose
// weight rows take more than one register (kWideRows: bf16's even and odd widened halves; int8's widened
// vector, raw bytes and scale) from two activation rows: 4 x 2 left those 18-20 live vectors for 16 ymm and
// GCC 12 spilled inside the k loop (10 stack accesses per 32 FMAs for bf16, 44 for int8, in the
// disassembly); 2 x 4 spills none. SmolLM2's w13 at 32 rows on a Zen 3 EPYC, alternating: bf16 36-44 ->
// 46-51 GMAC/s, int8_weight_only 24-36 -> 38-53 (five pairs of runs). One activation row keeps 4 x 1 (it
// fits, and 4 weight streams where batch1_streams() asks for them).
template <int W, bool kWideRows, class Tile>
HAVOC_INLINE void for_widen_tiles(const GemmArgs& a, int64_t n0, int64_t n1, Tile tile_fn) {
  if constexpr (W == 8 && kWideRows)
    if (a.M > 1) return for_tiles<2, 4>(a, n0, n1, tile_fn);
  for_tiles<4, kMaxMR<W>>(a, n0, n1, tile_fn);
}

template <int W, class T>
HAVOC_INLINE void gemm_rows(const GemmArgs& a, int64_t n0, int64_t n1) {
  for_widen_tiles<W, std::is_same<T, uint16_t>::value>(
      a, n0, n1, [&a](auto nr, auto mr, int64_t n, int64_t m) HAVOC_LAMBDA_INLINE {
        tile<W, T, decltype(nr)::value, decltype(mr)::value>(a, n, m);
      });
}

template <int W>
HAVOC_INLINE void gemm_rows_int8_widen(const GemmArgs& a, int64_t n0, int64_t n1) {
  for_widen_tiles<W, true>(a, n0, n1, [&a](auto nr, auto mr, int64_t n, int64_t m) HAVOC_LAMBDA_INLINE {
    tile_int8_widen<W, decltype(nr)::value, decltype(mr)::value>(a, n, m);
  });
}

// --- the interleaved int8 layout (cpu_decode.h) ------------------------------------------------------

// Chunks in the block of a row of `nch` 64-byte chunks that starts at chunk c: 16 while 16 are left, then
// the largest power of two left (the binary digits of the rest).
HAVOC_INLINE int64_t il_block(int64_t c, int64_t nch) {
  const int64_t left = nch - c;
  if (left >= 16) return 16;
  int64_t b = 8;
  while (b > left) b >>= 1;
  return b;
}

HAVOC_INLINE int64_t il_blocks(int64_t nch) {
  int64_t n = 0;
  for (int64_t c = 0; c < nch; c += il_block(c, nch)) ++n;
  return n;
}

// One row of `nch` chunks into the interleaved layout (or back): 4-byte words move, bytes within stay.
HAVOC_INLINE void interleave_row(const uint8_t* src, uint8_t* dst, int64_t nch, bool inverse) {
  for (int64_t c0 = 0; c0 < nch;) {
    const int64_t B = il_block(c0, nch), A = 16 / B;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < 16; ++p) {
        const int64_t natural = 64 * (c0 + b) + 4 * p, il = 64 * (c0 + p / A) + 4 * ((p % A) * B + b);
        std::memcpy(dst + (inverse ? natural : il), src + (inverse ? il : natural), 4);
      }
    c0 += B;
  }
}

// --- int8 x int8: integer dot products of a group ----------------------------------------------------
// Per group, the products of weight and activation bytes summed exactly into 32-bit lanes, two ways:
//   MaddDot (AVX2, no VNNI): both sides widened to signed 16-bit words (the weights' stored q + 128 back to
//     q, sign-extended; exact), vpmaddwd multiplies and adds adjacent pairs into 32-bit lanes, two per 32
//     bytes. Each lane holds a true partial sum, so the lanes are converted, scaled by weight and activation
//     scale and accumulated in fp32 lane by lane (tile_int8_dot), like the widening kernels' lanes. Where
//     llama.cpp's AVX2 Q8_0 path takes vpsignb + vpmaddubsw + vpmaddwd per pair of blocks, here a weight
//     vector is widened once for a tile's activation rows and the activations once per product (prepare).
//   VnniDot (AVX-VNNI, AVX512-VNNI): vpdpbusd adds to each lane the four products of its unsigned weight
//     bytes (q + 128) and signed activation bytes; the 128 * sum(q_x) this adds per group is taken back by
//     starting lane 0 of the group's sums at -128 * sum(q_x) (GemmArgs::xc). The lanes are then converted
//     and accumulated like MaddDot's (tile_int8_dot), each carrying its share of the offset until the final
//     sum; AMX's vector kernel adds them as integers first (tile_int8_dot_exact).

#ifdef HAVOC_X86_DISPATCH
struct MaddDot {
  typedef short H __attribute__((vector_size(32)));
  typedef char BS __attribute__((vector_size(16)));  // GCC's v16qi: plain char
  struct WeightBytes {  // 32 weights q, as signed words
    H lo, hi;
  };
  struct ActBytes {  // 32 activations widened once per product (prepare)
    H lo, hi;
  };
  using Act = int16_t;
  static constexpr int kWidth = 8;  // fp32 / int32 lanes of its sums
  static constexpr bool kOffset = false;  // signed words: no correction
  static constexpr int kBytes = 32;
  // Registers: 3 x 2 widened weight vectors, 3 x 4 int32 sums, 3 x 4 fp32 accumulators (some spilled: each is
  // touched once per group). SmolLM2's w13 (3072 x 576) at 32 rows on a Zen 3 EPYC: 2 x 2 45, 2 x 4 55,
  // 3 x 4 60 GMAC/s (4 x 2 40, 4 x 4 47: spills in the group loop).
  static constexpr int kNR = 3, kMR = 4;
  HAVOC_INLINE static const int16_t* act_rows(const GemmArgs& a) { return a.xw; }
  // 16 bytes to 16 words in one vpmovsxbw: GCC 12 compiles __builtin_convertvector of these
  // into two 8-byte widens, a shift and an insert (4 instructions where 1 does), so there the builtin.
  HAVOC_INLINE static H widen(BS v) {
#ifdef __clang__
    return __builtin_convertvector(v, H);
#else
    return __builtin_ia32_pmovsxbw256(v);
#endif
  }
  HAVOC_INLINE static WeightBytes weights(const uint8_t* p) {
    BS lo, hi;
    std::memcpy(&lo, p, sizeof lo);
    std::memcpy(&hi, p + 16, sizeof hi);
    const BS offset = BS{} + static_cast<char>(0x80);  // the stored q + 128 back to q
    return {widen(lo ^ offset), widen(hi ^ offset)};
  }
  HAVOC_INLINE static ActBytes acts(const int16_t* p) {
    ActBytes v;
    std::memcpy(&v.lo, p, sizeof v.lo);
    std::memcpy(&v.hi, p + 16, sizeof v.hi);
    return v;
  }
  HAVOC_INLINE static V<kWidth>::i dot(V<kWidth>::i acc, const WeightBytes& w, const ActBytes& x) {
    return acc + __builtin_ia32_pmaddwd256(w.lo, x.lo) + __builtin_ia32_pmaddwd256(w.hi, x.hi);
  }
};
#endif

#ifdef HAVOC_DOT_VARIANTS

typedef short v32hi __attribute__((vector_size(64)));

template <int W>
struct VnniDot {
  using I = typename V<W>::i;
  using WeightBytes = I;
  using ActBytes = I;
  using Act = int8_t;
  static constexpr int kWidth = W;
  static constexpr bool kOffset = true;  // lanes see q + 128: lane 0 starts at the group's correction
  static constexpr int kBytes = 4 * W;
  // Registers: NR x MR int32 sums + NR x MR fp32 accumulators + NR weight vectors + one activation vector:
  // 4 x 3 on AVX-512's 32, 2 x 2 on AVX2's 16.
  static constexpr int kNR = W >= 16 ? 4 : 2, kMR = W >= 16 ? 3 : 2;
  HAVOC_INLINE static const int8_t* act_rows(const GemmArgs& a) { return a.xq; }
  HAVOC_INLINE static I weights(const uint8_t* p) {
    I v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  HAVOC_INLINE static I acts(const int8_t* p) {
    I v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  HAVOC_INLINE static I dot(I acc, I u8, I s8) {
    if constexpr (W == 16)
      return __builtin_ia32_vpdpbusd_v16si(acc, u8, s8);
    else
      return __builtin_ia32_vpdpbusd_v8si(acc, u8, s8);  // VEX-encoded (AVX-VNNI) in an avxvnni function
  }
};

#endif  // HAVOC_DOT_VARIANTS

#ifdef HAVOC_X86_DISPATCH

// dot[r][i] += the products of inputs [k0, k1) (one group) of weight row r and activation row i, lane by lane.
template <class Dot, int NR, int MR>
HAVOC_INLINE void group_dots(typename V<Dot::kWidth>::i (&dot)[NR][MR], const uint8_t* w, int64_t ld, const typename Dot::Act* xq,
                             int64_t ldxq, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; k += Dot::kBytes) {
    if (k % 64 == 0)
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) __builtin_prefetch(w + r * ld + k + kPrefetchBytes, 0, 3);
    typename Dot::WeightBytes wv[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) wv[r] = Dot::weights(w + r * ld + k);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const typename Dot::ActBytes xv = Dot::acts(xq + i * ldxq + k);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) dot[r][i] = Dot::dot(dot[r][i], wv[r], xv);
    }
  }
}

template <class Dot, int NR, int MR>
HAVOC_INLINE void tile_int8_dot(const GemmArgs& a, int64_t n, int64_t m) {
  constexpr int W = Dot::kWidth;
  using F = typename V<W>::f;
  using I = typename V<W>::i;
  const int64_t ld = a.w.ld(), G = a.w.group, ng = a.w.groups();
  const uint8_t* w = static_cast<const uint8_t*>(a.w.data) + n * ld;
  const typename Dot::Act* xq = Dot::act_rows(a) + m * a.ldxq;
  F acc[NR][MR];
  float tail[NR][MR];
  zero_tile<W, NR, MR>(acc, tail);
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t k0 = g * G, k1 = std::min(ld, k0 + G);
    I dot[NR][MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      I init{};
      if constexpr (Dot::kOffset) init[0] = a.xc[(m + i) * a.ldxs + g];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) dot[r][i] = init;
    }
    group_dots<Dot, NR, MR>(dot, w, ld, xq, a.ldxq, k0, k1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const float sx = a.xs[(m + i) * a.ldxs + g];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r)
        acc[r][i] += __builtin_convertvector(dot[r][i], F) * splat<W>(a.w.scales[(n + r) * ng + g] * sx);
    }
  }
  store_tile<W, NR, MR>(a, n, m, acc, tail);
}

template <class Dot>
HAVOC_INLINE void gemm_rows_int8_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  for_tiles<Dot::kNR, Dot::kMR>(a, n0, n1, [&a](auto nr, auto mr, int64_t n, int64_t m) HAVOC_LAMBDA_INLINE {
    tile_int8_dot<Dot, decltype(nr)::value, decltype(mr)::value>(a, n, m);
  });
}

#endif  // HAVOC_X86_DISPATCH

#ifdef HAVOC_DOT_VARIANTS

// --- int8 x int8 on interleaved weights (AVX512-VNNI) ---------------------------------------------------
// Row-major weights give each vpdpbusd one group: its 16 lanes are one group's partial sums, and every
// group costs each (weight row, activation row) pair a correction, a convert, a scale and an FMA besides its
// one dot product — at 32 activation rows that epilogue, not the dot products, bounded the int8 step
// (bench/RESULTS.md: int8 in groups of 128 was 20% faster for it). In the interleaved layout a block's B
// vpdpbusd leave lane l holding 16 / B-th of chunk l mod B (all of it at B = 16): the block starts at the
// activation row's corrections, is converted once, multiplied by the lanes' weight x activation scales and
// added to the fp32 accumulator — one epilogue per block (2 for K = 576 instead of 9). The weight scales of
// a block are B consecutive floats of the row's (rows, groups) scales, repeated over the 16 lanes by one
// broadcast load. Each output is summed the same way whatever the tile, so a row's result does not depend
// on the batch.

// Lane l = s[l % B] (B a power of two up to 16): one broadcast load.
HAVOC_INLINE V<16>::f il_scales(const float* s, int64_t B) {
  switch (B) {
    case 16:
      return loadv<16>(s);
    case 8: {
      V<8>::f v;
      std::memcpy(&v, s, sizeof v);
      return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    }
    case 4: {
      V<4>::f v;
      std::memcpy(&v, s, sizeof v);
      return __builtin_shufflevector(v, v, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    }
    case 2: {
      V<2>::f v;
      std::memcpy(&v, s, sizeof v);
      return __builtin_shufflevector(v, v, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1);
    }
    default:
      return splat<16>(*s);
  }
}

// The chunk loop is rolled, as the row-major kernel's: one load instruction per weight row walks the row in
// 64-byte steps (on into the next row at one weight stream). At one activation row both kernels stream the
// same buffer from memory equally fast (SmolLM2's head, 2 threads: 35.1 GB/s row-major, 36.7 interleaved;
// bench/RESULTS.md); the chain of one vpdpbusd per 64 bytes is far from bounding such a stream.
template <int NR, int MR>
HAVOC_INLINE void tile_int8_il(const GemmArgs& a, int64_t n, int64_t m) {
  using I = V<16>::i;
  const int64_t ld = a.w.ld(), nch = ld / 64, ng = a.w.groups();
  const uint8_t* w = static_cast<const uint8_t*>(a.w.data) + n * ld;
  const int8_t* xq = a.xq + m * a.ldxq;
  V<16>::f acc[NR][MR];
  float tail[NR][MR];
  zero_tile<16, NR, MR>(acc, tail);
  for (int64_t c = 0, b = 0; c < nch; ++b) {
    const int64_t B = il_block(c, nch);
    I dot[NR][MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      I init;
      std::memcpy(&init, a.xc + (m + i) * a.ldxs + 16 * b, sizeof init);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) dot[r][i] = init;
    }
    for (int64_t k = 64 * c, k1 = 64 * (c + B); k < k1; k += 64) {
      I wv[NR];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) {
        __builtin_prefetch(w + r * ld + k + kPrefetchBytes, 0, 3);
        std::memcpy(&wv[r], w + r * ld + k, sizeof wv[r]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        I xv;
        std::memcpy(&xv, xq + i * a.ldxq + k, sizeof xv);
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) dot[r][i] = __builtin_ia32_vpdpbusd_v16si(dot[r][i], wv[r], xv);
      }
    }
    V<16>::f ws[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) ws[r] = il_scales(a.w.scales + (n + r) * ng + c, B);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V<16>::f sx = loadv<16>(a.xs + (m + i) * a.ldxs + 16 * b);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r)
        acc[r][i] = __builtin_ia32_vfmaddps512_mask(__builtin_convertvector(dot[r][i], V<16>::f), ws[r] * sx,
                                                     acc[r][i], 0xffff, 4);
    }
    c += B;
  }
  store_tile<16, NR, MR>(a, n, m, acc, tail);
}

HAVOC_INLINE void gemm_rows_int8_il(const GemmArgs& a, int64_t n0, int64_t n1) {
  for_tiles<4, 3>(a, n0, n1, [&a](auto nr, auto mr, int64_t n, int64_t m) HAVOC_LAMBDA_INLINE {
    tile_int8_il<decltype(nr)::value, decltype(mr)::value>(a, n, m);
  });
}

// Lane sums of four 16-lane integer vectors: {sum a, sum b, sum c, sum d}.
HAVOC_INLINE V<4>::i reduce4(V<16>::i a, V<16>::i b, V<16>::i c, V<16>::i d) {
  using I8 = V<8>::i;
  auto halves = [](V<16>::i v) HAVOC_LAMBDA_INLINE {
    I8 lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return lo + hi;
  };
  auto pairs = [](I8 x, I8 y) HAVOC_LAMBDA_INLINE {  // {x0+x1, x2+x3, y0+y1, y2+y3, x4+x5, x6+x7, y4+y5, y6+y7}
    return __builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14) + __builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15);
  };
  const I8 abcd = pairs(pairs(halves(a), halves(b)), pairs(halves(c), halves(d)));  // {a, b, c, d} in two halves
  V<4>::i lo, hi;
  std::memcpy(&lo, &abcd, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&abcd) + sizeof lo, sizeof hi);
  return lo + hi;
}

// The amx variant's vpdpbusd tile (weight rows past the last 16, and products of fewer than kAmxMinRows
// activation rows): each group's exact integer sum, then acc = fma(float(sum), w_scale * x_scale, acc) per
// output in group order — the arithmetic of the AMX epilogue, so that an output is the same bits whichever
// of the two computes it (batch invariance: a row's result never depends on how many rows share the call).
template <int NR, int MR>
HAVOC_INLINE void tile_int8_dot_exact(const GemmArgs& a, int64_t n, int64_t m) {
  using I = V<16>::i;
  const int64_t ld = a.w.ld(), G = a.w.group, ng = a.w.groups();
  const uint8_t* w = static_cast<const uint8_t*>(a.w.data) + n * ld;
  const int8_t* xq = a.xq + m * a.ldxq;
  float acc[NR][MR] = {};
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t k0 = g * G, k1 = std::min(ld, k0 + G);
    I dot[NR][MR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) dot[r][i] = I{};
    group_dots<VnniDot<16>, NR, MR>(dot, w, ld, xq, a.ldxq, k0, k1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const int32_t corr = a.xc[(m + i) * a.ldxs + g];
      const float sx = a.xs[(m + i) * a.ldxs + g];
      if constexpr (NR == 4) {  // the four rows' sums at once (integer adds: any order is exact)
        using F4 = V<4>::f;
        const V<4>::i sum = reduce4(dot[0][i], dot[1][i], dot[2][i], dot[3][i]) + corr;
        F4 acc4, sw;
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) acc4[r] = acc[r][i], sw[r] = a.w.scales[(n + r) * ng + g];
        acc4 = __builtin_ia32_vfmaddps(__builtin_convertvector(sum, F4), sw * sx, acc4);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) acc[r][i] = acc4[r];
      } else {
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) {
          int32_t sum = corr;
          for (int l = 0; l < 16; ++l) sum += dot[r][i][l];
          acc[r][i] = std::fma(static_cast<float>(sum), a.w.scales[(n + r) * ng + g] * sx, acc[r][i]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      float* yp = a.y + (m + i) * a.ldy + (n - a.y_col0) + r;
      *yp = a.accumulate ? *yp + acc[r][i] : acc[r][i];
    }
}

HAVOC_INLINE void gemm_rows_int8_dot_exact(const GemmArgs& a, int64_t n0, int64_t n1) {
  for_tiles<4, 3>(a, n0, n1, [&a](auto nr, auto mr, int64_t n, int64_t m) HAVOC_LAMBDA_INLINE {
    tile_int8_dot_exact<decltype(nr)::value, decltype(mr)::value>(a, n, m);
  });
}

// --- bf16 x bf16: AVX512-BF16's vdpbf16ps ---------------------------------------------------------------
// vdpbf16ps adds to each fp32 lane the products of its two bf16 pairs: 32 multiply-adds per instruction
// against 16 per FMA after widening, and no widening. Rows whose length is no multiple of 32 end in a
// masked load (masked-off elements read as zero and never fault).

HAVOC_INLINE v32hi load_bf16x32(const uint16_t* p, int64_t n) {
  if (n >= 32) {
    v32hi v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  const unsigned mask = (1u << n) - 1u;
  return __builtin_ia32_loaddquhi512_mask(reinterpret_cast<const short*>(p), v32hi{}, mask);
}

template <int NR, int MR>
HAVOC_INLINE void tile_bf16_dot(const GemmArgs& a, int64_t n, int64_t m) {
  using F = V<16>::f;
  const int64_t K = a.w.cols, ld = a.w.ld();
  const uint16_t* w = static_cast<const uint16_t*>(a.w.data) + n * ld;
  const uint16_t* xb = a.xb + m * a.ldxb;
  F acc[NR][MR];
  float tail[NR][MR];
  zero_tile<16, NR, MR>(acc, tail);
  for (int64_t k = 0; k < K; k += 32) {
    const int64_t left = K - k;
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) __builtin_prefetch(w + r * ld + k + kPrefetchBytes / 2, 0, 3);
    v32hi wv[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) wv[r] = load_bf16x32(w + r * ld + k, left);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const v32hi xv = load_bf16x32(xb + i * a.ldxb + k, left);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[r][i] = __builtin_ia32_dpbf16ps_v16sf(acc[r][i], wv[r], xv);
    }
  }
  store_tile<16, NR, MR>(a, n, m, acc, tail);
}

HAVOC_INLINE void gemm_rows_bf16_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  for_tiles<4, 4>(a, n0, n1, [&a](auto nr, auto mr, int64_t n, int64_t m) HAVOC_LAMBDA_INLINE {
    tile_bf16_dot<decltype(nr)::value, decltype(mr)::value>(a, n, m);
  });
}

// --- AMX tiles --------------------------------------------------------------------------------------------
// Eight tile registers of 16 rows x 64 bytes. A product y = x @ W.T is computed transposed, C = W x^T, so
// that the weights are A tiles straight from their row-major rows (16 weight rows x 64 bytes, loaded with
// the row stride) and only x is rearranged, into B tiles ("VNNI" layout: for bf16 row p holds inputs 2p and
// 2p + 1 of each of 16 activation rows; for int8 inputs 4p .. 4p + 3). tmm0/1: two 16-row weight blocks,
// tmm2/3: two 16-row activation blocks, tmm4-7: their four 16 x 16 products (fp32 for bf16, int32 for
// int8), stored and added into y transposed. Each thread loads the configuration at the start of a call
// and releases the tiles at its end (other code in the thread, e.g. oneDNN in torch, configures its own).

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

HAVOC_INLINE void amx_begin() {
  static const TileConfig cfg = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) c.colsb[t] = 64, c.rows[t] = 16;
    return c;
  }();
  asm volatile("ldtilecfg %0" ::"m"(cfg));
}
HAVOC_INLINE void amx_end() { asm volatile("tilerelease" ::: "memory"); }

#define HAVOC_TILE_LOAD(t, base, stride) \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
#define HAVOC_TILE_STORE(t, base) \
  asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(int64_t{64}) : "memory")
#define HAVOC_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::)
#define HAVOC_TILE_DPBF16PS(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define HAVOC_TILE_DPBUSD(c, a, b) asm volatile("tdpbusd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

// Whether the OS lets this process use the AMX tile data (Linux >= 5.16: arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)); asked once.
bool amx_permitted() {
  static const bool ok = [] {
    if (!has_cpu_feature("amx_tile")) return false;
    constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
  }();
  return ok;
}

// One step of inputs for the (up to) 2 x 2 blocks: weight rows n.. (tmm0) and n + 16.. (tmm1, if `two`)
// times activation blocks b (tmm2) and b + 1 (tmm3, if `twob`), into tmm4 (n, b), tmm5 (n, b + 1),
// tmm6 (n + 16, b), tmm7 (n + 16, b + 1).
template <bool kInt8>
HAVOC_INLINE void amx_step(const void* w0, const void* w1, int64_t w_stride, const void* x0, const void* x1, bool two,
                           bool twob) {
  HAVOC_TILE_LOAD(0, w0, w_stride);
  HAVOC_TILE_LOAD(2, x0, 64);
  if constexpr (kInt8) HAVOC_TILE_DPBUSD(4, 0, 2); else HAVOC_TILE_DPBF16PS(4, 0, 2);
  if (two) {
    HAVOC_TILE_LOAD(1, w1, w_stride);
    if constexpr (kInt8) HAVOC_TILE_DPBUSD(6, 1, 2); else HAVOC_TILE_DPBF16PS(6, 1, 2);
  }
  if (twob) {
    HAVOC_TILE_LOAD(3, x1, 64);
    if constexpr (kInt8) HAVOC_TILE_DPBUSD(5, 0, 3); else HAVOC_TILE_DPBF16PS(5, 0, 3);
    if (two) {
      if constexpr (kInt8) HAVOC_TILE_DPBUSD(7, 1, 3); else HAVOC_TILE_DPBF16PS(7, 1, 3);
    }
  }
}

HAVOC_INLINE void amx_zero_products() {
  HAVOC_TILE_ZERO(4);
  HAVOC_TILE_ZERO(5);
  HAVOC_TILE_ZERO(6);
  HAVOC_TILE_ZERO(7);
}

// tmm4-7 into four 16 x 16 blocks of 4-byte elements (c[t] = tmm(4 + t): t / 2 the weight block, t % 2
// the activation block).
HAVOC_INLINE void amx_store_products(void* c) {
  char* p = static_cast<char*>(c);
  HAVOC_TILE_STORE(4, p);
  HAVOC_TILE_STORE(5, p + 1024);
  HAVOC_TILE_STORE(6, p + 2048);
  HAVOC_TILE_STORE(7, p + 3072);
}

// One 16 x 16 block of C (weight rows n0 + r, activation rows m0 + j) into y.
HAVOC_INLINE void amx_store_block(const GemmArgs& a, int64_t n0, int64_t m0, const float (&c)[16][16]) {
  const int64_t jn = std::min<int64_t>(16, a.M - m0);
  for (int64_t j = 0; j < jn; ++j) {
    float* yr = a.y + (m0 + j) * a.ldy + (n0 - a.y_col0);
    if (a.accumulate)
      for (int r = 0; r < 16; ++r) yr[r] += c[r][j];
    else
      for (int r = 0; r < 16; ++r) yr[r] = c[r][j];
  }
}

// bf16: steps of 32 inputs by tiles, the rest of a row (K % 32) added from the vector path's bf16 x.
HAVOC_INLINE void amx_rows_bf16_impl(const GemmArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.w.cols, ld = a.w.ld(), steps = K / 32, mb = (a.M + 15) / 16;
  const uint16_t* W = static_cast<const uint16_t*>(a.w.data);
  const uint16_t* xt = static_cast<const uint16_t*>(a.xt);  // [mb][steps][16][32]
  alignas(64) float c[4][16][16];
  amx_begin();
  int64_t n = n0;
  while (n + 16 <= n1) {
    const bool two = n + 32 <= n1;  // a second 16-row weight block
    const uint16_t* w0 = W + n * ld;
    const uint16_t* w1 = W + (n + 16) * ld;
    for (int64_t b = 0; b < mb; b += 2) {
      const bool twob = b + 1 < mb;
      const uint16_t* x0 = xt + b * steps * 512;
      const uint16_t* x1 = x0 + steps * 512;
      amx_zero_products();
      for (int64_t s = 0; s < steps; ++s)
        amx_step<false>(w0 + 32 * s, w1 + 32 * s, 2 * ld, x0 + 512 * s, x1 + 512 * s, two, twob);
      amx_store_products(c);
      for (int t = 0; t < 4; ++t) {
        const int64_t nb = n + 16 * (t / 2), m0 = 16 * (b + t % 2);
        if ((t / 2 == 1 && !two) || (t % 2 == 1 && !twob)) continue;
        if (K % 32) {  // the inputs past the last whole step
          const int64_t jn = std::min<int64_t>(16, a.M - m0);
          for (int r = 0; r < 16; ++r)
            for (int64_t j = 0; j < jn; ++j) {
              float s = 0.0f;
              for (int64_t k = steps * 32; k < K; ++k)
                s += bf16_to_f32(W[(nb + r) * ld + k]) * bf16_to_f32(a.xb[(m0 + j) * a.ldxb + k]);
              c[t][r][j] += s;
            }
        }
        amx_store_block(a, nb, m0, c[t]);
      }
    }
    n += two ? 32 : 16;
  }
  amx_end();
  if (n < n1) gemm_rows_bf16_dot(a, n, n1);  // fewer than 16 rows left
}

// int8: one tile step per 64 inputs; per group the int32 sums are stored, corrected, scaled by the weight
// row's and the activation row's scales and added to fp32 accumulators.
HAVOC_INLINE void amx_rows_int8_impl(const GemmArgs& a, int64_t n0, int64_t n1) {
  using F = V<16>::f;
  using I = V<16>::i;
  const int64_t ld = a.w.ld(), G = a.w.group, ng = a.w.groups(), steps = ld / 64, mb = (a.M + 15) / 16;
  const uint8_t* W = static_cast<const uint8_t*>(a.w.data);
  const int8_t* xt = static_cast<const int8_t*>(a.xt);  // [mb][steps][16][64]
  alignas(64) int32_t ci[4][16][16];
  alignas(64) float acc[4][16][16];
  amx_begin();
  int64_t n = n0;
  while (n + 16 <= n1) {
    const bool two = n + 32 <= n1;  // a second 16-row weight block
    const uint8_t* w0 = W + n * ld;
    const uint8_t* w1 = W + (n + 16) * ld;
    for (int64_t b = 0; b < mb; b += 2) {
      const bool twob = b + 1 < mb;
      const int8_t* x0 = xt + b * steps * 1024;
      const int8_t* x1 = x0 + steps * 1024;
      std::memset(acc, 0, sizeof acc);
      for (int64_t g = 0; g < ng; ++g) {
        amx_zero_products();
        for (int64_t s = g * G / 64, s1 = std::min(steps, (g + 1) * G / 64); s < s1; ++s)
          amx_step<true>(w0 + 64 * s, w1 + 64 * s, ld, x0 + 1024 * s, x1 + 1024 * s, two, twob);
        amx_store_products(ci);
        for (int t = 0; t < 4; ++t) {
          if ((t / 2 == 1 && !two) || (t % 2 == 1 && !twob)) continue;
          const int64_t nb = n + 16 * (t / 2), m0 = 16 * (b + t % 2);
          I corr;
          std::memcpy(&corr, a.xct + g * a.ldxst + m0, sizeof corr);
          const F sx = loadv<16>(a.xst + g * a.ldxst + m0);
          for (int r = 0; r < 16; ++r) {
            I row;
            std::memcpy(&row, &ci[t][r][0], sizeof row);
            row += corr;
            const F s = sx * a.w.scales[(nb + r) * ng + g];  // the exact tile's x_scale * w_scale, per lane
            storev<16>(&acc[t][r][0],
                       __builtin_ia32_vfmaddps512_mask(__builtin_convertvector(row, F), s, loadv<16>(&acc[t][r][0]),
                                                       static_cast<__mmask16>(-1), 4));  // 4: current rounding
          }
        }
      }
      for (int t = 0; t < 4; ++t) {
        if ((t / 2 == 1 && !two) || (t % 2 == 1 && !twob)) continue;
        amx_store_block(a, n + 16 * (t / 2), 16 * (b + t % 2), acc[t]);
      }
    }
    n += two ? 32 : 16;
  }
  amx_end();
  if (n < n1) gemm_rows_int8_dot_exact(a, n, n1);
}

#endif  // HAVOC_DOT_VARIANTS

// --- activations, prepared once per product ---------------------------------------------------------------
// Per product, x is put once into the form the variant's kernel for the weight format reads (GemmArgs);
// these loops are compiled per variant like the kernels (a decode step prepares ~120 products).

// Per-thread buffers of prepare(): a product's activations in the form its kernel reads.
struct Workspace {  // what prepare() writes for the kernels: each buffer starts on a cache line
  AlignedVector<float> f0, f1;
  AlignedVector<uint16_t> h;
  AlignedVector<int8_t> q, qi;
  AlignedVector<int16_t> w;
  AlignedVector<float> s, st, sl;
  AlignedVector<int32_t> c, ct, cl;
  AlignedVector<uint8_t> t;
};

template <class T, class A>
T* grow(std::vector<T, A>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// xb[m, k] = bf16 bits of x[m, k] (K columns, row stride K).
template <int W>
HAVOC_INLINE void to_bf16_rows(const float* x, int64_t M, int64_t ldx, int64_t K, uint16_t* xb) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * ldx;
    uint16_t* o = xb + m * K;
    int64_t k = 0;
    for (; k + W <= K; k += W) storev<W>(o + k, loadv<W>(xm + k));
    for (; k < K; ++k) store(o + k, xm[k]);
  }
}

// xr[m, k] = x[m, k] rounded to bf16, as fp32 (row stride K).
template <int W>
HAVOC_INLINE void round_bf16_rows(const float* x, int64_t M, int64_t ldx, int64_t K, float* xr) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * ldx;
    float* o = xr + m * K;
    int64_t k = 0;
    for (; k + W <= K; k += W) storev<W>(o + k, as_stored<W, uint16_t>(loadv<W>(xm + k)));
    for (; k < K; ++k) o[k] = as_stored<uint16_t>(xm[k]);
  }
}

// The value as it is, through a register the compiler cannot see into: a product passed through this is
// rounded to fp32 on its own, never fused with the addition that follows into one FMA (GCC contracts
// a * b + c by default wherever the target has FMA).
template <class T>
HAVOC_INLINE T rounded(T v) {
  asm("" : "+x"(v));
  return v;
}

// The int8 format's activation quantization (cpu_decode.h), per row and group of `group` inputs (a
// multiple of 64, so whole vectors but for the last group of a row). Rounding to nearest even by adding and
// subtracting 1.5 * 2^23 (|x * inv| <= 127.5 here), which is what nearbyint does in the default mode — of
// x * inv rounded to fp32 first, as the formula says: fused into an FMA, the exact product of an x whose
// fp32 product is a tie (27.5) but whose exact one is not (27.4999…) rounded the other way (27, not 28).
template <int W>
HAVOC_INLINE void quantize_rows_impl(const float* x, int64_t M, int64_t ldx, int64_t cols, int64_t group,
                                     int64_t ldq, int8_t* q, float* scales, int32_t* corr) {
  using F = typename V<W>::f;
  using I = typename V<W>::i;
  const int64_t ng = (cols + group - 1) / group;
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * ldx;
    int8_t* qm = q + m * ldq;
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t k0 = g * group, k1 = std::min(cols, k0 + group);
      F vmax{};
      int64_t k = k0;
      for (; k + W <= k1; k += W) {
        const F v = loadv<W>(xm + k);
        const F a = v < 0.0f ? -v : v;
        vmax = a > vmax ? a : vmax;
      }
      float amax = hmax<W>(vmax);
      for (; k < k1; ++k) amax = std::max(amax, std::fabs(xm[k]));
      const float s = amax / 127.0f;
      const float inv = s > 0.0f ? 1.0f / s : 0.0f;
      I vsum{};
      k = k0;
      for (; k + W <= k1; k += W) {
        F r = (rounded(loadv<W>(xm + k) * inv) + 12582912.0f) - 12582912.0f;
        r = r > 127.0f ? splat<W>(127.0f) : r;
        r = r < -127.0f ? splat<W>(-127.0f) : r;
        const I qi = __builtin_convertvector(r, I);
        vsum += qi;
        typedef int8_t B __attribute__((vector_size(W)));
        const B qb = __builtin_convertvector(qi, B);
        std::memcpy(qm + k, &qb, sizeof qb);
      }
      int32_t sum = 0;
      for (int l = 0; l < W; ++l) sum += vsum[l];
      for (; k < k1; ++k) {
        const float r = std::min(127.0f, std::max(-127.0f, (rounded(xm[k] * inv) + 12582912.0f) - 12582912.0f));
        qm[k] = static_cast<int8_t>(r);
        sum += qm[k];
      }
      scales[m * ng + g] = s;
      corr[m * ng + g] = -128 * sum;
    }
    for (int64_t k = cols; k < ldq; ++k) qm[k] = 0;
  }
}

// One row of xd (GemmArgs) for W lanes from `src` (cols values, natural order; zero past cols).
template <int W>
HAVOC_INLINE void order_row(const float* src, int64_t cols, int64_t ld, float* xd) {
  for (int64_t k = 0; k < ld; k += 4 * W) {
    if (k + 4 * W <= cols) {
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < W; ++l) xd[k + c * W + l] = src[k + 4 * l + c];
    } else {
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < W; ++l) {
          const int64_t j = k + 4 * l + c;
          xd[k + c * W + l] = j < cols ? src[j] : 0.0f;
        }
    }
  }
}

// --- small elementwise kernels of the decode step (csrc/elementwise.h), fp32 rows ----------------------
// Row by row; the variant's wrappers (HAVOC_WIDEN_KERNELS) split the rows of a batched step over the threads
// from kRowsParallel elements (at 32 rows of SmolLM2 the norms, RoPE and SwiGLU took 3.5 ms of a 51 ms step
// on one thread), as csrc/elementwise.cpp's do. Each row is computed alone either way.
constexpr int64_t kRowsParallel = int64_t{1} << 14;

template <int W>
HAVOC_INLINE void rms_norm_impl(const float* x, const float* g, float* y, int64_t D, float eps) {
  rms_norm_rows<W, float, float>(x, D, g, y, D, 1, D, eps);
}

// out[i] = silu(gu[i]) * gu[F + i].
template <int W>
HAVOC_INLINE void swiglu_impl(const float* gu, float* out, int64_t Fh) {
  swiglu_rows<W, float>(gu, 2 * Fh, gu + Fh, 2 * Fh, out, Fh, 1, Fh);
}

// RoPE in place on the first `heads` heads of a row x by cos/sin cs, sn.
template <int W>
HAVOC_INLINE void rope_impl(float* x, int64_t heads, int64_t hd, const float* cs, const float* sn, int64_t rot) {
  rope_heads<W, float>(x, hd, x, hd, heads, hd, cs, sn, rot);
}

// Variant::int8_dot: how the int8 x int8 kernel reads the quantized activations.
constexpr int kInt8Bytes = 1;  // bytes (vpdpbusd)
constexpr int kInt8Words = 2;  // widened to 16-bit words once per product (vpmaddwd)

struct Variant;
using RowsFn = void (*)(const GemmArgs&, int64_t, int64_t);
using NormFn = void (*)(const float*, const float*, float*, int64_t, int64_t, float);
using SwigluFn = void (*)(const float*, float*, int64_t, int64_t);
using RopeFn = void (*)(float*, int64_t, int64_t, int64_t, int64_t, const float*, const float*, int64_t);
using PrepareFn = void (*)(const Variant&, GemmArgs&, const float*, int64_t, Workspace&);
using QuantizeFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int8_t*, float*, int32_t*);

// One kernel variant: its products by weight format, its elementwise kernels, and what prepare() gives it.
struct Variant {
  const char* name;
  int width;       // fp32 lanes of its vectors
  bool bf16_dot;   // bf16 weights meet bf16 activations (xb) instead of widened pairs (xp)
  int int8_dot;    // int8 weights meet int8 activations: kInt8Bytes (xq) or kInt8Words (xq and xw); 0: widened
                   // fp32 ones (xd)
  bool amx;        // B tiles of x (xt) from kAmxMinRows rows
  RowsFn rows[4];  // by WeightDType
  NormFn rms_norm;
  SwigluFn swiglu;
  RopeFn rope;
  PrepareFn prepare;
  QuantizeFn quantize;
  const char* attention;  // the paged-attention variant of the same vector width
};

// For bf16 weights on the widening variants: x's 32-column blocks with the even columns first, then the
// odd ones (xp[k0 + j] = x[k0 + 2j], xp[k0 + 16 + j] = x[k0 + 2j + 1]); columns past the last whole block
// are left out (the kernel reads those from x). One layout for every vector width W: the 2W columns of a
// W-lane weight load starting at k0 + 2Wc have their even columns at xp[k0 + Wc ...] and odd ones 16 further.
HAVOC_INLINE void pair_columns(GemmArgs& a, AlignedVector<float>& buf) {
  const int64_t K = a.w.cols, blocks = K / 32;
  if (blocks == 0) return;
  a.ldxp = blocks * 32;
  float* out = grow(buf, a.M * a.ldxp);
  for (int64_t m = 0; m < a.M; ++m) {
    const float* x = a.x + m * a.ldx;
    float* xp = out + m * a.ldxp;
    for (int64_t k0 = 0; k0 < a.ldxp; k0 += 32)
      for (int j = 0; j < 16; ++j) xp[k0 + j] = x[k0 + 2 * j], xp[k0 + 16 + j] = x[k0 + 2 * j + 1];
  }
  a.xp = out;
}

// AMX B tiles of 32-bit words (a bf16 pair or an int8 quad): word p of row j of a block of 16 activation
// rows for step s of 16 words: xt[((b * steps + s) * 16 + p) * 16 + j] = src[(16 b + j) * ld_words + 16 s + p],
// zero past row M.
HAVOC_INLINE void amx_tiles(const void* src, int64_t M, int64_t ld_words, int64_t steps, uint32_t* xt) {
  const int64_t mb = (M + 15) / 16;
  std::memset(xt, 0, static_cast<size_t>(mb * steps * 1024));
  for (int64_t m = 0; m < M; ++m) {
    const char* row = static_cast<const char*>(src) + 4 * m * ld_words;
    uint32_t* out = xt + (m / 16) * steps * 256 + m % 16;
    for (int64_t w = 0; w < steps * 16; ++w) std::memcpy(&out[(w / 16) * 256 + (w % 16) * 16], row + 4 * w, 4);
  }
}

// x (M rows, stride ldx) into the fields of `a` that v's kernel for a.w's format reads.
template <int W>
HAVOC_INLINE void prepare_impl(const Variant& v, GemmArgs& a, const float* x, int64_t ldx, Workspace& ws) {
  const int64_t M = a.M, K = a.w.cols;
  switch (a.w.dtype) {
    case WeightDType::kFloat32:
      a.x = x, a.ldx = ldx;
      return;
    case WeightDType::kBFloat16: {
      if (v.bf16_dot) {
        const int64_t Kp = (K + 1) / 2 * 2;  // rows of whole pairs (32-bit words) for the AMX tiles
        uint16_t* xb = grow(ws.h, M * Kp);
        to_bf16_rows<W>(x, M, ldx, K, xb);
        a.xb = xb, a.ldxb = K;
        if (v.amx && K >= 32) {  // every M: an output's sum is the tiles' whatever the batch (int8 below)
          if (Kp != K) {  // odd K: re-lay rows with stride Kp (the words of the whole steps never read the pad)
            for (int64_t m = M - 1; m > 0; --m) std::memmove(xb + m * Kp, xb + m * K, sizeof(uint16_t) * K);
            a.ldxb = Kp;
          }
          const int64_t steps = K / 32;
          uint32_t* xt = reinterpret_cast<uint32_t*>(grow(ws.t, (M + 15) / 16 * steps * 1024));
          amx_tiles(xb, M, Kp / 2, steps, xt);
          a.xt = xt;
        }
      } else {
        float* xr = grow(ws.f0, M * K);
        round_bf16_rows<W>(x, M, ldx, K, xr);
        a.x = xr, a.ldx = K;
        pair_columns(a, ws.f1);
      }
      return;
    }
    case WeightDType::kInt8:
    case WeightDType::kInt8WeightOnly: {
      const int64_t ld = a.w.ld(), ng = a.w.groups(), G = a.w.group;
      float* xd = nullptr;
      if (a.w.dtype == WeightDType::kInt8) {
        int8_t* q = grow(ws.q, M * ld);
        float* s = grow(ws.s, M * ng);
        int32_t* c = grow(ws.c, M * ng);
        quantize_rows_impl<W>(x, M, ldx, K, G, ld, q, s, c);
        if (v.int8_dot && a.w.interleaved) {  // check_reads: v reads the layout (and the group is 64)
          const int64_t nb = il_blocks(ng), ldl = 16 * nb;
          int8_t* qi = grow(ws.qi, M * ld);
          float* sl = grow(ws.sl, M * ldl);
          int32_t* cl = grow(ws.cl, M * ldl);
          for (int64_t r = 0; r < M; ++r) {
            interleave_row(reinterpret_cast<const uint8_t*>(q + r * ld), reinterpret_cast<uint8_t*>(qi + r * ld), ng, false);
            for (int64_t c0 = 0, b = 0, B; c0 < ng; c0 += B, ++b) {
              B = il_block(c0, ng);
              for (int64_t l = 0; l < 16; ++l) {
                sl[r * ldl + 16 * b + l] = s[r * ng + c0 + (l & (B - 1))];  // B: a power of two
                cl[r * ldl + 16 * b + l] = l < B ? c[r * ng + c0 + l] : 0;
              }
            }
          }
          a.xq = qi, a.ldxq = ld, a.xs = sl, a.xc = cl, a.ldxs = ldl;
          return;
        }
        if (v.int8_dot) {
          a.xq = q, a.ldxq = ld, a.xs = s, a.xc = c, a.ldxs = ng;
          if (v.int8_dot == kInt8Words) {
            int16_t* xw = grow(ws.w, M * ld);
            for (int64_t j = 0; j < M * ld; ++j) xw[j] = q[j];
            a.xw = xw;
          }
          if (v.amx && M >= kAmxMinRows) {
            const int64_t steps = ld / 64, Mp = (M + 15) / 16 * 16;
            uint32_t* xt = reinterpret_cast<uint32_t*>(grow(ws.t, Mp / 16 * steps * 1024));
            amx_tiles(q, M, ld / 4, steps, xt);
            float* xst = grow(ws.st, ng * Mp);
            int32_t* xct = grow(ws.ct, ng * Mp);
            for (int64_t g = 0; g < ng; ++g)
              for (int64_t m = 0; m < Mp; ++m) {
                xst[g * Mp + m] = m < M ? s[m * ng + g] : 0.0f;
                xct[g * Mp + m] = m < M ? c[m * ng + g] : 0;
              }
            a.xt = xt, a.xst = xst, a.xct = xct, a.ldxst = Mp;
          }
          return;
        }
        // the widening kernel multiplies the round trip q * scale
        float* deq = grow(ws.f1, K);
        xd = grow(ws.f0, M * ld);
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t g = 0; g < ng; ++g) {
            const float sg = s[m * ng + g];
            for (int64_t k = g * G, k1 = std::min(K, k + G); k < k1; ++k) deq[k] = static_cast<float>(q[m * ld + k]) * sg;
          }
          order_row<W>(deq, K, ld, xd + m * ld);
        }
      } else {
        xd = grow(ws.f0, M * ld);
        for (int64_t m = 0; m < M; ++m) order_row<W>(x + m * ldx, K, ld, xd + m * ld);
      }
      a.xd = xd, a.ldxd = ld;
      return;
    }
  }
}

// The functions of one variant, compiled for its target with its vector width.
#define HAVOC_WIDEN_KERNELS(NAME, W, ATTR)                                                                     \
  ATTR void NAME##_rows_f32(const GemmArgs& a, int64_t n0, int64_t n1) { gemm_rows<W, float>(a, n0, n1); }     \
  [[maybe_unused]] ATTR void NAME##_rows_bf16(const GemmArgs& a, int64_t n0, int64_t n1) {                     \
    gemm_rows<W, uint16_t>(a, n0, n1);                                                                         \
  }                                                                                                            \
  ATTR void NAME##_rows_int8(const GemmArgs& a, int64_t n0, int64_t n1) { gemm_rows_int8_widen<W>(a, n0, n1); } \
  ATTR void NAME##_rms_norm(const float* x, const float* g, float* y, int64_t M, int64_t D, float eps) {       \
    _Pragma("omp parallel for schedule(static) if (M * D >= kRowsParallel)")                                   \
    for (int64_t m = 0; m < M; ++m) rms_norm_impl<W>(x + m * D, g, y + m * D, D, eps);                         \
  }                                                                                                            \
  ATTR void NAME##_swiglu(const float* gu, float* out, int64_t M, int64_t Fh) {                                \
    _Pragma("omp parallel for schedule(static) if (M * 2 * Fh >= kRowsParallel)")                              \
    for (int64_t m = 0; m < M; ++m) swiglu_impl<W>(gu + m * 2 * Fh, out + m * Fh, Fh);                         \
  }                                                                                                            \
  ATTR void NAME##_rope(float* x, int64_t M, int64_t ldx, int64_t heads, int64_t hd, const float* cs,            \
                        const float* sn, int64_t rot) {                                                          \
    _Pragma("omp parallel for schedule(static) if (M * ldx >= kRowsParallel)")                                   \
    for (int64_t m = 0; m < M; ++m) rope_impl<W>(x + m * ldx, heads, hd, cs + m * rot, sn + m * rot, rot);       \
  }                                                                                                              \
  ATTR void NAME##_prepare(const Variant& v, GemmArgs& a, const float* x, int64_t ldx, Workspace& ws) {        \
    prepare_impl<W>(v, a, x, ldx, ws);                                                                         \
  }                                                                                                            \
  ATTR void NAME##_quantize(const float* x, int64_t M, int64_t ldx, int64_t cols, int64_t group, int64_t ldq,   \
                            int8_t* q, float* s, int32_t* c) {                                                 \
    quantize_rows_impl<W>(x, M, ldx, cols, group, ldq, q, s, c);                                               \
  }

HAVOC_WIDEN_KERNELS(scalar, 4, )
#ifdef HAVOC_X86_DISPATCH
HAVOC_WIDEN_KERNELS(avx2, 8, HAVOC_TARGET_AVX2)
HAVOC_WIDEN_KERNELS(avx512, 16, HAVOC_TARGET_AVX512)
HAVOC_TARGET_AVX2 void avx2_rows_int8_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  gemm_rows_int8_dot<MaddDot>(a, n0, n1);
}
#endif
#ifdef HAVOC_DOT_VARIANTS
HAVOC_WIDEN_KERNELS(avx_vnni, 8, HAVOC_TARGET_AVX_VNNI)
HAVOC_WIDEN_KERNELS(avx512_vnni, 16, HAVOC_TARGET_AVX512_VNNI)
HAVOC_WIDEN_KERNELS(avx512_bf16, 16, HAVOC_TARGET_AVX512_BF16)
HAVOC_TARGET_AVX_VNNI void avx_vnni_rows_int8_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  gemm_rows_int8_dot<VnniDot<8>>(a, n0, n1);
}
HAVOC_TARGET_AVX512_VNNI void avx512_vnni_rows_int8_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  if (a.w.interleaved) return gemm_rows_int8_il(a, n0, n1);
  gemm_rows_int8_dot<VnniDot<16>>(a, n0, n1);
}
HAVOC_TARGET_AVX512_BF16 void avx512_bf16_rows_int8_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  if (a.w.interleaved) return gemm_rows_int8_il(a, n0, n1);
  gemm_rows_int8_dot<VnniDot<16>>(a, n0, n1);
}
HAVOC_TARGET_AVX512_BF16 void avx512_bf16_rows_bf16_dot(const GemmArgs& a, int64_t n0, int64_t n1) {
  gemm_rows_bf16_dot(a, n0, n1);
}
HAVOC_TARGET_AMX void amx_rows_bf16(const GemmArgs& a, int64_t n0, int64_t n1) {
  if (a.xt == nullptr) return gemm_rows_bf16_dot(a, n0, n1);
  amx_rows_bf16_impl(a, n0, n1);
}
HAVOC_TARGET_AMX void amx_rows_int8(const GemmArgs& a, int64_t n0, int64_t n1) {
  if (a.xt == nullptr) return gemm_rows_int8_dot_exact(a, n0, n1);
  amx_rows_int8_impl(a, n0, n1);
}
#endif
#undef HAVOC_WIDEN_KERNELS

#ifdef HAVOC_DOT_VARIANTS
// vdpbf16ps's issue rate on this core as a fraction of the FMA's (zmm, 12 independent chains each, the best
// of 5 alternating runs of 16K rounds, ~1 ms once per process).
HAVOC_TARGET_AVX512_BF16 double measure_bf16_dot_rate() {
  // 12 independent chains on zeroed registers, 16K rounds per timing, in assembly so that the compiler
  // neither folds nor spills them.
#define HAVOC_CHAINS(OP)                                                                                     \
  OP " %%zmm0, %%zmm1, %%zmm2\n\t" OP " %%zmm0, %%zmm1, %%zmm3\n\t" OP " %%zmm0, %%zmm1, %%zmm4\n\t"            \
  OP " %%zmm0, %%zmm1, %%zmm5\n\t" OP " %%zmm0, %%zmm1, %%zmm6\n\t" OP " %%zmm0, %%zmm1, %%zmm7\n\t"            \
  OP " %%zmm0, %%zmm1, %%zmm8\n\t" OP " %%zmm0, %%zmm1, %%zmm9\n\t" OP " %%zmm0, %%zmm1, %%zmm10\n\t"           \
  OP " %%zmm0, %%zmm1, %%zmm11\n\t" OP " %%zmm0, %%zmm1, %%zmm12\n\t" OP " %%zmm0, %%zmm1, %%zmm13\n\t"
#define HAVOC_TIMED_LOOP(OP)                                                                                 \
  [] {                                                                                                        \
    int64_t n = 1 << 14;                                                                                      \
    const auto t0 = std::chrono::steady_clock::now();                                                         \
    asm volatile("vpxord %%zmm0, %%zmm0, %%zmm0\n\tvmovaps %%zmm0, %%zmm1\n\t"                                \
                 "vmovaps %%zmm0, %%zmm2\n\tvmovaps %%zmm0, %%zmm3\n\tvmovaps %%zmm0, %%zmm4\n\t"             \
                 "vmovaps %%zmm0, %%zmm5\n\tvmovaps %%zmm0, %%zmm6\n\tvmovaps %%zmm0, %%zmm7\n\t"             \
                 "vmovaps %%zmm0, %%zmm8\n\tvmovaps %%zmm0, %%zmm9\n\tvmovaps %%zmm0, %%zmm10\n\t"            \
                 "vmovaps %%zmm0, %%zmm11\n\tvmovaps %%zmm0, %%zmm12\n\tvmovaps %%zmm0, %%zmm13\n"            \
                 "1:\n\t" HAVOC_CHAINS(OP) "dec %0\n\tjnz 1b\n\tvzeroupper"                                   \
                 : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",   \
                   "xmm10", "xmm11", "xmm12", "xmm13", "cc");                                                 \
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();                      \
  }()
  double fma = 1e30, dot = 1e30;
  for (int run = 0; run < 5; ++run) {  // alternating, the best of each
    fma = std::min(fma, HAVOC_TIMED_LOOP("vfmadd231ps"));
    dot = std::min(dot, HAVOC_TIMED_LOOP("vdpbf16ps"));
  }
#undef HAVOC_TIMED_LOOP
#undef HAVOC_CHAINS
  return fma / dot;
}
#endif

#define HAVOC_VARIANT(NAME, W, BF16, INT8, AMX, ROWS_BF16, ROWS_INT8, ATTN)                                  \
  Variant {                                                                                                   \
    #NAME, W, BF16, INT8, AMX, {NAME##_rows_f32, ROWS_BF16, ROWS_INT8, NAME##_rows_int8}, NAME##_rms_norm,       \
        NAME##_swiglu, NAME##_rope, NAME##_prepare, NAME##_quantize, ATTN                                     \
  }

// Narrowest first; "auto" takes the last this CPU runs. The amx variant's vector parts are avx512_bf16's.
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = [] {
    std::vector<Variant> out;
    out.push_back(HAVOC_VARIANT(scalar, 4, false, 0, false, scalar_rows_bf16, scalar_rows_int8, "scalar"));
#ifdef HAVOC_X86_DISPATCH
    out.push_back(HAVOC_VARIANT(avx2, 8, false, kInt8Words, false, avx2_rows_bf16, avx2_rows_int8_dot, "avx2"));
#ifdef HAVOC_DOT_VARIANTS
    out.push_back(HAVOC_VARIANT(avx_vnni, 8, false, kInt8Bytes, false, avx_vnni_rows_bf16, avx_vnni_rows_int8_dot, "avx2"));
#endif
    out.push_back(HAVOC_VARIANT(avx512, 16, false, 0, false, avx512_rows_bf16, avx512_rows_int8, "avx512"));
#ifdef HAVOC_DOT_VARIANTS
    out.push_back(HAVOC_VARIANT(avx512_vnni, 16, false, kInt8Bytes, false, avx512_vnni_rows_bf16, avx512_vnni_rows_int8_dot,
                                "avx512"));
    out.push_back(HAVOC_VARIANT(avx512_bf16, 16, true, kInt8Bytes, false, avx512_bf16_rows_bf16_dot,
                                avx512_bf16_rows_int8_dot, "avx512"));
    Variant amx = HAVOC_VARIANT(avx512_bf16, 16, true, kInt8Bytes, true, amx_rows_bf16, amx_rows_int8, "avx512");
    amx.name = "amx";
    out.push_back(amx);
#endif
#endif
    return out;
  }();
  return v;
}
#undef HAVOC_VARIANT

// Every variant name, compiled or not, with the CPU features it needs (as cpu_features() names them).
struct VariantNeeds {
  const char* name;
  std::vector<const char*> features;
};
const std::vector<VariantNeeds>& variant_needs() {
  static const std::vector<VariantNeeds> v = {
      {"scalar", {}},
      {"avx2", {"avx2", "fma"}},
      {"avx_vnni", {"avx2", "fma", "avx_vnni"}},
      {"avx512", {"avx512f", "avx512bw", "avx512vl"}},
      {"avx512_vnni", {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}},
      {"avx512_bf16", {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}},
      {"amx", {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}},
  };
  return v;
}

std::string missing(const std::string& name) {
  const auto& needs = variant_needs();
  const auto it = std::find_if(needs.begin(), needs.end(), [&](const VariantNeeds& n) { return name == n.name; });
  if (it == needs.end()) return "unknown kernel variant";
  const auto& vs = variants();
  if (std::none_of(vs.begin(), vs.end(), [&](const Variant& v) { return name == v.name; }))
    return "not compiled into this build (the x86-64 dot-product variants need GCC 12 or newer on Linux)";
  std::string lacks;
  for (const char* f : it->features)
    if (!has_cpu_feature(f)) lacks += (lacks.empty() ? "" : ", ") + std::string(f);
  if (!lacks.empty()) return "this CPU lacks " + lacks;
#ifdef HAVOC_DOT_VARIANTS
  if (name == "amx" && !amx_permitted()) return "the OS refused this process the AMX tile state (arch_prctl)";
#endif
  return "";
}

const Variant& variant_for(const std::string& isa) {
  const auto& vs = variants();
  if (isa == "auto") {  // the widest this CPU runs, found once, without vdpbf16ps where it does not pay
    static const Variant* best = [&vs] {
      for (auto it = vs.rbegin(); it != vs.rend(); ++it)
        if (missing(it->name).empty() && (!it->bf16_dot || it->amx || bf16_dot_pays())) return &*it;
      return &vs.front();
    }();
    return *best;
  }
  const std::string name = isa == "neon" ? "scalar" : isa;
  const std::string why = missing(name);
  if (!why.empty()) throw std::invalid_argument("kernel variant '" + isa + "' is not available: " + why);
  return *std::find_if(vs.begin(), vs.end(), [&](const Variant& v) { return name == v.name; });
}

void check_weight(const WeightView& w, const char* what) {
  const std::string name(what);
  if (w.data == nullptr || w.rows < 1 || w.cols < 1)
    throw std::invalid_argument(name + ": a weight needs at least one row and one column");
  if (w.int8()) {
    if (w.group < 64 || w.group % 64 != 0)
      throw std::invalid_argument(name + ": int8 group size must be a positive multiple of 64, got " +
                                  std::to_string(w.group));
    if (w.scales == nullptr) throw std::invalid_argument(name + ": int8 weights need their scales");
  }
  if (w.interleaved && (w.dtype != WeightDType::kInt8 || w.group != 64))
    throw std::invalid_argument(name + ": the interleaved layout is for int8 weights (int8 activations) in groups of "
                                "64, got " + (w.dtype == WeightDType::kInt8 ? "groups of " + std::to_string(w.group)
                                                                           : std::string("another format")));
}

bool reads_interleaved(const Variant& v) {
#ifdef HAVOC_DOT_VARIANTS
  return v.int8_dot == kInt8Bytes && v.width == 16 && !v.amx;
#else
  (void)v;
  return false;
#endif
}

// An interleaved weight on a variant that reads only row-major rows: an error, never wrong sums.
void check_reads(const Variant& v, const WeightView& w, const std::string& what) {
  if (w.interleaved && !reads_interleaved(v))
    throw std::invalid_argument(what + ": int8 weights in the interleaved layout are read by the avx512_vnni and "
                                "avx512_bf16 variants only, not '" + std::string(v.name) + "'");
}

// Products of up to this many activation rows give each thread one contiguous run of weight rows. At 8
// rows the stream still bounds a step: batch-8 decode on the Ice Lake Xeon, four pairs of runs alternating
// 1 and 8: bf16 394-405 -> 405-420 tok/s (every pair), int8 537-552 -> 531-572, fp32 within noise (+4% to -3%).
constexpr int64_t kStaticRows = 8;

// Weight rows per work item: contiguous stretches long enough for the prefetchers (64 rows of 576 fp32
// inputs = 144 KB), many enough to balance 2-16 threads.
constexpr int64_t kChunk = 64;

// The arguments of the product y (=|+=) x @ W.T of M activation rows, x prepared for the variant's kernel
// in the calling thread's workspace (which the product's threads then read; a thread prepares one product
// at a time).
GemmArgs prepared(const Variant& v, const float* x, int64_t M, int64_t ldx, const WeightView& w, float* y,
                  int64_t ldy, bool accumulate) {
  thread_local Workspace ws;
  GemmArgs a;
  a.M = M, a.w = w, a.y = y, a.ldy = ldy, a.accumulate = accumulate;
  v.prepare(v, a, x, ldx, ws);
  return a;
}

// The product y (=|+=) x @ W.T: prepares x for the variant's kernel, then splits W's rows over threads.
void run_linear(const Variant& v, const float* x, int64_t M, int64_t ldx, const WeightView& w, float* y, int64_t ldy,
                bool accumulate) {
  const GemmArgs a = prepared(v, x, M, ldx, w, y, ldy, accumulate);
  const RowsFn rows = v.rows[static_cast<int>(w.dtype)];
  const int64_t N = w.rows;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  // NOTE: below ~64K multiply-adds (the tiny test model) one thread beats waking the team.
  const bool parallel = chunks > 1 && N * w.cols * M >= (int64_t{1} << 16);
  if (!parallel) return rows(a, 0, N);
  // Up to kStaticRows activation rows the step is a stream over W, and each thread streams one contiguous
  // part of it (static: thread t takes the t-th run of chunks). Dealt out one chunk at a time, a thread's
  // stream jumped every 64 rows (37-74 KB of SmolLM2's layers) and its prefetchers started over: bf16
  // batch-1 decode on the Zen 4 EPYC went from 90-95 to 110-117 tok/s (separate processes alternating);
  // int8 within noise. More rows keep the dynamic chunks (their tiles are bound by arithmetic, not by the
  // stream, and a thread the VM slows down gets fewer of them).
  if (M <= kStaticRows) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) rows(a, c * kChunk, std::min(N, (c + 1) * kChunk));
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) rows(a, c * kChunk, std::min(N, (c + 1) * kChunk));
}

void run_linear_argmax(const Variant& v, const float* x, int64_t M, int64_t ldx, const WeightView& w, int64_t* index,
                       float* value) {
  const GemmArgs a = prepared(v, x, M, ldx, w, nullptr, 0, false);  // each thread's tile buffer is its y
  const RowsFn rows = v.rows[static_cast<int>(w.dtype)];
  const int64_t N = w.rows;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  const bool parallel = chunks > 1 && N * w.cols * M >= (int64_t{1} << 16);
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
    auto chunk = [&](int64_t c) {  // a thread's chunks come in increasing order: '>' keeps the first
      const int64_t n0 = c * kChunk, n1 = std::min(N, n0 + kChunk);
      t.y_col0 = n0;
      rows(t, n0, n1);
      for (int64_t m = 0; m < M; ++m) {
        const float* ym = buf.data() + m * kChunk;
        for (int64_t j = 0; j < n1 - n0; ++j)
          if (ym[j] > best[m]) best[m] = ym[j], at[m] = n0 + j;
      }
    };
    if (M <= kStaticRows) {  // one contiguous stream per thread, as in run_linear
#pragma omp for schedule(static)
      for (int64_t c = 0; c < chunks; ++c) chunk(c);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < chunks; ++c) chunk(c);
    }
#pragma omp critical(havoc_linear_argmax)
    for (int64_t m = 0; m < M; ++m)
      if (at[m] >= 0 && (index[m] < 0 || best[m] > value[m] || (best[m] == value[m] && at[m] < index[m])))
        index[m] = at[m], value[m] = best[m];
  }
  for (int64_t m = 0; m < M; ++m)
    if (index[m] < 0) index[m] = 0;  // every logit NaN (or -inf): say 0 rather than an invalid id
}

// --- one activation row in one parallel region (Decoder::step at batch 1) -------------------------------
// A batch-1 step is 4 products per layer with serial work between them (the norms, RoPE, the K/V writes,
// attention): as separate parallel regions, each product paid a fork and a join (1.5-3 us on the 2-core
// VMs; SmolLM2's wo streams in ~10-20 us) and the memory idled while one thread ran attention. In one
// region the threads meet at barriers, and while thread 0 runs attention the others read the start of
// their share of wo into their caches; that share then costs them less, so the split of wo moves rows to
// thread 0 (team_part). Which thread computes a row never changes its bits (a row's sum is computed the
// same way in any tile: for_tiles).

// Weight rows are split at multiples of this (AMX's bf16 tiles hold 16 rows).
constexpr int64_t kPartRows = 16;
// At most this many bytes of a weight are read ahead per thread (within the L2 caches of the CPUs seen:
// 1 MiB on Zen 4, 1.25 MiB on Ice Lake / Sapphire Rapids servers).
constexpr int64_t kWarmBytes = int64_t{512} << 10;
// What a row read ahead costs the product, relative to one read from memory (its arithmetic and an L2 read).
constexpr double kWarmCost = 0.25;

// Spins before a waiting thread yields its core (a worker it waits for may have none: more threads than cores).
constexpr int kSpins = 1 << 14;

HAVOC_INLINE void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int64_t weight_row_bytes(const WeightView& w) {
  switch (w.dtype) {
    case WeightDType::kFloat32: return w.cols * 4;
    case WeightDType::kBFloat16: return w.cols * 2;
    default: return w.ld();
  }
}

// Thread t's even share of N rows out of T, at multiples of kPartRows.
int64_t even_split(int64_t N, int64_t t, int64_t T) {
  return std::min(N, (N * t / T + kPartRows / 2) / kPartRows * kPartRows);
}

// Reads rows [r0, r1) of w (a load per 64-byte line: the hardware prefetchers follow the stream) until
// `flag` reaches `until`; returns the rows read.
int64_t warm_rows(const WeightView& w, int64_t r0, int64_t r1, const std::atomic<int64_t>& flag, int64_t until) {
  const int64_t row_bytes = weight_row_bytes(w);
  r1 = std::min(r1, r0 + std::max<int64_t>(1, kWarmBytes / row_bytes));
  const char* p = static_cast<const char*>(w.data) + r0 * row_bytes;
  uint32_t sink = 0;
  int64_t r = r0;
  for (; r < r1 && flag.load(std::memory_order_relaxed) < until; ++r, p += row_bytes) {
    for (int64_t b = 0; b < row_bytes; b += 64) {
      uint32_t v;
      std::memcpy(&v, p + b, sizeof v);
      sink += v;
    }
  }
  asm volatile("" : : "r"(sink));  // the loads stay
  return r - r0;
}

// Thread t's rows [first, second) of an N-row product after the threads t >= 1 read ahead `warm[t]` rows
// from the start of their even share: each share holds the same cost, a row read ahead costing kWarmCost.
std::pair<int64_t, int64_t> team_part(int64_t N, int t, int T, const int64_t* warm) {
  auto cost_before = [&](int64_t x) {  // the cost of rows [0, x)
    double c = static_cast<double>(x);
    for (int u = 1; u < T; ++u) {
      const int64_t s = even_split(N, u, T), e = s + warm[u];
      c -= (1.0 - kWarmCost) * static_cast<double>(std::max<int64_t>(0, std::min(x, e) - s));
    }
    return c;
  };
  const double total = cost_before(N);
  auto boundary = [&](int u) -> int64_t {  // the first multiple of kPartRows where the cost reaches u / T
    if (u <= 0) return 0;
    if (u >= T) return N;
    const double target = total * u / T;
    int64_t lo = 0, hi = (N + kPartRows - 1) / kPartRows;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (cost_before(std::min(N, mid * kPartRows)) < target) lo = mid + 1; else hi = mid;
    }
    return std::min(N, lo * kPartRows);
  };
  return {boundary(t), boundary(t + 1)};
}

// y[n0:n1] (=|+=) x @ W[n0:n1].T for one activation row, on the calling thread.
void product_rows(const Variant& v, const float* x, int64_t ldx, const WeightView& w, float* y, bool accumulate,
                  int64_t n0, int64_t n1) {
  const GemmArgs a = prepared(v, x, 1, ldx, w, y, w.rows, accumulate);
  if (n1 > n0) v.rows[static_cast<int>(w.dtype)](a, n0, n1);
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
    case WeightDType::kInt8:
    case WeightDType::kInt8WeightOnly: {
      const uint8_t* r = static_cast<const uint8_t*>(e.data) + id * e.ld();
      thread_local std::vector<uint8_t> natural;
      if (e.interleaved) {
        interleave_row(r, grow(natural, e.ld()), e.ld() / 64, true);
        r = natural.data();
      }
      const float* s = e.scales + id * e.groups();
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<float>(static_cast<int>(r[d]) - 128) * s[d / e.group];
      break;
    }
  }
}

}  // namespace

double bf16_dot_rate() {
  static const double rate = [] {
#ifdef HAVOC_DOT_VARIANTS
    if (missing("avx512_bf16").empty()) return measure_bf16_dot_rate();
#endif
    return 0.0;
  }();
  return rate;
}

bool bf16_dot_pays() { return bf16_dot_rate() >= kBf16DotPays; }


std::vector<std::string> linear_variants() {
  std::vector<std::string> out;
  for (const auto& n : variant_needs()) out.emplace_back(n.name);
  return out;
}

std::vector<std::string> linear_isas() {
  std::vector<std::string> out;
  for (const auto& v : variants())
    if (missing(v.name).empty()) out.emplace_back(v.name);
  return out;
}

std::string linear_variant_missing(const std::string& variant) { return missing(variant); }

std::string linear_auto() { return variant_for("auto").name; }

std::string attention_isa_for(const std::string& variant) { return variant_for(variant).attention; }

int batch1_streams() {
  static const int by_vendor = vendor_batch1_streams();
  const int s = g_batch1_streams.load(std::memory_order_relaxed);
  return s ? s : by_vendor;
}

void set_batch1_streams(int streams) {
  if (streams != 0 && streams != 1 && streams != 4)
    throw std::invalid_argument("batch-1 weight streams must be 1, 4 or 0 (by the CPU), got " + std::to_string(streams));
  g_batch1_streams.store(streams, std::memory_order_relaxed);
}

std::string linear_kernel(const std::string& variant, WeightDType dtype) {
  const Variant& v = variant_for(variant);
  const std::string lanes = std::to_string(v.width) + " fp32 lanes";
  const std::string tiles = "AMX tiles from " + std::to_string(kAmxMinRows) + " activation rows, ";
  switch (dtype) {
    case WeightDType::kFloat32:
      return "fp32 FMAs, " + lanes;
    case WeightDType::kBFloat16:
      if (v.amx) return "AMX tiles (tdpbf16ps)";
      if (v.bf16_dot) return "vdpbf16ps, " + lanes;
      return "bf16 widened to fp32 by shifts, FMAs, " + lanes;
    case WeightDType::kInt8:
      if (v.amx) return tiles + "vpdpbusd below (same sums); activations quantized per row and group";
      if (reads_interleaved(v))
        return "vpdpbusd, " + lanes + ", over groups of 64 interleaved in blocks of 16 (the decoder's layout; "
               "row-major bytes: one group a vector); activations quantized per row and group";
      if (v.int8_dot)
        return std::string(v.int8_dot == kInt8Words ? "vpmaddwd on bytes widened to 16 bits" : "vpdpbusd") +
               ", " + lanes + "; activations quantized per row and group";
      return "int8 widened to fp32 times the activations' int8 round trip, " + lanes;
    case WeightDType::kInt8WeightOnly:
      return "int8 widened to fp32, FMAs, " + lanes;
  }
  return "";
}

std::vector<std::string> decoder_features() {
  return {"block:pre_norm",   "norm:rms",        "embedding:lookup", "attention:gqa",   "attention:fused_qkv",
          "attention:causal", "rope:rotate_half", "rope:partial",    "mlp:swiglu",      "head:tied",
          "head:untied",      "weights:float32", "weights:bfloat16", "kv:float32",      "kv:bfloat16"};
}

void linear(const float* x, int64_t M, int64_t ldx, const WeightView& w, float* y, int64_t ldy, bool accumulate,
            const std::string& isa) {
  check_weight(w, "weight");
  if (M < 0) throw std::invalid_argument("negative number of rows");
  if (ldx < w.cols || ldy < w.rows) throw std::invalid_argument("row strides shorter than the rows");
  const Variant& v = variant_for(isa);
  check_reads(v, w, "weight");
  if (M == 0) return;
  run_linear(v, x, M, ldx, w, y, ldy, accumulate);
}

void linear_argmax(const float* x, int64_t M, int64_t ldx, const WeightView& w, int64_t* index, float* value,
                   const std::string& isa) {
  check_weight(w, "weight");
  if (M < 0) throw std::invalid_argument("negative number of rows");
  if (ldx < w.cols) throw std::invalid_argument("row stride shorter than the rows");
  const Variant& v = variant_for(isa);
  check_reads(v, w, "weight");
  if (M == 0) return;
  run_linear_argmax(v, x, M, ldx, w, index, value);
}

void interleave_int8_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t ld, bool inverse) {
  if (rows < 0 || ld < 64 || ld % 64) throw std::invalid_argument("int8 rows must be a positive multiple of 64 bytes");
  for (int64_t r = 0; r < rows; ++r) interleave_row(src + r * ld, dst + r * ld, ld / 64, inverse);
}

bool reads_interleaved(const std::string& variant) { return reads_interleaved(variant_for(variant)); }

int64_t collapse_hugepages(void* p, int64_t bytes) {
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  constexpr int kMadvCollapse = 25;  // MADV_COLLAPSE (Linux 6.1); older headers lack the name
  if (bytes <= 0) return 0;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p), end = begin + static_cast<uintptr_t>(bytes);
  auto collapse = [](uintptr_t lo, uintptr_t hi) {
    if (hi <= lo) return false;
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // keep them huge (khugepaged, later faults)
    return madvise(reinterpret_cast<void*>(lo), hi - lo, kMadvCollapse) == 0;
  };
  // The 2 MiB pages that cover the range, where they lie in one mapping (a heap allocation's neighbours
  // keep their values and addresses: only their page size changes); else the pages inside it.
  const uintptr_t lo_out = begin & ~(kHuge - 1), hi_out = (end + kHuge - 1) & ~(kHuge - 1);
  if (collapse(lo_out, hi_out)) return static_cast<int64_t>(hi_out - lo_out);
  const uintptr_t lo_in = (begin + kHuge - 1) & ~(kHuge - 1), hi_in = end & ~(kHuge - 1);
  return collapse(lo_in, hi_in) ? static_cast<int64_t>(hi_in - lo_in) : 0;
#else
  (void)p;
  (void)bytes;
  return 0;
#endif
}

void quantize_rows_int8(const float* x, int64_t M, int64_t ldx, int64_t cols, int64_t group, int8_t* q,
                        float* scales, int32_t* corrections) {
  if (group < 64 || group % 64) throw std::invalid_argument("int8 group size must be a positive multiple of 64");
  variant_for("auto").quantize(x, M, ldx, cols, group, (cols + 63) / 64 * 64, q, scales, corrections);
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
  const Variant& v = variant_for(isa_);  // throws for an unknown or unavailable variant now, not at the first step
  // every weight a step streams must be in a layout the variant reads (the embedding lookup reads either)
  auto expect = [&v](const WeightView& w, int64_t rows, int64_t cols, const std::string& what, bool streamed = true) {
    check_weight(w, what.c_str());
    if (streamed) check_reads(v, w, what);
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
  expect(embedding_, c.vocab_size, c.dim, "embedding", false);
  expect(head_, c.vocab_size, c.dim, "head");
  if (!final_norm_) throw std::invalid_argument("missing the final norm weight");
  // inv_freq as havoc.kernels.reference.rope_cos_sin computes it: 1 / theta ** (2i / rotary_dim) in fp32.
  for (int64_t i = 0; i < c.rotary_dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(c.rotary_dim);
    inv_freq_.push_back(1.0f / std::pow(static_cast<float>(c.rope_theta), e));
  }
}

void Decoder::step(const int64_t* tokens, const int64_t* positions, int64_t n, const int64_t* slots,
                   const int32_t* block_tables, int64_t table_width, const int32_t* lengths, float* logits,
                   int64_t* next_tokens, const int64_t* logit_rows, int64_t n_logit_rows,
                   const int64_t* argmax_rows, int64_t n_argmax_rows, const int64_t* prompt_runs,
                   int64_t n_prompt_runs) {
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
  // Prompt runs: rows [first, first + count) are consecutive tokens of one sequence (one block table,
  // lengths rising by one). Their attention runs as a prefill (csrc/attention.h), the other rows as decode
  // rows; which a row takes depends on the row alone (the caller marks a request's prompt tokens).
  std::vector<uint8_t> in_run(static_cast<size_t>(n), 0);
  if (n_prompt_runs < 0) throw std::invalid_argument("negative number of prompt runs");
  for (int64_t r = 0; r < n_prompt_runs; ++r) {
    const int64_t first = prompt_runs[2 * r], count = prompt_runs[2 * r + 1];
    if (count < 1 || first < 0 || first + count > n)
      throw std::out_of_range("prompt run " + std::to_string(r) + " (rows " + std::to_string(first) + " + " +
                              std::to_string(count) + ") is outside the step's [0, " + std::to_string(n) + ") rows");
    for (int64_t i = first; i < first + count; ++i) {
      if (in_run[i]) throw std::invalid_argument("prompt runs overlap at row " + std::to_string(i));
      in_run[i] = 1;
      if (i > first && (lengths[i] != lengths[i - 1] + 1 ||
                        !std::equal(block_tables + i * table_width, block_tables + (i + 1) * table_width,
                                    block_tables + first * table_width)))
        throw std::invalid_argument("prompt run " + std::to_string(r) + " is not consecutive tokens of one "
                                    "sequence at row " + std::to_string(i));
    }
  }
  const Variant& k = variant_for(isa_);
  const int64_t D = c.dim, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim, Fh = c.ffn_hidden;
  const int64_t ldq = (H + 2 * KV) * hd, rot = c.rotary_dim, half = rot / 2;
  // Work space: h, xn (n x D); qkv (n x ldq); attn (n x H hd); gu (n x 2F); act (n x F); cos, sin (n x rot),
  // each starting on a cache line (rows do where their length is a multiple of 16 floats).
  const auto line = [](int64_t floats) { return (floats + 15) / 16 * 16; };
  const int64_t sizes[] = {n * D, n * D, n * ldq, n * H * hd, n * 2 * Fh, n * Fh, n * rot, n * rot};
  int64_t need = 0;
  for (int64_t z : sizes) need += line(z);
  if (static_cast<int64_t>(work_.size()) < need) work_.resize(static_cast<size_t>(need));
  float* bufs[8];
  for (int64_t i = 0, at = 0; i < 8; at += line(sizes[i]), ++i) bufs[i] = work_.data() + at;
  float *h = bufs[0], *xn = bufs[1], *qkv = bufs[2], *attn = bufs[3], *gu = bufs[4], *act = bufs[5];
  float *cosv = bufs[6], *sinv = bufs[7];
  const bool bf16 = kv_dtype_ == KVDType::kBFloat16;
  const int64_t qo = (n * H * hd + 31) / 32 * 32;  // q, then out (bf16) from a cache line
  if (bf16 && static_cast<int64_t>(work_bf16_.size()) < 2 * qo) work_bf16_.resize(static_cast<size_t>(2 * qo));
  uint16_t* qb = work_bf16_.data();
  uint16_t* ob = bf16 ? qb + qo : nullptr;

  for (int64_t i = 0; i < n; ++i) {
    embed_row(embedding_, tokens[i], h + i * D);
    const float p = static_cast<float>(positions[i]);
    for (int64_t j = 0; j < half; ++j) {  // rotate-half: features j and half + j turn by the same angle
      const float ang = p * inv_freq_[j];
      cosv[i * rot + j] = cosv[i * rot + half + j] = std::cos(ang);
      sinv[i * rot + j] = sinv[i * rot + half + j] = std::sin(ang);
    }
  }

  const size_t es = dtype_size(kv_dtype_);
  const int64_t split_tokens = std::max(kSplitTokens / pool_.block_size, int64_t{1}) * pool_.block_size;
  // RoPE on qkv's q and k heads, this step's K/V into the pools; the arguments of attention over them.
  auto prepare_attention = [&](const DecoderLayer& L) {
    k.rope(qkv, n, ldq, H + KV, hd, cosv, sinv, rot);  // RoPE on the q and k heads, in place
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
    a.split_tokens = split_tokens;
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
    return a;
  };
  // RoPE, the K/V writes and attention into attn.
  auto attend = [&](const DecoderLayer& L) {
    const DecodeAttentionArgs a = prepare_attention(L);
    if (n_prompt_runs == 0) {
      paged_decode_attention(a, 0, k.attention);
    } else {
      const size_t qes = bf16 ? sizeof(uint16_t) : sizeof(float);
      const auto rows_from = [&](const void* p, int64_t row, int64_t stride) {
        return static_cast<const char*>(p) + static_cast<size_t>(row * stride) * qes;
      };
      for (int64_t i0 = 0; i0 < n;) {  // the decode rows, by stretches between the runs
        if (in_run[i0]) { ++i0; continue; }
        int64_t i1 = i0;
        while (i1 < n && !in_run[i1]) ++i1;
        DecodeAttentionArgs d = a;
        d.q = rows_from(a.q, i0, a.q_seq_stride);
        d.out = const_cast<char*>(rows_from(a.out, i0, H * hd));
        d.block_tables = block_tables + i0 * table_width;
        d.lengths = lengths + i0;
        d.n_seqs = i1 - i0;
        paged_decode_attention(d, 0, k.attention);
        i0 = i1;
      }
      for (int64_t r = 0; r < n_prompt_runs; ++r) {
        const int64_t first = prompt_runs[2 * r], count = prompt_runs[2 * r + 1];
        AttentionArgs p;
        p.dtype = kv_dtype_;
        p.q = {rows_from(a.q, first, a.q_seq_stride), 0, hd, a.q_seq_stride};
        p.k = {L.k_pool, 0, hd, KV * hd};
        p.v = {L.v_pool, 0, hd, KV * hd};
        p.out = {rows_from(a.out, first, H * hd), 0, hd, H * hd};
        p.batch = 1, p.n_heads = H, p.kv_heads = KV, p.head_dim = hd;
        p.q_len = count, p.kv_len = lengths[first + count - 1], p.q_offset = lengths[first] - 1;
        p.causal = true;
        p.scale = a.scale;
        p.block_table = block_tables + first * table_width;
        p.block_size = pool_.block_size;
        attention(p, k.bf16_dot ? "auto" : k.attention);  // vdpbf16ps where the products use it
      }
    }
    if (bf16)
      for (int64_t i = 0; i < n * H * hd; ++i) attn[i] = bf16_to_f32(ob[i]);
  };
#ifdef _OPENMP
  // One row: one parallel region for every layer.
  const int team = n == 1 && n_prompt_runs == 0 && !omp_in_parallel() ? omp_get_max_threads() : 1;
#else
  const int team = 1;
#endif
  if (team > 1) {
#ifdef _OPENMP
    // Per thread: its own normalized row, SwiGLU output and (bf16 pools, shared attention) widened
    // attention output (each thread computes the whole row, the same bits: cheaper than a barrier); and
    // the rows of wo each read ahead.
    const int64_t per_thread = line(D) + line(Fh) + line(H * hd);
    // Attention of more than split_tokens has several work units: then the threads share them.
    const bool shared_attention = lengths[0] > split_tokens;
    DecodeAttentionArgs shared_args;
    if (static_cast<int64_t>(team_work_.size()) < team * per_thread)
      team_work_.resize(static_cast<size_t>(team * per_thread));
    std::vector<int64_t> warm(static_cast<size_t>(team), 0);
    std::atomic<int64_t> qkv_done{0}, attended{0};
    std::exception_ptr failed;
#pragma omp parallel num_threads(team)
    {
      const int t = omp_get_thread_num(), T = omp_get_num_threads();
      float* x = team_work_.data() + t * per_thread;
      float* a = x + line(D);
      float* xa = a + line(Fh);  // the attention output in fp32 (bf16 pools)
      auto even = [&](const WeightView& w) { return std::pair{even_split(w.rows, t, T), even_split(w.rows, t + 1, T)}; };
      int64_t li = 0;
      for (const DecoderLayer& L : layers_) {
        ++li;
        k.rms_norm(h, L.attention_norm, x, 1, D, c.norm_eps);
        const auto [q0, q1] = even(L.wqkv);
        product_rows(k, x, D, L.wqkv, qkv, false, q0, q1);
        if (shared_attention) {  // all threads take attention's work units, then their even share of wo
#pragma omp barrier
#pragma omp single
          shared_args = prepare_attention(L);
          paged_decode_attention_team(shared_args, team_partial_, k.attention);
          const float* out = attn;
          if (bf16) {  // each thread widens the output for itself
            for (int64_t i = 0; i < H * hd; ++i) xa[i] = bf16_to_f32(ob[i]);
            out = xa;
          }
          const auto [o0, o1] = even(L.wo);
          product_rows(k, out, H * hd, L.wo, h, true, o0, o1);  // h += attn @ wo.T
        } else {  // thread 0 runs attention while the others read wo ahead
          if (t == 0) {  // once every thread's q, k and v are in
            for (int spins = 0; qkv_done.load(std::memory_order_acquire) < li * (T - 1); ++spins)
              spins < kSpins ? spin_pause() : std::this_thread::yield();  // more threads than cores: let them run
            if (!failed) {
              try {
                attend(L);
              } catch (...) {
                failed = std::current_exception();
              }
            }
            attended.store(li, std::memory_order_release);
          } else {  // meanwhile read ahead the start of this thread's share of wo
            qkv_done.fetch_add(1, std::memory_order_release);
            const auto [o0, o1] = even(L.wo);
            warm[t] = warm_rows(L.wo, o0, o1, attended, li);
          }
#pragma omp barrier
          const auto [o0, o1] = team_part(L.wo.rows, t, T, warm.data());
          product_rows(k, attn, H * hd, L.wo, h, true, o0, o1);  // h += attn @ wo.T
        }
#pragma omp barrier
        k.rms_norm(h, L.ffn_norm, x, 1, D, c.norm_eps);
        const auto [g0, g1] = even(L.w13);
        product_rows(k, x, D, L.w13, gu, false, g0, g1);
#pragma omp barrier
        k.swiglu(gu, a, 1, Fh);
        const auto [d0, d1] = even(L.w2);
        product_rows(k, a, Fh, L.w2, h, true, d0, d1);  // h += act @ w2.T
#pragma omp barrier
      }
    }
    if (failed) std::rethrow_exception(failed);
#endif
  } else {
    for (const DecoderLayer& L : layers_) {
      k.rms_norm(h, L.attention_norm, xn, n, D, c.norm_eps);
      run_linear(k, xn, n, D, L.wqkv, qkv, ldq, false);
      attend(L);
      run_linear(k, attn, n, H * hd, L.wo, h, D, true);  // h += attn @ wo.T
      k.rms_norm(h, L.ffn_norm, xn, n, D, c.norm_eps);
      run_linear(k, xn, n, D, L.w13, gu, 2 * Fh, false);
      k.swiglu(gu, act, n, Fh);
      run_linear(k, act, n, Fh, L.w2, h, D, true);  // h += act @ w2.T
    }
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
    run_linear(k, gather(logit_rows, n_logit_rows), n_logit_rows, D, head_, logits, c.vocab_size, false);
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
      run_linear_argmax(k, gather(argmax_rows, n_argmax_rows), n_argmax_rows, D, head_, next_tokens, value.data());
    }
  }
}

}  // namespace havoc
