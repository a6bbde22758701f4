"""Prometheus metrics for one service process, served as /metrics on the health port.

One `CollectorRegistry` per process, owned by the health kit (`HealthState.metrics`): never
prometheus_client's module-level default registry, so that several kits in one interpreter
(tests, the bench) never share or collide.

A scrape does no I/O. Everything it reads is already in memory: the health kit's last
check results and counters are read by custom collectors at scrape time; histograms and
labelled counters are updated where the work happens; values another component fetches on
its own schedule (a JetStream consumer's pending count) are read as they were last fetched.
Of prometheus_client's own collectors only the garbage collector's (in-memory counters)
and the platform's (computed once at start) are registered; the process collector is not,
because it reads /proc on every scrape and the kubelet already reports the container's CPU
and memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector

# The classic text format every Prometheus-compatible scraper reads (our names need none of
# format 1.0.0's escaping, so the body is the same either way).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the health kit knows right now, as the metrics show it."""

    service: str
    ready: Mapping[str, bool]
    live: Mapping[str, bool]
    loop_lag_seconds: float


class _HealthCollector(Collector):
    """Readiness and liveness per check, read from the kit's in-memory state at scrape."""

    def __init__(self, snapshot: Callable[[], HealthSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        state = self._snapshot()
        info = GaugeMetricFamily("iot_service_info", "The service this process runs (always 1).",
                                 labels=["service"])
        info.add_metric([state.service], 1)
        yield info
        for kind, checks in (("readiness", state.ready), ("liveness", state.live)):
            overall = GaugeMetricFamily(
                f"iot_{'ready' if kind == 'readiness' else 'live'}",
                f"1 when every {kind} check passes (the probe answers 200), else 0.")
            overall.add_metric([], float(all(checks.values())))
            yield overall
            family = GaugeMetricFamily(f"iot_{kind}_check",
                                       f"1 while the {kind} check passes, 0 while it fails.",
                                       labels=["check"])
            for name, ok in checks.items():
                family.add_metric([name], float(ok))
            yield family
        yield GaugeMetricFamily("iot_event_loop_lag_seconds",
                                "How late the health monitor's last tick woke up.",
                                value=state.loop_lag_seconds)


class _CountersCollector(Collector):
    """Counters the service keeps in a plain dict (the same ones /health shows in JSON),
    read at scrape time: one source, nothing counted twice."""

    def __init__(self, name: str, documentation: str, values: Mapping[str, int],
                 label: str | None, keys: Mapping[str, str]) -> None:
        self._name = name
        self._documentation = documentation
        self._values = values
        self._label = label
        self._keys = keys  # label value (or "" without a label) -> key in `values`

    def collect(self) -> Iterator[Metric]:
        labels = [self._label] if self._label else []
        family = CounterMetricFamily(self._name, self._documentation, labels=labels)
        for label_value, key in self._keys.items():
            family.add_metric([label_value] if self._label else [], self._values.get(key, 0))
        yield family


@dataclass(frozen=True, slots=True)
class ConsumerPosition:
    """A JetStream consumer's backlog as its last consumer info showed it (fetched by the
    consumer's own periodic check, never by a scrape)."""

    pending: int  # in the stream, not yet delivered to the consumer: the lag
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int  # delivered more than once and not yet acknowledged
    fetched_at: float  # time.monotonic() of the consumer info


class _ConsumersCollector(Collector):
    """The backlog of every JetStream consumer of the process, as last fetched."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._consumers: dict[tuple[str, str], Callable[[], ConsumerPosition | None]] = {}

    def add(self, stream: str, consumer: str,
            read: Callable[[], ConsumerPosition | None]) -> None:
        self._consumers[(stream, consumer)] = read

    def collect(self) -> Iterator[Metric]:
        labels = ["stream", "consumer"]
        families = {
            "pending": GaugeMetricFamily(
                "iot_consumer_pending_messages",
                "Messages in the stream not yet delivered to the consumer (its lag).",
                labels=labels),
            "ack_pending": GaugeMetricFamily(
                "iot_consumer_ack_pending_messages",
                "Messages delivered to the consumer and not yet acknowledged.", labels=labels),
            "redelivered": GaugeMetricFamily(
                "iot_consumer_redelivered_messages",
                "Unacknowledged messages delivered more than once.", labels=labels),
            "age": GaugeMetricFamily(
                "iot_consumer_info_age_seconds",
                "Age of the consumer info the three gauges above come from.", labels=labels),
        }
        now = self._clock()
        for (stream, consumer), read in self._consumers.items():
            position = read()
            if position is None:
                continue  # not bound yet: no figure rather than a made-up 0
            key = [stream, consumer]
            families["pending"].add_metric(key, position.pending)
            families["ack_pending"].add_metric(key, position.ack_pending)
            families["redelivered"].add_metric(key, position.redelivered)
            families["age"].add_metric(key, max(0.0, now - position.fetched_at))
        yield from families.values()


class Metrics:
    """A process's metrics: its own registry, and helpers that register into it."""

    def __init__(self) -> None:
        # `_created` series would double every counter's series for a start time nobody
        # queries here (process restarts show as counter resets anyway). The switch is the
        # library's own and process-wide; setting it again is harmless.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._consumers = _ConsumersCollector(time.monotonic)
        self.registry.register(self._consumers)

    def watch_health(self, snapshot: Callable[[], HealthSnapshot]) -> None:
        self.registry.register(_HealthCollector(snapshot))

    def watch_consumer(self, stream: str, consumer: str,
                       read: Callable[[], ConsumerPosition | None]) -> None:
        """Show a JetStream consumer's backlog; `read` returns what it last fetched."""
        self._consumers.add(stream, consumer, read)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets: Sequence[float],
                  labels: Sequence[str] = ()) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def expose_counters(self, name: str, documentation: str, values: Mapping[str, int],
                        keys: Mapping[str, str] | str, label: str | None = None) -> None:
        """Show counters kept in `values` as the counter `name` (`_total` is added): either
        one key (`keys` a string), or one sample per label value (`keys` maps each value of
        `label` to its key)."""
        if isinstance(keys, str):
            if label is not None:
                raise ValueError("a single key takes no label")
            keys = {"": keys}
        elif label is None:
            raise ValueError("several keys need a label to tell them apart")
        self.registry.register(
            _CountersCollector(name, documentation, values, label, dict(keys)))

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)
