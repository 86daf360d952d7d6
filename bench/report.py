"""Turn `pytest bench --benchmark-only --benchmark-json=FILE` output into the tables of RESULTS.md.

    python bench/report.py FILE                 # the tables
    python bench/report.py --compact FILE       # rewrite FILE without per-round timings (what bench/results keeps)

Rows pair havoc with the baseline run in the same process, interleaved round by round (transformers or
llama.cpp for generation, named in each row); every figure is a median. A run of bench/test_kernels.py gives the kernel table instead.
"""

from __future__ import annotations

import json
import sys


def _fmt(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def _rows(benchmarks: list[dict], *kinds: str) -> list[dict]:
    """The extra_info of the benchmarks of these kinds, in run order."""
    return [b["extra_info"] for b in benchmarks if b.get("extra_info", {}).get("kind") in kinds]


def generation_table(benchmarks: list[dict]) -> list[str]:
    rows = [r for r in _rows(benchmarks, "decode", "prefill") if r.get("baseline") != "llama.cpp"]
    out = [
        "| phase | dtype | batch | baseline | havoc tok/s | baseline tok/s | havoc / baseline | overhead ms/step (havoc / base) | matmul floor ms (havoc / base) | weight GB/s (% of read bw) | peak extra MiB (havoc / base) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["kind"] != "prefill", r.get("baseline", ""), r["dtype"], r["batch"])):
        out.append(
            f"| {r['kind']} | {r['dtype']} | {r['batch']} | {r.get('baseline', 'transformers')} | {_fmt(r['tokens_per_s'])} | "
            f"{_fmt(r['baseline_tokens_per_s'])} | **{_fmt(r['ratio'], '.2f')}×** | "
            f"{_fmt(r.get('overhead_ms'), '.1f')} / {_fmt(r.get('baseline_overhead_ms'), '.1f')} | "
            f"{_fmt(r.get('matmul_floor_ms'))} / {_fmt(r.get('baseline_matmul_floor_ms'))} | "
            f"{_bandwidth(r)} | "
            f"{_fmt(r.get('peak_extra_mb'), '.0f')} / {_fmt(r.get('baseline_peak_extra_mb'), '.0f')} |"
        )
    return out


def _bandwidth(r: dict) -> str:
    if r.get("weight_gb_s") is None:
        return "–"
    frac = r.get("frac_bandwidth")
    return f"{r['weight_gb_s']:.1f} ({frac * 100:.0f}%)" if frac is not None else f"{r['weight_gb_s']:.1f}"


def llamacpp_table(benchmarks: list[dict]) -> list[str]:
    """havoc against llama.cpp (test_decode_llamacpp, test_prefill_llamacpp): tokens/s and weight GB/s of each."""
    rows = [r for r in _rows(benchmarks, "decode", "prefill") if r.get("baseline") == "llama.cpp"]
    out = [
        "| phase | dtype (llama.cpp format) | batch | havoc tok/s | havoc weight GB/s (% of read bw) | "
        "llama.cpp tok/s | llama.cpp weight GB/s | havoc / llama.cpp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {"float32": 0, "bfloat16": 1, "int8": 2}
    for r in sorted(rows, key=lambda r: (r["kind"] != "prefill", order.get(r["dtype"], 9), r["batch"])):
        fmt = r.get("baseline_format", {"float32": "F32", "bfloat16": "BF16"}.get(r["dtype"], "?"))
        out.append(
            f"| {r['kind']} | {r['dtype']} ({fmt}) | {r['batch']} | {_fmt(r['tokens_per_s'])} | {_bandwidth(r)} | "
            f"{_fmt(r['baseline_tokens_per_s'])} | {_fmt(r.get('baseline_weight_gb_s'))} | **{_fmt(r['ratio'], '.2f')}×** |"
        )
    return out if rows else []


def linear_table(benchmarks: list[dict]) -> list[str]:
    """One decode step's products (test_linear): the C++ kernels' variants against torch's F.linear."""
    rows = _rows(benchmarks, "linear")
    if not rows:
        return []
    variants = list(rows[0]["variants_ms"])
    out = [
        f"| dtype | batch | auto ({rows[0]['variant']}) ms | weight GB/s | torch ms | torch / havoc | "
        + " | ".join(f"{v} ms" for v in variants) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(variants),
    ]
    for r in rows:
        out.append(
            f"| {r['dtype']} | {r['batch']} | {r['ms']:.2f} | {r['weight_gb_s']:.1f} | {r['baseline_ms']:.2f} | "
            f"**{r['ratio']:.2f}×** | " + " | ".join(f"{r['variants_ms'][v]:.2f}" for v in variants) + " |"
        )
    return out


def chat_table(benchmarks: list[dict]) -> list[str]:
    """Whole multi-turn chats (bench/test_decode.py::test_chat_prefix_cache): seconds per chat."""
    rows = _rows(benchmarks, "chat")
    out = ["| chat | dtype | havoc s | baseline | baseline s | baseline / havoc |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['turns']} turns, last prompt {r['last_prompt_tokens']} tokens | {r['dtype']} | {r['seconds']:.2f} | "
            f"{r['baseline']} | {r['baseline_seconds']:.2f} | **{r['ratio']:.2f}×** |"
        )
    return out if rows else []


def generate_table(benchmarks: list[dict]) -> list[str]:
    """Whole generate_ids calls, the default cache against cache="static" (test_generate_default_vs_static)."""
    rows = _rows(benchmarks, "generate")
    out = ["| batch × prompt tokens | dtype | default tok/s | static tok/s | default / static |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['batch']} × {r['prompt_tokens']} | {r['dtype']} | {r['tokens_per_s']:.1f} | "
            f"{r['baseline_tokens_per_s']:.1f} | **{r['ratio']:.2f}×** |"
        )
    return out if rows else []


def cpp_table(benchmarks: list[dict]) -> list[str]:
    """C++ vs its baseline (the pure-Python block manager, or torch's own ops): median time per operation."""
    by_group: dict[str, dict[str, float]] = {}
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") == "cpp_vs_baseline":
            by_group.setdefault(e["group"], {})[e["impl"]] = e["median_per_op_s"]
            if "baseline_median_per_op_s" in e:  # timed in the same rounds, alternating
                by_group[e["group"]]["py"] = e["baseline_median_per_op_s"]
    if not by_group:
        return []
    out = ["| operation | C++ | baseline | C++ ops/s | baseline / C++ |", "|---|---:|---:|---:|---:|"]

    def us(x):
        return "–" if x is None else f"{x * 1e6:.2f} µs"

    for group, d in by_group.items():
        cpp, base = d.get("cpp"), d.get("py")
        ratio = f"**{base / cpp:.1f}×**" if cpp and base else "–"
        out.append(f"| {group} | {us(cpp)} | {us(base)} | {f'{1 / cpp:,.0f}' if cpp else '–'} | {ratio} |")
    return out


def kernel_table(benchmarks: list[dict]) -> list[str]:
    """Rows of bench/test_kernels.py: one line per (benchmark, provider), with its speedup over eager."""
    rows = _rows(benchmarks, "kernel")
    if not rows:
        return []
    eager = {r["group"]: r.get("ms") for r in rows if r["provider"] == "eager"}
    out = [
        f"Device: {rows[0]['device']}; dtype {rows[0]['dtype']}.",
        "",
        "| benchmark | provider | ms | GB/s | TFLOP/s | % of peak | % of copy | peak MiB | × eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = list(dict.fromkeys(r["group"] for r in rows))  # first-seen order of the run
    for r in sorted(rows, key=lambda r: (groups.index(r["group"]), r["provider"] != "triton")):
        peak = r.get("frac_peak_bw", r.get("frac_peak_flops"))
        speedup = eager.get(r["group"]) / r["ms"] if eager.get(r["group"]) and r.get("ms") else None
        out.append(
            f"| {r['group']} | {r['provider']} | {_fmt(r.get('ms'), '.3f')} | {_fmt(r.get('gb_s'), '.0f')} | "
            f"{_fmt(r.get('tflop_s'), '.1f')} | {_fmt(peak * 100 if peak is not None else None)} | "
            f"{_fmt(r['frac_copy_bw'] * 100 if r.get('frac_copy_bw') is not None else None)} | "
            f"{_fmt(r.get('peak_mib'), '.0f')} | {_fmt(speedup, '.2f')} |"
        )
    return out


_STATS = ("min", "max", "mean", "median", "stddev", "iqr", "rounds", "iterations")


def compact(data: dict) -> dict:
    """A --benchmark-json report without its per-round timings: machine, commit, and per benchmark its
    name, parameters, summary statistics and extra_info — what the tables are made from."""
    return {
        "machine_info": data.get("machine_info", {}), "commit_info": data.get("commit_info", {}),
        "datetime": data.get("datetime"), "version": data.get("version"),
        "benchmarks": [{"name": b.get("name"), "group": b.get("group"), "params": b.get("params"),
                        "stats": {k: b.get("stats", {}).get(k) for k in _STATS},
                        "extra_info": b.get("extra_info", {})} for b in data.get("benchmarks", [])],
    }


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
    b = data["benchmarks"]
    generation = generation_table(b)
    tables = [
        t for t in (kernel_table(b), generation if len(generation) > 2 else [], llamacpp_table(b), linear_table(b),
                    chat_table(b), generate_table(b), cpp_table(b)) if t
    ]
    for i, table in enumerate(tables):
        if i:
            print()
        for line in table:
            print(line)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compact":
        with open(sys.argv[2]) as f:
            small = compact(json.load(f))
        with open(sys.argv[2], "w") as f:
            json.dump(small, f, indent=1)
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit("usage: python bench/report.py [--compact] BENCHMARK_JSON")
