"""The drill report as a picture: one self-contained HTML file (inline SVG and CSS, no script,
nothing fetched) rendered from the very dict the JSON report is written from, so the two never
disagree. `python -m iot_tools.drill.html REPORT.json --html OUT.html [--svg OUT.svg]`
renders it again from a saved report.

Layout: a time axis in drill seconds (real-speed seconds beside each tick: ÷ the time scale),
fault phases shaded across every band, one band per service with lanes for the process state,
the startup, liveness and readiness results (each failed probe a tick whose <title> says why),
restarts marked, and a telemetry lane. Below the picture: the summary and the probe timings.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 1280
LEFT = 170  # room for the service and lane labels
RIGHT = 20
LABEL_ROOM = 170  # about the width of the longest phase label with its verdict
AXIS_TOP = 18
PHASE_ROW = 46  # phase names and verdicts above the bands
LANE = 16
LANE_GAP = 4
BAND_GAP = 14
TELEMETRY_HEIGHT = 90
LANES = ("process", "startup", "liveness", "readiness")
PROBE_KINDS = ("startup", "liveness", "readiness")

# Colours by state; the legend below the picture repeats them.
COLOURS = {
    "waiting": "#d0d4da", "running": "#4c9a5a", "terminating": "#e08a2e",
    "back-off": "#c0392b", "starting": "#e8c14a", "passed": "#4c9a5a", "gated": "#d0d4da",
    "live": "#4c9a5a", "ready": "#4c9a5a", "not ready": "#c0392b", "none": "#eef0f3",
}
PHASE_FILLS = ("#5b8def", "#9b59b6")
SERIES = {"published": "#2c6fd6", "ingested": "#2e9e5b", "quarantined": "#d35400",
          "stored": "#2e9e5b"}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1d232b;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px}
.meta{color:#555;margin:0 0 10px} .pass{color:#1e7b34;font-weight:600}
.fail{color:#b3261e;font-weight:600}
table{border-collapse:collapse;margin:4px 0 12px}
th,td{border:1px solid #d5d9df;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
svg{display:block;max-width:100%;height:auto;border:1px solid #e3e6ea}
svg text{font:11px system-ui,sans-serif;fill:#1d232b}
svg .label{font-weight:600} svg .small{font-size:10px;fill:#555}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px}
details{margin:2px 0}
"""


@dataclass(frozen=True)
class Axis:
    """Drill seconds → x pixels."""

    end: float
    left: float = LEFT
    right: float = WIDTH - RIGHT

    def x(self, t: float) -> float:
        return round(self.left + (self.right - self.left) * max(0.0, min(t, self.end)) /
                     self.end, 2)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    state: str
    why: str


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _nice_step(span: float, ticks: int = 12) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _events(report: dict, service: str) -> list[dict]:
    return [e for e in report.get("timeline", []) if e.get("service") == service]


def _segments(points: Sequence[tuple[float, str, str]], end: float) -> list[Segment]:
    """State changes (t, state, why) → contiguous segments up to `end`."""
    segments = []
    for (t, state, why), nxt in zip(points, [*points[1:], (end, "", "")], strict=True):
        if nxt[0] > t:
            segments.append(Segment(t, nxt[0], state, why))
    return segments


def lane_segments(report: dict, service: str, end: float) -> dict[str, list[Segment]]:
    """Each lane's states over time, read from the timeline events of one service."""
    process: list[tuple[float, str, str]] = [(0.0, "waiting", "not started yet")]
    startup: list[tuple[float, str, str]] = [(0.0, "waiting", "not started yet")]
    liveness: list[tuple[float, str, str]] = [(0.0, "waiting", "not started yet")]
    readiness: list[tuple[float, str, str]] = [(0.0, "not ready", "not started yet")]
    for event in _events(report, service):
        t, kind, detail = event["t"], event["kind"], event["detail"]
        if kind == "launched":
            process.append((t, "running", detail))
            startup.append((t, "starting", "startup probe not passed yet"))
            liveness.append((t, "gated", "gated until the startup probe passes"))
            readiness.append((t, "not ready", "gated until the startup probe passes"))
        elif kind == "started":
            startup.append((t, "passed", detail))
            liveness.append((t, "live", "liveness probed"))
        elif kind == "kill":
            process.append((t, "terminating", detail))
        elif kind in ("exited", "crashed"):
            # Until the next launch the kubelet waits (CrashLoopBackOff, even if brief).
            process.append((t, "back-off", detail))
            startup.append((t, "waiting", "no process"))
            liveness.append((t, "waiting", "no process"))
            readiness.append((t, "not ready", "no process"))
        elif kind == "ready":
            readiness.append((t, "ready", detail))
        elif kind == "not_ready":
            readiness.append((t, "not ready", detail))
    return {"process": _segments(process, end), "startup": _segments(startup, end),
            "liveness": _segments(liveness, end), "readiness": _segments(readiness, end)}


