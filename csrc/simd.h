// SIMD helpers shared by the CPU kernels (paged attention, the decode GEMV/GEMM): GCC/Clang vector
// extensions (portable SIMD that the compiler maps onto the registers of the target each ISA wrapper is
// compiled for), bf16 <-> fp32 conversion and a vector exp. Everything is always_inline, so it compiles
// into each caller's target (baseline, AVX2, AVX-512) rather than once for the baseline.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "build_info.h"

#if !(defined(__GNUC__) || defined(__clang__))
#error "havoc's CPU kernels need GCC/Clang vector extensions (vector_size, __builtin_convertvector)"
#endif
#define HAVOC_INLINE inline __attribute__((always_inline))

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define HAVOC_X86_DISPATCH 1
// The targets the run-time dispatchers compile their kernels for (besides the compiler's baseline).
#define HAVOC_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define HAVOC_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")))
// The decode kernels' dot-product variants (csrc/cpu_decode.cpp). Their instructions are reached through
// GCC's __builtin_ia32_* builtins, which (unlike the <immintrin.h> wrappers) inline into the always_inline
// templates and are checked against the target of the function they end up in.
#define HAVOC_TARGET_AVX_VNNI __attribute__((target("avx2,fma,f16c,bmi2,avxvnni")))
#define HAVOC_TARGET_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,avx512vnni")))
#define HAVOC_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,avx512vnni,avx512bf16")))
#define HAVOC_TARGET_AMX                                                                              \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,avx512vnni,avx512bf16," \
                        "amx-tile,amx-bf16,amx-int8")))
#endif

// The dot-product variants (VNNI, AVX512-BF16, AMX) reach their instructions through GCC's builtins and
// AMX's through inline assembly; Clang spells the builtins differently, so there they are not compiled
// (linear_variant_missing says so, and attention keeps its FMA kernel).
#if defined(HAVOC_X86_DISPATCH) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__linux__)
#define HAVOC_DOT_VARIANTS 1
#include <immintrin.h>  // declares the __builtin_ia32_* the kernels call (not its wrappers: see above)
#endif

