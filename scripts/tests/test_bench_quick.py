"""`make bench` end to end, in its --quick form (every phase once, small volumes): the real
stack starts, every throughput variant moves every message into exactly one row (the bench
itself refuses a run whose rows differ from its messages), every latency sample is answered,
and the report renders. The bench once stopped at start-up for weeks without a test noticing
(ui_iot had come to require AUTH_ISSUER_URL); this is that test. The figures of a quick run are
not for publishing: only that each was measured is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from iot_tools.bench.labels import (
    CEILING,
    COMMIT_ONLY,
    FETCH_CEILING,
    INGEST,
    INGEST_FETCH,
    ONE_INSERT,
    VALIDATION_ONLY,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VARIANTS = (INGEST, INGEST_FETCH, CEILING, FETCH_CEILING, ONE_INSERT, VALIDATION_ONLY,
            COMMIT_ONLY)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bench-quick")
    raw, doc = directory / "results.json", directory / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "iot_tools.bench", "--quick", "--json", str(raw),
         "--doc", str(doc)],
        check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(raw.read_text()), doc.read_text()


def test_quick_bench_measures_every_throughput_variant(quick_run):
    results, _ = quick_run
    for variant in VARIANTS:
        runs = results["throughput"].get(variant)
        assert runs, f"{variant}: not measured"
        assert all(run["rate"] > 0 for run in runs), variant


def test_quick_bench_probes_every_service_idle_and_under_load(quick_run):
    results, _ = quick_run
    for condition, per_endpoint in results["latency"].items():
        labels = set(per_endpoint)
        for service in ("ingest_iot", "evaluator_iot", "ops_worker", "route_delivery",
                        "ui_iot"):
            assert f"{service} /ready" in labels, (condition, service)
        failures = results["latency_failures"].get(condition, {})
        assert not any(failures.values()), (condition, failures)


def test_quick_bench_renders_its_report_with_every_target(quick_run):
    _, doc = quick_run
    assert "### Targets" in doc and "ingest ÷ lean pull ceiling" in doc
