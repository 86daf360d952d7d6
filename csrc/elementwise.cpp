#include "elementwise.h"

#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace havoc {

namespace {

using namespace simd;

// Rows per work item: enough elements that waking the team pays (the tiny test model stays on one thread).
constexpr int64_t kMinParallel = int64_t{1} << 16;

int64_t rows_per_item(int64_t D) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)); }

template <int W, class T>
HAVOC_INLINE void add_rows(const T* x, const T* r, T* h, int64_t D) {
  int64_t d = 0;
  for (; d + W <= D; d += W) storev<W>(h + d, loadv<W>(x + d) + loadv<W>(r + d));
  for (; d < D; ++d) store(h + d, load(x + d) + load(r + d));
}

struct Ops {
  void (*rms_norm)(const void*, int64_t, const void*, void*, int64_t, int64_t, int64_t, float);
  void (*add_rms_norm)(const void*, int64_t, const void*, int64_t, const void*, void*, void*, int64_t, int64_t, float);
  void (*swiglu)(const void*, int64_t, const void*, int64_t, void*, int64_t, int64_t);
  void (*rope)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
               int64_t, int64_t, void*);
};

// One set of the ops per ISA and element type, each splitting its rows over threads.
#define HAVOC_ELEMENTWISE(NAME, W, ATTR, T)                                                                       \
  ATTR void NAME##_rms_norm(const void* x, int64_t ldx, const void* g, void* y, int64_t ldy, int64_t M, int64_t D, \
                            float eps) {                                                                         \
    const int64_t per = rows_per_item(D);                                                                        \
    _Pragma("omp parallel for schedule(static) if (M * D >= kMinParallel)")                                      \
    for (int64_t m0 = 0; m0 < M; m0 += per)                                                                      \
      rms_norm_rows<W, T, T>(static_cast<const T*>(x) + m0 * ldx, ldx, static_cast<const T*>(g),                 \
                             static_cast<T*>(y) + m0 * ldy, ldy, std::min(per, M - m0), D, eps);                 \
  }                                                                                                              \
  ATTR void NAME##_add_rms_norm(const void* x, int64_t ldx, const void* r, int64_t ldr, const void* g, void* y,   \
                                void* h, int64_t M, int64_t D, float eps) {                                      \
    _Pragma("omp parallel for schedule(static) if (M * D >= kMinParallel)")                                      \
    for (int64_t m = 0; m < M; ++m) {                                                                            \
      T* hm = static_cast<T*>(h) + m * D;                                                                        \
      add_rows<W, T>(static_cast<const T*>(x) + m * ldx, static_cast<const T*>(r) + m * ldr, hm, D);             \
      rms_norm_rows<W, T, T>(hm, D, static_cast<const T*>(g), static_cast<T*>(y) + m * D, D, 1, D, eps);         \
    }                                                                                                            \
  }                                                                                                              \
  ATTR void NAME##_swiglu(const void* g, int64_t ldg, const void* u, int64_t ldu, void* o, int64_t M,            \
                          int64_t Fh) {                                                                          \
    const int64_t per = rows_per_item(Fh);                                                                       \
    _Pragma("omp parallel for schedule(static) if (M * Fh >= kMinParallel)")                                     \
    for (int64_t m0 = 0; m0 < M; m0 += per)                                                                      \
      swiglu_rows<W, T>(static_cast<const T*>(g) + m0 * ldg, ldg, static_cast<const T*>(u) + m0 * ldu, ldu,      \
                        static_cast<T*>(o) + m0 * Fh, Fh, std::min(per, M - m0), Fh);                            \
  }                                                                                                              \
  ATTR void NAME##_rope(const void* x, int64_t sb, int64_t st, int64_t sh, int64_t B, int64_t T_, int64_t heads,  \
                        int64_t hd, const float* cs, const float* sn, int64_t cb, int64_t rot, void* out) {      \
    _Pragma("omp parallel for schedule(static) if (B * T_ * heads * hd >= kMinParallel)")                        \
    for (int64_t bt = 0; bt < B * T_; ++bt) {                                                                    \
      const int64_t b = bt / T_, t = bt % T_, c = ((cb == 1 ? 0 : b) * T_ + t) * rot;                            \
      rope_heads<W, T>(static_cast<const T*>(x) + b * sb + t * st, sh, static_cast<T*>(out) + bt * heads * hd,   \
                       hd, heads, hd, cs + c, sn + c, rot);                                                      \
    }                                                                                                            \
  }

