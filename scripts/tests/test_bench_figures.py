"""The benchmark's arithmetic, without a stack: percentiles, steady rates and the on/off split
of a run's commits, and the JSON round trip the report is re-rendered from."""

from __future__ import annotations

import math

import pytest
from iot_tools.bench.chart import ChartTiming
from iot_tools.bench.faults import FaultTimings
from iot_tools.bench.latency import Percentiles
from iot_tools.bench.memory import Rss
from iot_tools.bench.results import Results
from iot_tools.bench.stats import median, percentile
from iot_tools.bench.throughput import RunResult
from iot_tools.bench.windows import (
    Split,
    Transaction,
    Window,
    alternating,
    pooled,
    split,
    steady_rate,
)


def test_percentile_is_a_value_that_was_observed():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.50) == 50.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))
    assert median([1.0, 5.0, 2.0]) == 2.0


def steady(rows_per_second: float, seconds: float, batch: int = 500) -> list[Transaction]:
    """A run committing `batch` rows at a constant rate, starting at t = 1000."""
    interval = batch / rows_per_second
    return [Transaction(1000 + index * interval, batch)
            for index in range(int(seconds / interval) + 1)]


def test_steady_rate_leaves_out_the_last_transaction():
    assert steady_rate(steady(10_000, 10)) == pytest.approx(10_000)
    assert steady_rate([Transaction(0, 500)]) == 0.0


def test_split_of_a_constant_rate_is_even_whatever_the_window_phase():
    # 0.35 s windows against 0.05 s batches: edges cut transactions, which are apportioned.
    run = steady(10_000, 10)
    result = split(run, alternating(1000.123, 0.35, 25, start_on=True))
    assert result.ratio == pytest.approx(1.0, abs=1e-9)
    assert result.on_seconds == pytest.approx(result.off_seconds, abs=0.36)


def test_split_sees_a_slowdown_confined_to_the_on_windows():
    windows = alternating(1000.0, 1.0, 10, start_on=True)
    run, now = [], 1000.0
    while now < 1010:
        run.append(Transaction(now, 500))
        probing = int(now - 1000) % 2 == 0
        now += 500 / (9_000 if probing else 10_000)
    assert split(run, windows).ratio == pytest.approx(0.9, abs=0.01)


def test_windows_outside_the_run_do_not_count_and_one_state_alone_is_refused():
    run = steady(10_000, 2)
    with pytest.raises(ValueError, match="too short"):
        split(run, [Window(1000.0, 1001.5, True), Window(1001.5, 1003.0, False)])


def test_pooling_weighs_runs_by_their_time():
    pooled_split = pooled([Split(100, 1, 100, 1), Split(300, 3, 200, 2)])
    assert pooled_split.ratio == pytest.approx((400 / 4) / (300 / 3))


def test_results_survive_the_json_round_trip(tmp_path):
    results = Results(
        started_at="2026-01-01 00:00 UTC", command="python -m iot_tools.bench", settings={},
        load_average=(0.1, 0.2, 0.3), others_running=[], machine={"CPU": "x"},
        latency={"idle": {"a /ready": [Percentiles(0.3, 0.9, 100)]}},
        throughput={"ingest_iot": [RunResult("ingest_iot", 10, 5.0, 2.0, {"machine": 1.2},
                                             Split(1.0, 2.0, 3.0, 4.0))]},
        faults={"NATS killed": FaultTimings({"a": [0.1, None]}, {"a": [0.5, 0.6]}, [0.02])},
        rss={"idle": {"a": Rss(40.0, 41.0)}},
        chart=[ChartTiming(3, 0.25, 0.05, 0.05, 0.08, 23, 2)])
    path = tmp_path / "results.json"
    results.write_json(path)
    assert Results.read_json(path) == results
