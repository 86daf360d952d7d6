// The only file that includes pybind11: binds the declarations of csrc/*.h into havoc._C.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "havoc's compiled extension (no libtorch): build diagnostics; the paged KV cache and CPU "
            "kernels join it.";
  m.def("build_info", []() {
        py::dict d;
        for (const auto& kv : havoc::build_info()) d[py::str(kv.first)] = py::str(kv.second);
        return d;
      },
      "What the extension was compiled with: compiler, flags, OpenMP, SIMD baseline.");
  m.def("cpu_features", &havoc::cpu_features, "SIMD features of this CPU, detected at run time.");
  m.def("runtime_simd_level", &havoc::runtime_simd_level,
        "The widest SIMD level the run-time dispatcher picks on this CPU.");
  m.def("max_threads", &havoc::max_threads, "Threads OpenMP would use (1 without OpenMP).");
}