#define HAVOC_ELEMENTWISE_ISA(NAME, W, ATTR)      \
  HAVOC_ELEMENTWISE(NAME##_f32, W, ATTR, float)   \
  HAVOC_ELEMENTWISE(NAME##_bf16, W, ATTR, uint16_t)

HAVOC_ELEMENTWISE_ISA(ew_scalar, 4, )
#ifdef HAVOC_X86_DISPATCH
HAVOC_ELEMENTWISE_ISA(ew_avx2, 8, HAVOC_TARGET_AVX2)
HAVOC_ELEMENTWISE_ISA(ew_avx512, 16, HAVOC_TARGET_AVX512)
#endif
#undef HAVOC_ELEMENTWISE_ISA
#undef HAVOC_ELEMENTWISE

#define HAVOC_OPS(NAME) Ops{NAME##_rms_norm, NAME##_add_rms_norm, NAME##_swiglu, NAME##_rope}

const Ops& pick(const std::string& isa, KVDType dtype) {
  static const Ops scalar[2] = {HAVOC_OPS(ew_scalar_f32), HAVOC_OPS(ew_scalar_bf16)};
  const int i = dtype == KVDType::kBFloat16 ? 1 : 0;
  const std::string level = resolve_isa(isa);
#ifdef HAVOC_X86_DISPATCH
  static const Ops avx2[2] = {HAVOC_OPS(ew_avx2_f32), HAVOC_OPS(ew_avx2_bf16)};
  static const Ops avx512[2] = {HAVOC_OPS(ew_avx512_f32), HAVOC_OPS(ew_avx512_bf16)};
  if (level == "avx2") return avx2[i];
  if (level == "avx512") return avx512[i];
#endif
  return scalar[i];
}
#undef HAVOC_OPS

void check_rows(int64_t M, int64_t D) {
  if (M < 0 || D < 1) throw std::invalid_argument("rows need a non-negative count and a positive length");
}

}  // namespace

void rms_norm(KVDType dtype, const void* x, int64_t ldx, const void* weight, void* y, int64_t ldy, int64_t M,
              int64_t D, float eps, const std::string& isa) {
  check_rows(M, D);
  pick(isa, dtype).rms_norm(x, ldx, weight, y, ldy, M, D, eps);
}

void add_rms_norm(KVDType dtype, const void* x, int64_t ldx, const void* residual, int64_t ldr, const void* weight,
                  void* y, void* h, int64_t M, int64_t D, float eps, const std::string& isa) {
  check_rows(M, D);
  pick(isa, dtype).add_rms_norm(x, ldx, residual, ldr, weight, y, h, M, D, eps);
}

void swiglu(KVDType dtype, const void* gate, int64_t ldg, const void* up, int64_t ldu, void* out, int64_t M,
            int64_t Fh, const std::string& isa) {
  check_rows(M, Fh);
  pick(isa, dtype).swiglu(gate, ldg, up, ldu, out, M, Fh);
}

void apply_rope(KVDType dtype, const void* x, int64_t sb, int64_t st, int64_t sh, int64_t B, int64_t T, int64_t heads,
                int64_t head_dim, const float* cos, const float* sin, int64_t cos_batches, int64_t rot, void* out,
                const std::string& isa) {
  if (B < 0 || T < 0 || heads < 0 || head_dim < 1) throw std::invalid_argument("negative RoPE dimensions");
  if (rot < 2 || rot % 2 || rot > head_dim)
    throw std::invalid_argument("rotary_dim must be even and within head_dim, got " + std::to_string(rot) +
                                " for head_dim " + std::to_string(head_dim));
  if (cos_batches != 1 && cos_batches != B)
    throw std::invalid_argument("cos/sin must have batch 1 or " + std::to_string(B) + ", got " +
                                std::to_string(cos_batches));
  pick(isa, dtype).rope(x, sb, st, sh, B, T, heads, head_dim, cos, sin, cos_batches, rot, out);
}

}  // namespace havoc
