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
from iot_tools.bench.throughput import RunResult
from iot_tools.bench.windows import Split, pooled


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

    def splits(self, variant: str) -> list[Split]:
        """Of every run of `variant` whose rows were split into "on" and "off" windows."""
        return [run.split for run in self.throughput.get(variant, []) if run.split]

    def probing_ratio(self, variant: str = INGEST_PROBED) -> float:
        """Rate while probing ÷ rate while not, over all runs' windows pooled (every window
        counts by its length; per-run ratios are noisier than their pool). For INGEST, whose
        windows are labels without traffic, the control: 1 but for noise."""
        return pooled(self.splits(variant)).ratio

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def read_json(cls, path: Path) -> Results:
        """The figures write_json wrote (to render the report again without measuring)."""
        data = json.loads(path.read_text())

        def run(raw: dict) -> RunResult:
            split = raw.pop("split")
            return RunResult(**raw, split=Split(**split) if split else None)

        return cls(**{
            **data,
            "load_average": tuple(data["load_average"]),
            "latency": {condition: {label: [Percentiles(**p) for p in rounds]
                                    for label, rounds in labels.items()}
                        for condition, labels in data["latency"].items()},
            "throughput": {variant: [run(raw) for raw in runs]
                           for variant, runs in data["throughput"].items()},
            "faults": {fault: FaultTimings(**raw) for fault, raw in data["faults"].items()},
            "rss": {phase: {name: Rss(**raw) for name, raw in services.items()}
                    for phase, services in data["rss"].items()},
            "chart": [ChartTiming(**raw) for raw in data["chart"]],
        })
