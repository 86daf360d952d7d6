"""Prometheus metrics of the server, under vLLM's names with a `havoc:` prefix (vllm:num_requests_running
becomes havoc:num_requests_running), so that dashboards built for vLLM read havoc with a prefix change.

Gauges (running, waiting, KV blocks) are read from the engine at scrape time; counters and histograms are
fed from the engine thread after each step (`on_step`) and from the HTTP handlers (request outcomes).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# vLLM's buckets for these histograms (seconds)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
               960.0, 1920.0, 7680.0)


class _EngineCollector:
    """Reads the engine's live state when Prometheus scrapes (no lock: a scrape may be one step old)."""

    def __init__(self, engine, model_name: str) -> None:
        self.engine, self.model_name = engine, model_name

    def collect(self):
        eng = self.engine
        labels = ["model_name"]
        v = [self.model_name]
        for name, doc, value in (
            ("havoc:num_requests_running", "Requests in the running batch.", len(eng.running)),
            ("havoc:num_requests_waiting", "Requests waiting to be admitted.", len(eng.waiting)),
        ):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(v, value)
            yield g
        st = eng.cache.stats()
        g = GaugeMetricFamily("havoc:kv_cache_usage_perc", "Fraction of the KV pool's blocks in use (1 = full).",
                              labels=labels)
        g.add_metric(v, st["used"] / max(st["num_blocks"], 1))
        yield g
        g = GaugeMetricFamily("havoc:kv_cache_blocks", "KV pool blocks by state.", labels=labels + ["state"])
        for state, n in (("used", st["used"]), ("cached", st["evictable"]), ("free", st["free"])):
            g.add_metric(v + [state], n)
        yield g
        for name, doc, value in (
            ("havoc:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", st["prefix_query_tokens"]),
            ("havoc:prefix_cache_hits", "Prompt tokens served by the prefix cache.", st["prefix_hit_tokens"]),
            ("havoc:num_preemptions", "Requests preempted (to be recomputed) when the pool ran out.",
             eng.stats.preemptions),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(v, value)
            yield c


class Metrics:
    """The server's metrics registry.

    Args:
        engine: the engine whose state the gauges read.
        model_name: the `model_name` label.
    """

    def __init__(self, engine, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, model_name))
        self.model_name = model_name
        lab = ["model_name"]
        self.ttft = Histogram("havoc:time_to_first_token_seconds", "Time to the first generated token.", lab,
                              buckets=TTFT_BUCKETS, registry=self.registry)
        self.tpot = Histogram("havoc:time_per_output_token_seconds", "Time between generated tokens.", lab,
                              buckets=TPOT_BUCKETS, registry=self.registry)
        self.e2e = Histogram("havoc:e2e_request_latency_seconds", "Time from arrival to the last token.", lab,
                             buckets=E2E_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("havoc:prompt_tokens", "Prompt tokens of finished requests.", lab,
                                     registry=self.registry)
        self.generation_tokens = Counter("havoc:generation_tokens", "Generated tokens.", lab, registry=self.registry)
        self.success = Counter("havoc:request_success", "Finished requests by finish reason.", lab + ["finished_reason"],
                               registry=self.registry)
        self.http = Counter("havoc:http_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"],
                            registry=self.registry)

    def on_step(self, engine, outputs) -> None:
        """After each engine step (engine thread): tokens and finished requests."""
        m = self.model_name
        for out in outputs:
            r = out.request
            if out.token_ids:
                self.generation_tokens.labels(m).inc(len(out.token_ids))
            if out.finished:
                self.success.labels(m, out.finish_reason).inc()
                self.prompt_tokens.labels(m).inc(len(r.prompt_ids))
                end = r.finished_time or time.perf_counter()
                self.e2e.labels(m).observe(end - r.arrival_time)
                if r.first_token_time is not None:
                    self.ttft.labels(m).observe(r.first_token_time - r.arrival_time)
                times = r.token_times
                for a, b in zip(times, times[1:]):
                    self.tpot.labels(m).observe(b - a)
