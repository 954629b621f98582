"""The service's Prometheus series, on prometheus-client.

Each `ServiceMetrics` has its own `CollectorRegistry` (not the library's global one), so several services in one
process (tests, the scale-out driver) do not share or clash over series. The small wrappers below keep the
call sites' shape, `metric.inc(outcome="ok")` and `metric.get(outcome="ok")`, so the scheduler does not need to
know the library's `labels(...)` chaining, and reading a value back goes through the registry's public
`get_sample_value` rather than the library's private fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

# The `_created` companion series (one timestamp per labelled series) double the output and nothing here
# graphs them; the hand-written exposition this replaces never had them.
prometheus_client.disable_created_metrics()

# The text format 0.0.4 is what every Prometheus version scrapes; 1.0.0 (the library's latest) only adds
# escaping of names we do not use.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Seconds; covers a 304 on loopback (ms) up to the 60 s total fetch timeout.
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CYCLE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The workspace's own requests: page renders are milliseconds, a search on a large archive can take a second.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _Wrapped:
    def __init__(self, registry: CollectorRegistry, name: str, labels: Sequence[str]) -> None:
        self._registry, self.name, self.label_names = registry, name, tuple(labels)

    def _check(self, labels: dict[str, str]) -> dict[str, str]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return {k: str(v) for k, v in labels.items()}


class Counter(_Wrapped):
    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(registry, name, labels)
        self._metric = prometheus_client.Counter(name, help, list(labels), registry=registry)
        # The library names the family without `_total` and adds it back on the sample.
        self._sample = name if name.endswith("_total") else name + "_total"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        lbl = self._check(labels)
        (self._metric.labels(**lbl) if lbl else self._metric).inc(amount)

    def get(self, **labels: str) -> float:
        return self._registry.get_sample_value(self._sample, self._check(labels)) or 0.0


class Gauge(_Wrapped):
    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(registry, name, labels)
        self._metric = prometheus_client.Gauge(name, help, list(labels), registry=registry)

    def set(self, value: float, **labels: str) -> None:
        lbl = self._check(labels)
        (self._metric.labels(**lbl) if lbl else self._metric).set(value)

    def get(self, **labels: str) -> float | None:
        return self._registry.get_sample_value(self.name, self._check(labels))


class SnapshotGauge(_Wrapped, Collector):
    """A labelled gauge whose whole set of series is replaced at once (feeds by health): a state no feed is in
    any more disappears, and a scrape never sees half of the old set and half of the new."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str]) -> None:
        super().__init__(registry, name, labels)
        self.help = help
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def replace(self, values: Iterable[tuple[dict[str, str], float]]) -> None:
        new = {tuple(self._check(lbl)[n] for n in self.label_names): float(v) for lbl, v in values}
        self._values = new  # one reference swap: collect() reads either the old dict or the new one

    def get(self, **labels: str) -> float | None:
        lbl = self._check(labels)
        return self._values.get(tuple(lbl[n] for n in self.label_names))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.help, labels=list(self.label_names))
        for key, value in sorted(self._values.items()):
            family.add_metric(list(key), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.help, labels=list(self.label_names))


class Histogram(_Wrapped):
    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(registry, name, labels)
        self._metric = prometheus_client.Histogram(
            name, help, list(labels), registry=registry, buckets=tuple(buckets)
        )

    def observe(self, value: float, **labels: str) -> None:
        lbl = self._check(labels)
        (self._metric.labels(**lbl) if lbl else self._metric).observe(value)

    def count(self, **labels: str) -> int:
        return int(self._registry.get_sample_value(self.name + "_count", self._check(labels)) or 0)


class ServiceMetrics:
    """The series the service exports. One instance per service."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.polls = Counter(
            r,
            "monitor_feed_polls_total",
            "Feed polls by outcome (ok, not_modified, unchanged, error).",
            ["outcome"],
        )
        self.poll_errors = Counter(
            r, "monitor_feed_errors_total", "Failed feed polls by error kind.", ["kind"]
        )
        self.fetch_seconds = Histogram(
            r,
            "monitor_fetch_duration_seconds",
            "Time to fetch one feed (waiting for a connection slot included).",
            FETCH_BUCKETS,
        )
        self.items_new = Counter(r, "monitor_items_new_total", "New items stored.")
        self.items_linked = Counter(
            r,
            "monitor_items_linked_total",
            "Entries already stored from another feed (linked, not duplicated).",
        )
        self.matches = Counter(
            r, "monitor_matches_total", "New items that matched a category, by category.", ["category"]
        )
        self.cycles = Counter(r, "monitor_poll_cycles_total", "Poll ticks completed.")
        self.cycle_seconds = Histogram(
            r,
            "monitor_poll_cycle_duration_seconds",
            "Duration of one poll tick (all batches).",
            CYCLE_BUCKETS,
        )
        self.last_poll = Gauge(
            r, "monitor_last_poll_timestamp_seconds", "Unix time when the last poll tick finished."
        )
        self.digests = Counter(
            r,
            "monitor_digests_total",
            "Digest runs by digest and outcome (delivered, failed, skipped).",
            ["digest", "outcome"],
        )
        self.pruned = Counter(r, "monitor_items_pruned_total", "Unmatched items pruned by retention.")
        self.reloads = Counter(r, "monitor_config_reloads_total", "Config reloads by outcome.", ["outcome"])
        self.feeds = SnapshotGauge(
            r, "monitor_feeds", "Feeds by health (ok, failing, silent, muted...).", ["health"]
        )
        self.scheduler_up = Gauge(r, "monitor_scheduler_running", "1 while the scheduler runs.")
        self.job_errors = Counter(r, "monitor_job_errors_total", "Scheduled jobs that raised.", ["job"])
        # The workspace (monitor.web)
        self.http_requests = Counter(
            r,
            "monitor_http_requests_total",
            "HTTP requests answered, by route group and status class.",
            ["route", "status"],
        )
        self.http_seconds = Histogram(
            r, "monitor_http_request_duration_seconds", "Time to answer one HTTP request.", REQUEST_BUCKETS
        )
        self.workspace_writes = Counter(
            r, "monitor_workspace_writes_total", "Writes made in the workspace, by action.", ["action"]
        )
        self.logins = Counter(
            r, "monitor_logins_total", "Login attempts by outcome (ok, failed).", ["outcome"]
        )

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")


__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "ServiceMetrics", "SnapshotGauge"]
