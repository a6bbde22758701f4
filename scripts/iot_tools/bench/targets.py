"""The issue's targets for a 2-core machine, each judged on the run's figures. Where a figure
has repetitions, latency targets use the median over rounds of each round's p99, and fault
targets the worst repetition of any service (a slow outlier must not hide behind a median)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from iot_tools.bench.labels import (
    BARE_LABEL,
    CEILING,
    IDLE,
    INGEST,
    INGEST_FETCH,
    LOAD,
    NATS_FROZEN,
    NATS_KILLED,
    ONE_INSERT,
    POSTGRES_KILLED,
)
from iot_tools.bench.results import Results
from iot_tools.services import SERVICES


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    limit: str
    met: bool


def _worst_ready_p99(results: Results, condition: str) -> tuple[float, str]:
    return max((results.latency_of(condition, f"{name} /ready").p99_ms, name)
               for name in SERVICES)


def _worst(values: dict[str, list[float | None]]) -> tuple[float, str]:
    """The largest figure of any service and repetition; inf where one never happened."""
    return max((math.inf if value is None else value, name)
               for name, figures in values.items() for value in figures)


def evaluate(results: Results) -> list[Verdict]:
    verdicts = []
    for condition, limit in ((IDLE, 5.0), (LOAD, 50.0)):
        p99, name = _worst_ready_p99(results, condition)
        verdicts.append(Verdict(f"/ready p99, {condition} (slowest service)",
                                f"{p99:.2f} ms ({name})", f"≤ {limit:g} ms", p99 <= limit))
    ingest_ready = results.latency_of(LOAD, f"{INGEST} /ready").p99_ms
    bare = results.latency_of(LOAD, BARE_LABEL).p99_ms
    verdicts.append(Verdict("ingest_iot /ready p99 under load ÷ bare aiohttp",
                            f"{ingest_ready / bare:.1f}x ({ingest_ready:.2f} ÷ {bare:.2f} ms)",
                            "≤ 2x", ingest_ready <= 2 * bare))
    ingest = results.rate(INGEST)
    cost = 1 - results.probing_ratio()
    verdicts.append(Verdict(
        f"throughput lost to probe traffic ({results.probe_rate:.1f} probes/s)",
        f"{cost * 100:+.1f} %", "≤ 2 %", cost <= 0.02))
    verdicts.append(Verdict("ingest, ack after commit", f"{ingest:,.0f} msg/s",
                            "≥ 20,000 msg/s", ingest >= 20_000))
    share = ingest / results.rate(CEILING)
    verdicts.append(Verdict("ingest ÷ lean pull ceiling", f"{share * 100:.0f} %", "≥ 50 %",
                            share >= 0.5))
    gain = ingest / results.rate(INGEST_FETCH)
    verdicts.append(Verdict("ingest ÷ ingest on nats-py fetch", f"{gain:.1f}x", "≥ 2x",
                            gain >= 2))
    factor = ingest / results.rate(ONE_INSERT)
    verdicts.append(Verdict("ingest ÷ one-INSERT writer", f"{factor:.1f}x", "≥ 4x",
                            factor >= 4))
    for fault, limit in ((NATS_KILLED, 1.0), (NATS_FROZEN, 30.0), (POSTGRES_KILLED, 3.0)):
        seconds, name = _worst(results.faults[fault].detection)
        verdicts.append(Verdict(f"detection, {fault} (worst)", f"{seconds:.2f} s ({name})",
                                f"≤ {limit:g} s", seconds <= limit))
    seconds, name, fault = max((*_worst(timings.recovery), fault)
                               for fault, timings in results.faults.items())
    verdicts.append(Verdict("recovery, any fault (worst)", f"{seconds:.2f} s ({name}, {fault})",
                            "≤ 5 s", seconds <= 5.0))
    peak, name = max((rss.peak_mb, name) for name, rss in results.rss["under load"].items())
    verdicts.append(Verdict("peak RSS under load (largest service)", f"{peak:.0f} MB ({name})",
                            "≤ 100 MB", peak <= 100))
    return verdicts
