"""Turn `pytest bench --benchmark-only --benchmark-json=FILE` output into the tables of RESULTS.md.

    python bench/report.py FILE

Rows pair havoc with the baseline run in the same process (transformers for generation); every figure is
a median.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _fmt(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def generation_table(benchmarks: list[dict]) -> list[str]:
    rows: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for b in benchmarks:
        info = b.get("extra_info", {})
        if info.get("kind") not in ("decode", "prefill"):
            continue
        rows[(info["kind"], info["dtype"], info["batch"])][info["engine"]] = info
    out = [
        "| phase | dtype | batch | havoc tok/s | transformers tok/s | havoc / transformers | havoc overhead ms/step | transformers overhead ms/step | matmul floor ms (havoc / tf) | peak extra MiB (havoc / tf) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, dtype, batch), engines in sorted(rows.items(), key=lambda kv: (kv[0][0] != "prefill", kv[0][1], kv[0][2])):
        h, t = engines.get("havoc", {}), engines.get("transformers", {})
        ratio = h["tokens_per_s"] / t["tokens_per_s"] if h and t else None
        out.append(
            f"| {kind} | {dtype} | {batch} | {_fmt(h.get('tokens_per_s'))} | {_fmt(t.get('tokens_per_s'))} | "
            f"{_fmt(ratio, '.2f')}× | {_fmt(h.get('overhead_ms'), '.2f')} | {_fmt(t.get('overhead_ms'), '.2f')} | "
            f"{_fmt(h.get('matmul_floor_ms'))} / {_fmt(t.get('matmul_floor_ms'))} | "
            f"{_fmt(h.get('peak_extra_mb'), '.0f')} / {_fmt(t.get('peak_extra_mb'), '.0f')} |"
        )
    return out


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    m = data.get("machine_info", {})
    c = data.get("commit_info", {})
    print(f"- machine: {m.get('cpu_model', m.get('processor', '?'))}, {m.get('cpu', {}).get('count', '?')} cores; "
          f"torch {m.get('torch', '?')} ({m.get('torch_threads', '?')} threads); python {m.get('python_version', '?')}")
    print(f"- date: {data.get('datetime', '?')}; commit: {m.get('havoc_commit') or c.get('id', '?')[:12]}"
          f"{' (dirty)' if c.get('dirty') else ''}")
    print()
    for line in generation_table(data["benchmarks"]):
        print(line)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/report.py BENCHMARK_JSON")
    main(sys.argv[1])
