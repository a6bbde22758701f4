"""Probe latency as the kubelet sees it: one HTTP GET per probe on a new TCP connection (no
keep-alive), timed from connect to the last byte of the body, round-robin over the targets so
that every target sees the same conditions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from iot_tools.bench.background import Background
from iot_tools.bench.stats import median, percentile
from iot_tools.services import http_get

# A probe the kubelet would time out on; here a failure to count, not a sample.
TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Endpoint:
    label: str  # e.g. "ingest_iot /ready"
    port: int
    path: str


@dataclass
class Samples:
    """Latencies (s) per endpoint label, and the requests that got no answer."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


def sample_once(endpoint: Endpoint, samples: Samples) -> None:
    answer = http_get(endpoint.port, endpoint.path, TIMEOUT_SECONDS)
    if answer.status is None:
        samples.failures[endpoint.label] = samples.failures.get(endpoint.label, 0) + 1
    else:
        samples.seconds.setdefault(endpoint.label, []).append(answer.seconds)


def sample_rounds(endpoints: list[Endpoint], per_endpoint: int, pause: float = 0.0) -> Samples:
    """`per_endpoint` requests to each endpoint, interleaved."""
    samples = Samples()
    for _ in range(per_endpoint):
        for endpoint in endpoints:
            sample_once(endpoint, samples)
            if pause:
                time.sleep(pause)
    return samples


class BackgroundSampler(Background):
    """Samples the endpoints round-robin from a thread, one request every `pause` seconds,
    until stopped: latency while something else (ingest at full speed) loads the machine."""

    thread_name = "latency-sampler"

    def __init__(self, endpoints: list[Endpoint], pause: float) -> None:
        super().__init__()
        self.samples = Samples()
        self._endpoints = endpoints
        self._pause = pause

    def _run(self) -> None:
        while not self._stop.is_set():
            for endpoint in self._endpoints:
                sample_once(endpoint, self.samples)
                if self._stop.wait(self._pause):
                    return


@dataclass(frozen=True)
class Percentiles:
    p50_ms: float
    p99_ms: float
    samples: int


def summarise(seconds: list[float]) -> Percentiles:
    return Percentiles(percentile(seconds, 0.50) * 1000, percentile(seconds, 0.99) * 1000,
                       len(seconds))


def median_of_rounds(rounds: list[Percentiles]) -> Percentiles:
    """Each percentile is computed per round; the figure is the median over the rounds."""
    return Percentiles(median([r.p50_ms for r in rounds]), median([r.p99_ms for r in rounds]),
                       sum(r.samples for r in rounds))
