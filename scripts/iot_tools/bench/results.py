"""Everything one bench run measured, as raw figures (written to bench-results.json), and
the summary figures the targets and the report are computed from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.bench.chart import ChartTiming
from iot_tools.bench.faults import FaultTimings
from iot_tools.bench.labels import INGEST_PROBED
from iot_tools.bench.latency import Percentiles, median_of_rounds
from iot_tools.bench.memory import Rss
from iot_tools.bench.stats import median
from iot_tools.bench.throughput import RunResult, Split


@dataclass
class Results:
    started_at: str
    command: str
    settings: dict
    load_average: tuple[float, float, float]
    others_running: list[str]
    machine: dict[str, str]
    # condition -> endpoint label -> one Percentiles per round
    latency: dict[str, dict[str, list[Percentiles]]] = field(default_factory=dict)
    latency_failures: dict[str, dict[str, int]] = field(default_factory=dict)
    throughput: dict[str, list[RunResult]] = field(default_factory=dict)
    probe_rate: float = 0.0  # probes/s of the "with probes" runs, while on
    # Cores that probe traffic at probe_factor x the kubelet rate costs, per process.
    probe_cpu: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0  # ingest_iot's BATCH_SIZE in this run
    faults: dict[str, FaultTimings] = field(default_factory=dict)
    rss: dict[str, dict[str, Rss]] = field(default_factory=dict)  # phase -> service -> Rss
    chart: list[ChartTiming] = field(default_factory=list)
    duration_s: float = 0.0

    # -- summary figures ------------------------------------------------------------------

    def latency_of(self, condition: str, label: str) -> Percentiles:
        return median_of_rounds(self.latency[condition][label])

    def rate(self, variant: str) -> float:
        return median([run.rate for run in self.throughput.get(variant, [])])

    def probe_splits(self) -> list[Split]:
        """Of every run with probe traffic switched on and off."""
        return [run.split for run in self.throughput.get(INGEST_PROBED, []) if run.split]

    def probing_ratio(self) -> float:
        """Rate while probing ÷ rate while not, over all such runs' windows pooled (every
        window counts by its length; per-run ratios are noisier than their pool)."""
        splits = self.probe_splits()
        return Split(sum(s.on_rows for s in splits), sum(s.on_seconds for s in splits),
                     sum(s.off_rows for s in splits), sum(s.off_seconds for s in splits)).ratio

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")
