"""The bench report's SVG charts (iot_tools.bench.charts), rendered through the CLI's
`--from-json` path from raw figures: well-formed, linked from the Markdown, one series per
variant whose points follow the measured rates."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from iot_tools.bench.chart import ChartTiming
from iot_tools.bench.charts import write_charts
from iot_tools.bench.faults import FaultTimings
from iot_tools.bench.labels import BARE_LABEL, IDLE, LOAD
from iot_tools.bench.latency import Percentiles
from iot_tools.bench.memory import Rss
from iot_tools.bench.results import Results
from iot_tools.bench.throughput import RunResult

SVG = "{http://www.w3.org/2000/svg}"
RATES = {"ingest_iot": [19000.0, 20000.0, 19500.0],
         "fetch-and-ack ceiling": [29000.0, 30000.0, 28000.0],
         "one-INSERT writer": [2000.0, 2100.0, 1900.0]}
ENDPOINTS = (BARE_LABEL, "ingest_iot /ready")


def _run(variant: str, rate: float) -> RunResult:
    cores = {"ingest_iot": 0.9, "postgresql": 0.3, "nats-server": 0.1, "machine": 1.4}
    return RunResult(variant, 1000, rate, 1000 / rate, cores, None)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Results]:
    directory = tmp_path_factory.mktemp("bench")
    results = Results(
        started_at="2026-01-01 00:00 UTC", command="python -m iot_tools.bench", settings={},
        load_average=(0.1, 0.2, 0.3), others_running=[], machine={"CPU": "x"},
        latency={condition: {label: [Percentiles(0.3 * k, 0.9 * k, 100)]
                             for k, label in enumerate(ENDPOINTS, start=1)}
                 for condition in (IDLE, LOAD)},
        throughput={variant: [_run(variant, rate) for rate in rates]
                    for variant, rates in RATES.items()},
        faults={"NATS killed": FaultTimings({"ingest_iot": [0.1, 0.2], "ui_iot": [None]},
                                            {"ingest_iot": [0.5, 0.6], "ui_iot": [None]},
                                            [0.02])},
        rss={"idle": {"a": Rss(40.0, 41.0)}},
        chart=[ChartTiming(3, 0.25, 0.05, 0.05, 0.08, 23, 2)])
    raw = directory / "results.json"
    results.write_json(raw)
    # Through the JSON round trip, as `--from-json` reads figures (the full Markdown needs
    # every phase's figures; the committed document's links are checked below).
    write_charts(Results.read_json(raw), directory / "docs")
    return directory / "docs", results


def _parse(path: Path) -> ET.Element:
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text and "url(" not in text and "https://" not in text
    return ET.fromstring(text)


def test_throughput_has_one_series_per_variant_following_the_rates(written) -> None:
    directory, _results = written
    svg = _parse(directory / "benchmarks-throughput.svg")
    lines = {p.get("data-series"): p for p in svg.iter(f"{SVG}polyline")}
    assert set(lines) == set(RATES)
    for variant, rates in RATES.items():
        ys = [float(pair.split(",")[1]) for pair in lines[variant].get("points").split()]
        assert len(ys) == len(rates)
        # Higher rate, higher on the page (smaller y), round by round.
        order = sorted(range(len(rates)), key=lambda i: rates[i])
        assert sorted(range(len(ys)), key=lambda i: -ys[i]) == order


def test_latency_has_idle_and_load_series_for_every_endpoint_and_the_baseline(written) -> None:
    directory, _results = written
    svg = _parse(directory / "benchmarks-latency.svg")
    bars = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "series"]
    names = {r.get("data-series") for r in bars}
    assert names == {"idle p50", "idle p99", "under load p50", "under load p99"}
    assert len(bars) == len(names) * len(ENDPOINTS)
    titles = [r.find(f"{SVG}title").text for r in bars]
    assert any(t.startswith(f"{BARE_LABEL} (baseline), idle p99: 0.9 ms") for t in titles)


def test_faults_chart_shows_detection_and_recovery_and_never(written) -> None:
    directory, _results = written
    svg = _parse(directory / "benchmarks-faults.svg")
    series = {e.get("data-series") for e in svg.iter() if e.get("class") == "series"}
    assert series == {"detection", "recovery"}
    nevers = [t for t in svg.iter(f"{SVG}text") if t.text == "never"]
    assert len(nevers) == 2  # ui_iot never detected nor recovered


def test_the_committed_document_links_charts_that_exist() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.svg)\)", (docs / "benchmarks.md").read_text())
    assert sorted(links) == ["benchmarks-faults.svg", "benchmarks-latency.svg",
                             "benchmarks-throughput.svg"]
    for link in links:
        _parse(docs / link)

