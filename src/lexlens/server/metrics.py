"""Request counters and latency histograms in the Prometheus text format (no dependency).

:class:`Metrics` counts requests per ``(method, route, status)`` and keeps histograms of
request latency per route and of the search stages (``encode``, ``search``, ``metadata``)
per index. :meth:`Metrics.render` writes the text exposition format version 0.0.4.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

__all__ = ["Metrics", "Histogram", "BUCKETS", "CONTENT_TYPE"]

#: histogram bucket upper bounds, in seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative-bucket histogram of observations (seconds)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = []
        running = 0
        for bound, c in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += c
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.sum!r}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe request and stage metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.stages: dict[tuple[str, str], Histogram] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        with self._lock:
            self.requests[(method, route, int(status))] += 1
            self.latency.setdefault((method, route), Histogram()).observe(seconds)

    def observe_stages(self, index: str, timings: dict[str, float]) -> None:
        """Record the per-stage seconds of one search on ``index``."""
        with self._lock:
            for stage, sec in timings.items():
                self.stages.setdefault((index, stage), Histogram()).observe(sec)

    def render(self) -> str:
        """The Prometheus text exposition of everything recorded."""
        with self._lock:
            out = [
                "# HELP lexlens_requests_total HTTP requests by method, route and status.",
                "# TYPE lexlens_requests_total counter",
            ]
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(
                    f'lexlens_requests_total{{method="{m}",route="{_label(r)}",status="{s}"}} {n}'
                )
            out += [
                "# HELP lexlens_request_seconds HTTP request latency by method and route.",
                "# TYPE lexlens_request_seconds histogram",
            ]
            for (m, r), h in sorted(self.latency.items()):
                out += h.lines("lexlens_request_seconds", f'method="{m}",route="{_label(r)}"')
            out += [
                "# HELP lexlens_stage_seconds Time per search stage (encode, search, metadata).",
                "# TYPE lexlens_stage_seconds histogram",
            ]
            for (i, st), h in sorted(self.stages.items()):
                out += h.lines("lexlens_stage_seconds", f'index="{_label(i)}",stage="{st}"')
        return "\n".join(out) + "\n"
