"""The chart's cost to a user: wall time of `helm template` plus full strict validation in a
fresh Python process (interpreter start and schema loading included), per Helm major."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ChartTiming:
    helm: int
    wall_s: float
    template_s: float
    parse_s: float
    validate_s: float
    objects: int
    kube_versions: int


def time_chart(major: int) -> ChartTiming:
    began = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "iot_tools.bench.chart_check",
                              "--helm", str(major)],
                             capture_output=True, text=True, timeout=300, check=False)
    wall = time.monotonic() - began
    if process.returncode != 0:
        raise RuntimeError(f"chart check (Helm {major}) failed:\n{process.stderr[-3000:]}")
    return ChartTiming(helm=major, wall_s=wall, **json.loads(process.stdout))
