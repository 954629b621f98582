"""A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text format 0.0.4.

Written here rather than pulled in as a dependency because the service needs a dozen series and nothing else
(no push gateway, no multiprocess mode: each worker serves its own /metrics).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence

LabelValues = tuple[str, ...]

# Seconds; covers a 304 on loopback (ms) up to the 60 s total fetch timeout.
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CYCLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def _labels(names: Sequence[str], values: LabelValues, extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(f'{extra[0]}="{_escape(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._lock = threading.Lock()  # poll results arrive from the store thread

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, float] = {}
        if not self.label_names:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def replace(self, values: Iterable[tuple[dict[str, str], float]]) -> None:
        """Set every series at once, dropping those not given (e.g. a health state no feed is in any more)."""
        new = {self._key(lbl): float(v) for lbl, v in values}
        with self._lock:
            self._values = new

    def get(self, **labels: str) -> float | None:
        return self._values.get(self._key(labels))

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, sums = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            sums[0] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return sum(series[0]) if series else 0

    def samples(self) -> list[str]:
        lines = []
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._series.items())
        for key, (counts, total) in items:
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                lbl = _labels(self.label_names, key, ("le", _number(bound)))
                lines.append(f"{self.name}_bucket{lbl} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        self._collectors: list[Callable[[], None]] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        m = Counter(name, help, labels)
        self.add(m)
        return m

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        m = Gauge(name, help, labels)
        self.add(m)
        return m

    def histogram(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        m = Histogram(name, help, buckets, labels)
        self.add(m)
        return m

    def render(self) -> str:
        out: list[str] = []
        for m in self._metrics:
            out += m.header()
            out += m.samples()
        return "\n".join(out) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """The series the service exports. One instance per process."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.polls = r.counter(
            "monitor_feed_polls_total",
            "Feed polls by outcome (ok, not_modified, unchanged, error).",
            ["outcome"],
        )
        self.poll_errors = r.counter(
            "monitor_feed_errors_total", "Failed feed polls by error kind.", ["kind"]
        )
        self.fetch_seconds = r.histogram(
            "monitor_fetch_duration_seconds",
            "Time to fetch one feed (waiting for a connection slot included).",
            FETCH_BUCKETS,
        )
        self.items_new = r.counter("monitor_items_new_total", "New items stored.")
        self.items_linked = r.counter(
            "monitor_items_linked_total", "Entries already stored from another feed (linked, not duplicated)."
        )
        self.matches = r.counter(
            "monitor_matches_total", "New items that matched a category, by category.", ["category"]
        )
        self.cycles = r.counter("monitor_poll_cycles_total", "Poll ticks completed.")
        self.cycle_seconds = r.histogram(
            "monitor_poll_cycle_duration_seconds", "Duration of one poll tick (all batches).", CYCLE_BUCKETS
        )
        self.last_poll = r.gauge(
            "monitor_last_poll_timestamp_seconds", "Unix time when the last poll tick finished."
        )
        self.digests = r.counter(
            "monitor_digests_total",
            "Digest runs by digest and outcome (delivered, failed, skipped).",
            ["digest", "outcome"],
        )
        self.pruned = r.counter("monitor_items_pruned_total", "Unmatched items pruned by retention.")
        self.reloads = r.counter("monitor_config_reloads_total", "Config reloads by outcome.", ["outcome"])
        self.feeds = r.gauge("monitor_feeds", "Feeds by health (ok, failing, silent, muted...).", ["health"])
        self.scheduler_up = r.gauge("monitor_scheduler_running", "1 while the scheduler runs.")
        self.job_errors = r.counter("monitor_job_errors_total", "Scheduled jobs that raised.", ["job"])

    def render(self) -> str:
        return self.registry.render()