def probe_failures(report: dict, service: str) -> list[dict]:
    """Every failed probe when the report lists them; an older report only has the first
    failure of each streak (its timeline events)."""
    listed = report.get("services", {}).get(service, {}).get("probe_failures")
    if listed is not None:
        return listed
    failures = []
    for event in _events(report, service):
        if event["kind"] == "probe_failed":
            kind, _, detail = event["detail"].partition(" probe failed: ")
            failures.append({"t": event["t"], "kind": kind, "detail": detail})
    return failures


def timeline_end(report: dict) -> float:
    times = [report.get("wall_seconds") or 0.0]
    times += [e["t"] for e in report.get("timeline", [])]
    times += [p["ended_at"] for p in report.get("phases", [])]
    return max(*times, 1.0)


def telemetry_series(report: dict) -> tuple[dict[str, list[tuple[float, int]]], str]:
    """Cumulative published / ingested / quarantined over drill seconds, and where the
    figures come from (said under the lane: a derived series must not pass for a sampled one).
    """
    telemetry = report.get("telemetry", {})
    samples = telemetry.get("samples") or []
    if samples:
        first = samples[0]["published"]
        series: dict[str, list[tuple[float, int]]] = {
            "published": [], "ingested": [], "quarantined": []}
        # ingest's counters restart at 0 with its process: carry the total across restarts.
        carried = {"ingested": 0, "quarantined": 0}
        last = {"ingested": 0, "quarantined": 0}
        for sample in samples:
            series["published"].append((sample["t"], sample["published"] - first))
            for key in ("ingested", "quarantined"):
                value = sample.get("ingest", {}).get(key)
                if value is None:
                    continue
                if value < last[key]:
                    carried[key] += last[key]
                last[key] = value
                series[key].append((sample["t"], carried[key] + value))
        return series, ("sampled every second: published = the feed's acknowledged readings; "
                        "ingested / quarantined = ingest_iot's /health counters (summed across "
                        "its restarts; flat while it does not answer)")
    # No samples (a report from before they were recorded): the per-phase accounting only.
    series = {"published": [], "stored": []}
    phases = report.get("phases", [])
    if phases:
        origin = phases[0]["telemetry"]["published_range"][0]
        series["published"].append((phases[0]["started_at"], 0))
        series["stored"].append((phases[0]["started_at"], 0))
        lost = 0
        for phase in phases:
            end = phase["telemetry"]["published_range"][1] - origin
            lost += phase["telemetry"].get("lost") or 0
            series["published"].append((phase["ended_at"], end))
            series["stored"].append((phase["ended_at"], end - lost))
    return series, ("derived from the per-phase accounting (this report has no samples): "
                    "readings published by each phase's end and how many of them were "
                    "eventually stored; straight lines between phase ends")


