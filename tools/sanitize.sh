#!/usr/bin/env bash
# Build havoc._C with AddressSanitizer + UndefinedBehaviorSanitizer and run the tests of its C++ on it:
# the block manager's (the state machine, the targeted tests, the threads) and the paged cache's CPU
# kernels' (every ISA variant, split-K, bad slots and ids; then the model decoding on them), and the decode
# kernels' (the GEMV over fp32/bf16/int8 in every ISA variant, the whole-step decoder, bad input), the
# prefill attention kernel's (every ISA variant, masks, offsets, varlen) and the elementwise kernels'. Any
# sanitizer report fails the run.
#
#   tools/sanitize.sh                      # from the repository root, venv active
#   tools/sanitize.sh tests/test_x.py -k y # other pytest arguments instead of the default test file
#
# What it takes to run a sanitized extension inside an unsanitized Python (gcc 12, found out here):
# - ASan must be the first library loaded: LD_PRELOAD the compiler's libasan.so. libubsan comes in as
#   a dependency of the module; it needs no preload.
# - Preload libstdc++ right after it. python is a C program, so libstdc++ is otherwise loaded only later
#   (by torch or by the module), after ASan has looked up the real __cxa_throw; the first C++ exception
#   then dies in "CHECK failed: asan_interceptors.cpp:320 real___cxa_throw != 0".
# - detect_leaks=0: CPython and torch keep allocations alive until exit by design, and LeakSanitizer
#   would report thousands of them; leaks in the manager are covered by the invariants instead.
# - halt_on_error / -fno-sanitize-recover=all: the first report aborts the process (non-zero exit).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
BUILD=build/sanitize
cmake -S . -B "$BUILD" -DHAVOC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
SO=$(ls "$BUILD"/_C.*.so)

LIBASAN=$("${CXX:-g++}" -print-file-name=libasan.so)
LIBSTDCXX=$("${CXX:-g++}" -print-file-name=libstdc++.so)
for lib in "$LIBASAN" "$LIBSTDCXX"; do
  [ -f "$lib" ] || { echo "$lib not found: is ${CXX:-g++} the compiler that built the module?" >&2; exit 2; }
done
[ $# -gt 0 ] || set -- tests/test_block_manager.py tests/test_paged_kernels.py tests/test_paged_cache.py \
  tests/test_cpu_kernels.py tests/test_cpu_decode.py tests/test_attention_cpu.py tests/test_cpu_elementwise.py -m "not model"
# Reports go to files: pytest captures fd 2 while a test runs, and an aborting process never gets it back.
LOGS="$BUILD/reports"
rm -rf "$LOGS" && mkdir -p "$LOGS"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$LOGS/asan}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan}
status=0
LD_PRELOAD="$LIBASAN $LIBSTDCXX" "$PY" tools/sanitize_run.py "$SO" -p no:cacheprovider -q "$@" || status=$?
if compgen -G "$LOGS/*" >/dev/null; then
  echo "sanitizer reports ($LOGS):" >&2
  cat "$LOGS"/* >&2
  status=${status/#0/1}
fi
exit "$status"
