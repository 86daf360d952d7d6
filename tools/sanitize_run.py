"""Run pytest with `havoc._C` replaced by a sanitizer build (tools/sanitize.sh calls this).

The editable install maps `havoc._C` to the normal build; rather than reinstall, load the sanitized
module under that name before anything imports havoc, then hand the command line to pytest.

    python tools/sanitize_run.py build/sanitize/_C.cpython-311-x86_64-linux-gnu.so tests/test_block_manager.py
"""

import importlib.util
import sys

import pytest


def main() -> int:
    so, args = sys.argv[1], sys.argv[2:]
    if "havoc" in sys.modules or "havoc._C" in sys.modules:
        raise SystemExit("havoc was imported before the sanitized _C could be put in its place")
    spec = importlib.util.spec_from_file_location("havoc._C", so)
    module = importlib.util.module_from_spec(spec)
    sys.modules["havoc._C"] = module
    spec.loader.exec_module(module)
    flags = module.build_info()["cxx_flags"]
    if "-fsanitize=address" not in flags:
        raise SystemExit(f"{so} is not a sanitizer build (flags: {flags})")
    import havoc

    havoc._C = module
    print(f"havoc._C from {so}\n  flags: {flags}", flush=True)
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