def _rect(x0: float, x1: float, y: float, h: float, *, fill: str, title: str,
          cls: str = "", extra: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return (f'<rect{attr} x="{x0}" y="{y}" width="{max(round(x1 - x0, 2), 0.5)}" '
            f'height="{h}" fill="{fill}"{extra}><title>{_esc(title)}</title></rect>')


def render_svg(report: dict) -> str:
    """The timeline picture as a standalone SVG document (well-formed XML)."""
    end = timeline_end(report)
    axis = Axis(end)
    scale = report.get("time_scale") or 1.0
    services = list(report.get("services", {}))
    band_height = len(LANES) * (LANE + LANE_GAP)
    bands_top = AXIS_TOP + 30 + PHASE_ROW
    telemetry_top = bands_top + len(services) * (band_height + BAND_GAP) + 10
    height = telemetry_top + TELEMETRY_HEIGHT + 40
    out: list[str] = [
        f'<svg xmlns="{SVG_NS}" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="probe drill timeline">',
        '<style>text{font:11px system-ui,sans-serif;fill:#1d232b}.label{font-weight:600}'
        '.small{font-size:10px;fill:#555}</style>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>']
    # Phases first, so everything else is drawn over the shading.
    phase_bottom = telemetry_top + TELEMETRY_HEIGHT
    for index, phase in enumerate(report.get("phases", [])):
        x0, x1 = axis.x(phase["started_at"]), axis.x(phase["ended_at"])
        verdict = "PASS" if phase["ok"] else "FAIL"
        checks = phase.get("checks", [])
        held = sum(1 for c in checks if c["ok"])
        expectation = "; ".join(
            f"{'ok' if c['ok'] else 'FAIL'} {c['service'] + ': ' if c['service'] else ''}"
            f"{c['check']} expected {c['expected']}, observed {c['observed']}" for c in checks)
        title = (f"{phase['name']} {verdict} ({held}/{len(checks)} checks held), "
                 f"{phase['started_at']:.1f}–{phase['ended_at']:.1f} s: "
                 f"{phase['description']}. {expectation}")
        fill = PHASE_FILLS[index % 2] if phase["ok"] else "#c0392b"
        out.append(_rect(x0, x1, AXIS_TOP + 30, phase_bottom - AXIS_TOP - 30, fill=fill,
                         title=title, cls="phase",
                         extra=f' fill-opacity="0.10" data-phase="{_esc(phase["name"])}" '
                         f'data-start="{phase["started_at"]}" data-end="{phase["ended_at"]}"'))
        out.append(f'<line x1="{x0}" x2="{x0}" y1="{AXIS_TOP + 30}" y2="{phase_bottom}" '
                   f'stroke="{fill}" stroke-width="1" stroke-dasharray="3 2"/>')
        colour = "#1e7b34" if phase["ok"] else "#b3261e"
        y = AXIS_TOP + 44 + (index % 2) * 16  # alternate rows: short phases' labels overlap
        # A phase near the right edge is labelled leftwards from its end, not clipped.
        near_edge = x0 > WIDTH - RIGHT - LABEL_ROOM
        anchor = (f'x="{min(x1, WIDTH - RIGHT) - 3}" text-anchor="end"' if near_edge
                  else f'x="{x0 + 3}"')
        out.append(f'<text {anchor} y="{y}" class="label">{_esc(phase["name"])} '
                   f'<tspan fill="{colour}">{verdict}</tspan>'
                   f'<title>{_esc(title)}</title></text>')
        recovered = phase.get("recovered_at")
        if recovered is not None and phase["name"] != "warm-up":
            xr = axis.x(recovered)
            out.append(f'<line class="recovery" x1="{xr}" x2="{xr}" y1="{AXIS_TOP + 30}" '
                       f'y2="{phase_bottom}" stroke="#1e7b34" stroke-width="1.5">'
                       f'<title>{_esc(phase["name"])} recovered at {recovered:.1f} s'
                       f'</title></line>')
    # Time axis: drill seconds, real-speed seconds beside them.
    step = _nice_step(end)
    out.append(f'<text x="4" y="{AXIS_TOP}" class="small">drill s (real s = ÷ {scale:g})'
               '</text>')
    tick = 0.0
    while tick <= end + 1e-9:
        x = axis.x(tick)
        out.append(f'<line x1="{x}" x2="{x}" y1="{AXIS_TOP + 4}" y2="{AXIS_TOP + 26}" '
                   'stroke="#888"/>')
        out.append(f'<text x="{x + 2}" y="{AXIS_TOP + 14}">{tick:g} s</text>')
        out.append(f'<text x="{x + 2}" y="{AXIS_TOP + 25}" class="small">'
                   f'({tick / scale:g} s)</text>')
        tick += step
    # One band per service.
    for number, service in enumerate(services):
        top = bands_top + number * (band_height + BAND_GAP)
        out.append(f'<g class="band" data-service="{_esc(service)}">')
        out.append(f'<text x="4" y="{top + 12}" class="label">{_esc(service)}</text>')
        probes = report["services"][service].get("probes", {})
        lanes = lane_segments(report, service, end)
        lane_y = {}
        for row, lane in enumerate(LANES):
            y = top + row * (LANE + LANE_GAP)
            lane_y[lane] = y
            out.append(f'<text x="{LEFT - 6}" y="{y + 12}" text-anchor="end" class="small">'
                       f'{lane}</text>')
            if lane != "process" and lane not in probes:
                out.append(_rect(axis.left, axis.right, y, LANE, fill=COLOURS["none"],
                                 title=f"{service}: no {lane} probe", cls=f"lane lane-{lane}"))
                continue
            out.append(f'<g class="lane lane-{lane}">')
            for seg in lanes[lane]:
                out.append(_rect(axis.x(seg.start), axis.x(seg.end), y, LANE,
                                 fill=COLOURS[seg.state],
                                 title=f"{service} {lane} {seg.state} "
                                       f"{seg.start:.1f}–{seg.end:.1f} s: {seg.why}",
                                 cls="segment"))
            out.append('</g>')
        for failure in probe_failures(report, service):
            kind = failure["kind"]
            if kind not in lane_y:
                continue
            x = axis.x(failure["t"])
            latency = failure.get("latency")
            took = f" after {latency * 1000:.0f} ms" if latency is not None else ""
            out.append(f'<line class="tick" x1="{x}" x2="{x}" y1="{lane_y[kind] - 2}" '
                       f'y2="{lane_y[kind] + LANE + 2}" stroke="#111" stroke-width="1.5">'
                       f'<title>{_esc(service)} {kind} probe failed at {failure["t"]:.1f} s'
                       f'{took}: {_esc(failure["detail"])}</title></line>')
        for event in _events(report, service):
            if event["kind"] in ("kill", "crashed"):
                x = axis.x(event["t"])
                y = top - 2
                out.append(f'<path class="restart" d="M{x} {y} l-6 -8 h12 z" fill="#b3261e">'
                           f'<title>{_esc(service)} restart decided at {event["t"]:.1f} s: '
                           f'{_esc(event["detail"])}</title></path>')
        out.append('</g>')
    out.extend(_telemetry_lane(report, axis, telemetry_top))
    out.append('</svg>')
    return "\n".join(out)


def _telemetry_lane(report: dict, axis: Axis, top: float) -> Iterable[str]:
    series, source = telemetry_series(report)
    peak = max((v for points in series.values() for _t, v in points), default=0) or 1
    yield '<g class="telemetry">'
    yield f'<text x="4" y="{top + 12}" class="label">telemetry</text>'
    yield f'<text x="4" y="{top + 26}" class="small">0 – {peak} readings</text>'
    yield (f'<rect x="{axis.left}" y="{top}" width="{axis.right - axis.left}" '
           f'height="{TELEMETRY_HEIGHT}" fill="none" stroke="#d5d9df"/>')
    for row, (name, points) in enumerate(series.items()):
        if points:
            ys = [round(top + TELEMETRY_HEIGHT - v / peak * (TELEMETRY_HEIGHT - 4), 2)
                  for _t, v in points]
            coords = " ".join(f"{axis.x(t)},{y}" for (t, _v), y in zip(points, ys, strict=True))
            yield (f'<polyline class="series" data-series="{name}" points="{coords}" '
                   f'fill="none" stroke="{SERIES[name]}" stroke-width="1.8">'
                   f'<title>{name}: {points[-1][1]} at {points[-1][0]:.1f} s</title>'
                   '</polyline>')
        yield (f'<text x="{4}" y="{top + 42 + row * 13}" fill="{SERIES[name]}" '
               f'style="fill:{SERIES[name]}">— {name}</text>')
    yield (f'<text x="{axis.left}" y="{top + TELEMETRY_HEIGHT + 14}" class="small">'
           f'{_esc(source)}</text>')
    yield '</g>'


def _cell(value: object, numeric: bool = False) -> str:
    cls = ' class="num"' if numeric else ""
    return f"<td{cls}>{_esc('—' if value is None else value)}</td>"


def _worst(values: list[float | None]) -> str:
    if not values:
        return "—"
    if any(v is None for v in values):
        return "never"
    return f"{max(v for v in values if v is not None):.1f} s"


def _summary_table(report: dict) -> str:
    rows = ["<tr><th>phase</th><th>drill s</th><th>affected</th><th>to NotReady</th>"
            "<th>back to Ready</th><th>restarts</th><th>telemetry lost</th><th>checks</th>"
            "<th>result</th></tr>"]
    for phase in report.get("phases", []):
        observed = phase.get("services", {})
        affected = phase.get("affected", [])
        considered = affected or list(observed)
        not_ready = [observed[s]["not_ready_after"] for s in affected if s in observed]
        back = [observed[s]["ready_again_after"] for s in considered if s in observed]
        restarts = ", ".join(f"{s} {o['restarts']}" for s, o in observed.items()
                             if o.get("restarts")) or "0"
        checks = phase.get("checks", [])
        details = "".join(
            f"<li class=\"{'pass' if c['ok'] else 'fail'}\">{_esc(c['check'])}"
            f"{_esc(' ' + c['service']) if c['service'] else ''}: expected "
            f"{_esc(c['expected'])}, observed {_esc(c['observed'])}</li>" for c in checks)
        verdict = "PASS" if phase["ok"] else "FAIL"
        rows.append(
            "<tr>" + _cell(phase["name"]) +
            _cell(f"{phase['started_at']:.1f}–{phase['ended_at']:.1f}", True) +
            _cell(", ".join(affected) or "—") +
            _cell(_worst(not_ready) if affected else "—") + _cell(_worst(back)) +
            _cell(restarts) + _cell(phase["telemetry"].get("lost"), True) +
            f"<td><details><summary>{sum(c['ok'] for c in checks)} of {len(checks)} held"
            f"</summary><ul>{details}</ul></details></td>"
            f"<td class=\"{verdict.lower()}\">{verdict}</td></tr>")
    for name in report.get("skipped_faults", []):
        rows.append("<tr>" + _cell(name) + "<td colspan=\"7\"></td><td>SKIPPED</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _timings_table(report: dict) -> str:
    scale = report.get("time_scale") or 1.0
    rows = ["<tr><th>service</th><th>probe</th><th>handler</th><th>delay s</th>"
            "<th>period s</th><th>timeout s</th><th>success/failure</th>"
            "<th>grace s</th></tr>"]
    for service, info in report.get("services", {}).items():
        for kind, probe in info.get("probes", {}).items():
            # Values seconds, with what the drill ran (times the time scale) beside them.
            def both(seconds: float) -> str:
                return f"{seconds:g} ({seconds * scale:g})"
            rows.append(
                "<tr>" + _cell(service) + _cell(kind) + _cell(probe["handler"]) +
                _cell(both(probe["initial_delay_seconds"]), True) +
                _cell(both(probe["period_seconds"]), True) +
                _cell(both(probe["timeout_seconds"]), True) +
                _cell(f"{probe['success_threshold']}/{probe['failure_threshold']}", True) +
                _cell(info.get("termination_grace_period_seconds"), True) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _legend() -> str:
    items = [("running / passed / live / ready", COLOURS["running"]),
             ("starting", COLOURS["starting"]), ("terminating", COLOURS["terminating"]),
             ("back-off / not ready", COLOURS["back-off"]),
             ("waiting / gated", COLOURS["waiting"]), ("no such probe", COLOURS["none"])]
    spans = "".join(f'<span><i style="background:{c}"></i>{_esc(t)}</span>' for t, c in items)
    return (f'<p class="legend">{spans}<span>│ black tick: a failed probe (hover: why)</span>'
            '<span>▼ restart decided</span><span>green line: dependency recovered</span></p>')


def render_html(report: dict) -> str:
    scale = report.get("time_scale") or 1.0
    verdict = "PASS" if report.get("ok") else "FAIL"
    telemetry = report.get("telemetry", {})
    checks = [c for p in report.get("phases", []) for c in p.get("checks", [])]
    render = report.get("render", {})
    overrides = [*(f"--values {f}" for f in render.get("values_files", [])),
                 *(f"--set {s}" for s in render.get("set", []))]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>probe drill report</title>",
        f"<style>{CSS}</style></head><body>",
        f'<h1>Probe drill <span class="{verdict.lower()}">{verdict}</span></h1>',
        f'<p class="meta">started {_esc(report.get("started_at"))} · '
        f'{report.get("wall_seconds", 0):.1f} drill s at time scale {scale:g} '
        f'(≈ {report.get("wall_seconds", 0) / scale:.0f} s at real speed for the scaled '
        f'timings) · helm {_esc(render.get("helm_major"))} template '
        f'{_esc(" ".join(overrides) or "(default values)")} · '
        f'{sum(c["ok"] for c in checks)} of {len(checks)} checks held'
        f'{" · interrupted" if report.get("interrupted") else ""}</p>',
        _legend(),
        render_svg(report),
        "<h2>Summary</h2>",
        _summary_table(report),
        f'<p>telemetry: {telemetry.get("published")} readings published, '
        f'{telemetry.get("telemetry_rows")} stored, {telemetry.get("quarantine_rows")} '
        f'quarantined, {telemetry.get("lost")} lost, {telemetry.get("repeated")} stored more '
        "than once</p>",
        f"<h2>Probe timings in force</h2><p>values seconds, with the drill's (× {scale:g}) in "
        "brackets; grace periods run at real speed</p>",
        _timings_table(report),
        "</body></html>", ""])


def write_html(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    import json

    p = argparse.ArgumentParser(prog="python -m iot_tools.drill.html",
                                description="render a saved drill report "
                                            "(demo-report.json) as HTML and/or SVG")
    p.add_argument("report", type=Path, help="the JSON report the drill wrote")
    p.add_argument("--html", type=Path, help="write the HTML report here")
    p.add_argument("--svg", type=Path, help="write only the timeline picture here (SVG)")
    args = p.parse_args(argv)
    if args.html is None and args.svg is None:
        p.error("nothing to write: give --html and/or --svg")
    report = json.loads(args.report.read_text())
    began = time.perf_counter()
    if args.html is not None:
        write_html(args.html, report)
    if args.svg is not None:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(render_svg(report) + "\n", encoding="utf-8")
    print(f"rendered in {(time.perf_counter() - began) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
