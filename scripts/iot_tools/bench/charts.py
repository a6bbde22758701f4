"""SVG charts of a bench run, written next to docs/benchmarks.md and linked from it: probe
latency idle vs under load against the bare baseline, ingest throughput per round for every
variant, detection/recovery per fault. Plain SVG (no script, no fonts fetched) so that the
Markdown renderer shows them as images wherever the document is read."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from iot_tools.bench.labels import BARE_LABEL, IDLE, LOAD
from iot_tools.bench.results import Results
from iot_tools.bench.stats import median

SVG_NS = "http://www.w3.org/2000/svg"
PALETTE = ("#2c6fd6", "#d35400", "#2e9e5b", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d",
           "#b7950b")
LATENCY, THROUGHPUT, FAULTS = ("benchmarks-latency.svg", "benchmarks-throughput.svg",
                               "benchmarks-faults.svg")


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
            '<style>text{font:11px system-ui,sans-serif;fill:#1d232b}'
            '.title{font-size:13px;font-weight:600}</style>',
            f'<rect width="{width}" height="{height}" fill="#fff"/>',
            f'<text x="10" y="18" class="title">{_esc(title)}</text>']


def _bars(title: str, groups: Sequence[str], series: dict[str, Sequence[float | None]],
          unit: str) -> str:
    """Horizontal grouped bars: one group per row label, one bar per series in it."""
    bar, gap, left, width = 9, 8, 260, 900
    per_group = len(series) * bar + gap
    height = 50 + len(groups) * per_group + 20 * len(series)
    peak = max((v for values in series.values() for v in values if v is not None),
               default=1.0) or 1.0
    out = _open(width, height, title)
    for g, group in enumerate(groups):
        top = 34 + g * per_group
        out.append(f'<text x="{left - 6}" y="{top + len(series) * bar / 2 + 4}" '
                   f'text-anchor="end">{_esc(group)}</text>')
        for s, (name, values) in enumerate(series.items()):
            value = values[g]
            y = top + s * bar
            if value is None:  # never happened (e.g. a service never detected a fault)
                out.append(f'<text x="{left + 2}" y="{y + 8}" class="series" '
                           f'data-series="{_esc(name)}">never</text>')
                continue
            length = max((width - left - 90) * value / peak, 0.5)
            out.append(f'<rect class="series" data-series="{_esc(name)}" x="{left}" y="{y}" '
                       f'width="{length:.2f}" height="{bar - 1}" fill="{PALETTE[s]}">'
                       f'<title>{_esc(group)}, {_esc(name)}: {value:.3g} {unit}</title></rect>')
            out.append(f'<text x="{left + length + 3:.2f}" y="{y + 8}">{value:.3g}</text>')
    legend_top = height - 20 * len(series) - 6
    for s, name in enumerate(series):
        y = legend_top + s * 20
        out.append(f'<rect x="{left}" y="{y}" width="12" height="12" fill="{PALETTE[s]}"/>')
        out.append(f'<text x="{left + 18}" y="{y + 10}">{_esc(name)} ({unit})</text>')
    out.append("</svg>")
    return "\n".join(out)


def latency_chart(results: Results) -> str:
    """p50 and p99 per endpoint, idle and under load; the bare aiohttp server is a row of its
    own so every endpoint reads against it."""
    labels = list(results.latency[IDLE])
    series = {}
    for condition in (IDLE, LOAD):
        figures = [results.latency_of(condition, label) for label in labels]
        series[f"{condition} p50"] = [f.p50_ms for f in figures]
        series[f"{condition} p99"] = [f.p99_ms for f in figures]
    groups = [label.replace(BARE_LABEL, f"{BARE_LABEL} (baseline)") for label in labels]
    return _bars("Probe latency, median of rounds (ms): idle vs under load, against the bare "
                 "baseline", groups, series, "ms")


def throughput_chart(results: Results) -> str:
    """msg/s of every round, one line per variant (a flat line is a steady measurement)."""
    left, width, height, right = 70, 940, 380, 270
    variants = list(results.throughput)
    rounds = max((len(runs) for runs in results.throughput.values()), default=1)
    peak = max((run.rate for runs in results.throughput.values() for run in runs),
               default=1.0)
    plot_w, plot_h, top = width - left - right, height - 80, 34

    def x(i: int) -> float:
        return left + (plot_w * i / (rounds - 1) if rounds > 1 else plot_w / 2)

    def y(rate: float) -> float:
        return top + plot_h - plot_h * rate / peak

    out = _open(width, height, "Ingest throughput per round (msg/s), every variant")
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#ccc"/>')
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<text x="{left - 4}" y="{y(peak * fraction) + 4:.1f}" '
                   f'text-anchor="end">{peak * fraction:,.0f}</text>')
    for i in range(rounds):
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                   f'{i + 1}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 30}" '
               'text-anchor="middle">round</text>')
    for s, variant in enumerate(variants):
        runs = results.throughput[variant]
        colour = PALETTE[s % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(run.rate):.1f}" for i, run in enumerate(runs))
        out.append(f'<polyline class="series" data-series="{_esc(variant)}" points="{points}" '
                   f'fill="none" stroke="{colour}" stroke-width="2"><title>{_esc(variant)}: '
                   f'{", ".join(f"{run.rate:,.0f}" for run in runs)} msg/s</title></polyline>')
        for i, run in enumerate(runs):
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(run.rate):.1f}" r="2.5" '
                       f'fill="{colour}"/>')
        out.append(f'<rect x="{left + plot_w + 12}" y="{top + s * 18}" width="12" height="12" '
                   f'fill="{colour}"/>')
        out.append(f'<text x="{left + plot_w + 30}" y="{top + s * 18 + 10}">{_esc(variant)} '
                   f'({median([run.rate for run in runs]):,.0f})</text>')
    out.append("</svg>")
    return "\n".join(out)


def _median_or_none(values: Sequence[float | None]) -> float | None:
    if not values or any(value is None for value in values):
        return None
    return median([value for value in values if value is not None])


def faults_chart(results: Results) -> str:
    groups, detection, recovery = [], [], []
    for fault, timings in results.faults.items():
        for name in timings.detection:
            groups.append(f"{fault}: {name}")
            detection.append(_median_or_none(timings.detection[name]))
            recovery.append(_median_or_none(timings.recovery[name]))
    return _bars("Detection and recovery per fault (/ready, median s)", groups,
                 {"detection": detection, "recovery": recovery}, "s")


def write_charts(results: Results, directory: Path) -> dict[str, Path]:
    """Write the three charts into `directory`; their paths by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, chart in ((LATENCY, latency_chart), (THROUGHPUT, throughput_chart),
                        (FAULTS, faults_chart)):
        path = directory / name
        path.write_text(chart(results) + "\n", encoding="utf-8")
        written[name] = path
    return written
