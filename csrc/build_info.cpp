#include "build_info.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace havoc {

namespace {

std::string compiled_simd_baseline() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__SSE4_2__)
  return "sse4.2";
#elif defined(__SSE2__) || defined(_M_X64)
  return "sse2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace

std::vector<std::pair<std::string, std::string>> build_info() {
  std::vector<std::pair<std::string, std::string>> info;
  info.emplace_back("compiler", std::string(HAVOC_COMPILER_ID) + " " + HAVOC_COMPILER_VERSION);
  info.emplace_back("build_type", HAVOC_BUILD_TYPE);
  info.emplace_back("cxx_flags", HAVOC_CXX_FLAGS);
  info.emplace_back("cxx_standard", std::to_string(__cplusplus));
  info.emplace_back("cmake", HAVOC_CMAKE_VERSION);
  info.emplace_back("target_processor", HAVOC_SYSTEM_PROCESSOR);
#ifdef _OPENMP
  info.emplace_back("openmp", std::string("yes (") +
                                  (std::string(HAVOC_OPENMP_VERSION).empty()
                                       ? std::to_string(_OPENMP)
                                       : std::string(HAVOC_OPENMP_VERSION)) +
                                  ")");
#else
  info.emplace_back("openmp", "no");
#endif
  info.emplace_back("simd_compiled_baseline", compiled_simd_baseline());
  return info;
}

std::vector<std::string> cpu_features() {
  std::vector<std::string> out;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) out.emplace_back("sse4.2");
  if (__builtin_cpu_supports("avx")) out.emplace_back("avx");
  if (__builtin_cpu_supports("avx2")) out.emplace_back("avx2");
  if (__builtin_cpu_supports("fma")) out.emplace_back("fma");
  if (__builtin_cpu_supports("f16c")) out.emplace_back("f16c");
  if (__builtin_cpu_supports("avx512f")) out.emplace_back("avx512f");
  if (__builtin_cpu_supports("avx512bw")) out.emplace_back("avx512bw");
  if (__builtin_cpu_supports("avx512vl")) out.emplace_back("avx512vl");
  if (__builtin_cpu_supports("avx512vnni")) out.emplace_back("avx512_vnni");
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
  if (__builtin_cpu_supports("avxvnni")) out.emplace_back("avx_vnni");
  if (__builtin_cpu_supports("avx512bf16")) out.emplace_back("avx512_bf16");
  if (__builtin_cpu_supports("amx-tile")) out.emplace_back("amx_tile");
  if (__builtin_cpu_supports("amx-bf16")) out.emplace_back("amx_bf16");
  if (__builtin_cpu_supports("amx-int8")) out.emplace_back("amx_int8");
#endif
#elif defined(__ARM_NEON)
  out.emplace_back("neon");
#endif
  return out;
}

std::string runtime_simd_level() {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "scalar";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace havoc
