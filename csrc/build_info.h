// What the extension was compiled with and what the CPU it runs on can do.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace havoc {

// Key/value pairs describing the build: compiler, flags, OpenMP, the SIMD level of the compiled
// baseline. Values are strings so the Python side can print them as they are.
std::vector<std::pair<std::string, std::string>> build_info();

// SIMD features of the CPU this process runs on, detected at run time (e.g. "avx2", "avx512f",
// "avx512_bf16"). Empty on architectures without a detector.
std::vector<std::string> cpu_features();

// The widest SIMD level the run-time dispatcher would pick on this CPU: "avx512", "avx2", "neon" or
// "scalar".
std::string runtime_simd_level();

// Number of threads OpenMP would use (1 when built without OpenMP).
int max_threads();

}  // namespace havoc