namespace havoc {
namespace simd {

// --- run-time choice of a kernel variant ---------------------------------------------------------------

// The kernel variants this CPU and build can run, narrowest first ("scalar", then "avx2", "avx512").
// Detected once: the kernels resolve their variant on every call.
inline const std::vector<std::string>& runnable_isas() {
  static const std::vector<std::string> isas = [] {
    std::vector<std::string> out{"scalar"};
#ifdef HAVOC_X86_DISPATCH
    const auto f = cpu_features();
    auto has = [&f](const char* x) { return std::find(f.begin(), f.end(), x) != f.end(); };
    if (has("avx2") && has("fma")) out.emplace_back("avx2");
    if (has("avx512f") && has("avx512bw") && has("avx512vl")) out.emplace_back("avx512");
#endif
    return out;
  }();
  return isas;
}

// Whether this CPU has `feature` (a name of cpu_features(), as /proc/cpuinfo spells it).
inline bool has_cpu_feature(const char* feature) {
  static const std::vector<std::string> f = cpu_features();
  return std::find(f.begin(), f.end(), feature) != f.end();
}

// The variant to run for `isa` ("auto", or a name from runnable_isas(); "neon" runs the portable code).
// Throws std::invalid_argument for one this CPU or build cannot run.
inline std::string resolve_isa(const std::string& isa) {
  std::string level = isa == "auto" ? runtime_simd_level() : isa;
  if (level == "neon") level = "scalar";
  const auto& ok = runnable_isas();
  if (std::find(ok.begin(), ok.end(), level) == ok.end())
    throw std::invalid_argument("kernel variant '" + isa + "' is not available on this CPU or build");
  return level;
}

// --- element access ------------------------------------------------------------------------------------

HAVOC_INLINE float bf16_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, as torch's float -> bfloat16 conversion does (NaN stays a quiet NaN).
HAVOC_INLINE uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

HAVOC_INLINE float load(const float* p) { return *p; }
HAVOC_INLINE float load(const uint16_t* p) { return bf16_to_f32(*p); }
HAVOC_INLINE void store(float* p, float x) { *p = x; }
HAVOC_INLINE void store(uint16_t* p, float x) { *p = f32_to_bf16(x); }

// --- SIMD vectors -----------------------------------------------------------------------------------------
// GCC/Clang vector extensions: portable SIMD, W float lanes, that the compiler maps onto the registers of
// the target each ISA wrapper below is compiled for: W = 16 (zmm) for AVX-512, 8 (ymm) for AVX2, 4 (xmm)
// for the baseline. No intrinsics. NOTE: plain loops under `#pragma omp simd` were 4-5x slower here with
// GCC 12 — a dot's reduction ended in 16 serial scalar adds of lanes spilled to the stack, and a
// 64-float accumulator array lived in memory, not registers — and 16-lane vectors on AVX2 were split
// through the stack (perf).

template <int W>
struct V {
  typedef float f __attribute__((vector_size(4 * W)));
  typedef int32_t i __attribute__((vector_size(4 * W)));
  typedef uint32_t u __attribute__((vector_size(4 * W)));
  typedef uint16_t h __attribute__((vector_size(2 * W)));
};

template <int W>
HAVOC_INLINE typename V<W>::f splat(float x) {
  return typename V<W>::f{} + x;
}

template <int W>
HAVOC_INLINE typename V<W>::f loadv(const float* p) {
  typename V<W>::f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int W>
HAVOC_INLINE typename V<W>::f loadv(const uint16_t* p) {  // bf16 bits -> fp32: widen, shift to the top
  typename V<W>::h h;
  std::memcpy(&h, p, sizeof h);
  const typename V<W>::u u = __builtin_convertvector(h, typename V<W>::u) << 16;
  typename V<W>::f v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

template <int W>
HAVOC_INLINE void storev(float* p, typename V<W>::f v) {
  std::memcpy(p, &v, sizeof v);
}

// bf16 bits of W floats, rounded to nearest even (a NaN stays a quiet NaN), as f32_to_bf16.
template <int W>
HAVOC_INLINE typename V<W>::u bf16_bits(typename V<W>::f v) {
  using U = typename V<W>::u;
  U u;
  std::memcpy(&u, &v, sizeof u);
  const U nan = (u & 0x7fffffffu) > 0x7f800000u;
  const U r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return nan ? ((u >> 16) | 0x40u) : r;
}

// Store W floats as fp32, or as bf16 rounded to nearest even.
template <int W>
HAVOC_INLINE void storev(uint16_t* p, typename V<W>::f v) {
  const typename V<W>::h h = __builtin_convertvector(bf16_bits<W>(v), typename V<W>::h);
  std::memcpy(p, &h, sizeof h);
}

// v as the element type T holds it: v itself for fp32, rounded to bf16 (and back to fp32) for bf16.
template <int W, class T>
HAVOC_INLINE typename V<W>::f as_stored(typename V<W>::f v) {
  if constexpr (std::is_same<T, float>::value) {
    return v;
  } else {
    const typename V<W>::u u = bf16_bits<W>(v) << 16;
    typename V<W>::f r;
    std::memcpy(&r, &u, sizeof r);
    return r;
  }
}
template <class T>
HAVOC_INLINE float as_stored(float v) {
  if constexpr (std::is_same<T, float>::value) return v;
  else return bf16_to_f32(f32_to_bf16(v));
}

// Horizontal sum and max by a tree of halves.
template <int W>
HAVOC_INLINE float hsum(typename V<W>::f v) {
  if constexpr (W == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    typename V<W / 2>::f lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return hsum<W / 2>(lo + hi);
  }
}

template <int W>
HAVOC_INLINE float hmax(typename V<W>::f v) {
  if constexpr (W == 4) {
    return std::max(std::max(v[0], v[2]), std::max(v[1], v[3]));
  } else {
    typename V<W / 2>::f lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return hmax<W / 2>(lo > hi ? lo : hi);
  }
}

// exp(x) for softmax arguments (x <= 0): Cephes' expf — range reduction by ln 2 in two parts, a degree-5
// minimax polynomial, 2^n through the exponent bits — ~1 ulp on [-87, 0]; exactly 0 below -87.3 and for
// -inf. NOTE: glibc's expf is a scalar call here (libmvec's vector variants need -ffast-math).
template <int W>
HAVOC_INLINE typename V<W>::f exp_neg(typename V<W>::f x) {
  using F = typename V<W>::f;
  using I = typename V<W>::i;
  const I dead = x < -87.3f;
  x = dead ? splat<W>(-87.3f) : x;
  const F fx = x * 1.44269504088896341f;
  const F n = (fx + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick), |fx| < 2^22
  F r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = splat<W>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return dead ? splat<W>(0.0f) : p * scale;
}

}  // namespace simd
}  // namespace havoc
