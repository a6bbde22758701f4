"""How much the bench measures: the full run behind docs/benchmarks.md, and --quick, a smoke
run that exercises every phase in about a minute (its figures are not for publishing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    # Repetitions of every throughput variant, interleaved (figures: medians over these).
    rounds: int = 7
    # Readings published once and replayed by every ingest and ceiling run.
    messages: int = 200_000
    # The one-INSERT writer is ~10x slower: fewer messages keep its runs as long as others.
    one_insert_messages: int = 15_000
    devices: int = 1000
    # Idle probe latency: rounds x requests per endpoint per round.
    idle_rounds: int = 5
    idle_samples: int = 100
    # Pause between two latency samples (one request at a time, round-robin): enough samples
    # for a p99 per run, little enough traffic not to be the load itself.
    sample_pause: float = 0.004
    # Probe traffic of the "with probes" ingest runs: this many times the kubelet's rate.
    probe_factor: float = 10.0
    # ... switched on and off in blocks of this many seconds within each such run.
    probe_block: float = 0.5
    # CPU cost of the probe traffic, idle stack: this long without, this long with probes
    # at probe_cpu_factor x the kubelet rate (scaled back to probe_factor per probe).
    probe_cpu_seconds: float = 5.0
    probe_cpu_factor: float = 200.0
    kill_repeats: int = 5
    freeze_repeats: int = 3
    chart_repeats: int = 5


FULL = Settings()
QUICK = Settings(rounds=1, messages=30_000, one_insert_messages=2_000, idle_rounds=1,
                 idle_samples=30, probe_block=0.1, probe_cpu_seconds=2.0, kill_repeats=1,
                 freeze_repeats=1, chart_repeats=1)
