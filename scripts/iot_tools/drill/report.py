"""The closing output: the timeline, a summary per phase, the failed checks, and the JSON
report (schema `iot-platform/probe-drill/v1`, documented in the README)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from iot_tools.drill.display import format_event, format_table
from iot_tools.drill.expectations import rounded
from iot_tools.drill.kubelet import Container
from iot_tools.drill.limits import Limits
from iot_tools.drill.scenario import PhaseResult, ScenarioResult
from iot_tools.drill.spec import ProbeSpec
from iot_tools.drill.timeline import Timeline

SCHEMA = "iot-platform/probe-drill/v1"
SUMMARY_COLUMNS = ("phase", "affected", "to NotReady", "back to Ready", "restarts",
                   "telemetry lost", "result")


def _worst(values: list[float | None]) -> str:
    if not values:
        return "—"
    if any(value is None for value in values):
        return "never"
    return f"{max(v for v in values if v is not None):.1f} s"


def summary_row(phase: PhaseResult, limits: Limits) -> tuple[str, ...]:
    observations = phase.observations
    affected = phase.affected
    times = [observations[s].not_ready_after for s in affected]
    if phase.must_leave_rotation:
        to_not_ready = _worst(times)
        bounds = [limits.not_ready(s) for s in affected]
        if to_not_ready not in ("—", "never") and None not in bounds:
            to_not_ready += f" (≤ {max(b for b in bounds if b is not None):.1f})"
    else:  # informational: how the services that did leave rotation fared
        left = [t for t in times if t is not None]
        to_not_ready = _worst(left) if left else ("stayed Ready" if affected else "—")
    considered = affected if affected else tuple(observations)
    back = _worst([observations[s].ready_again_after for s in considered])
    restarts = {s: o.restarts for s, o in observations.items() if o.restarts}
    restart_text = ", ".join(f"{s} {n}" for s, n in restarts.items()) or "0"
    lost = "—" if phase.lost is None else str(phase.lost)
    who = "all" if affected and len(affected) == len(observations) else ", ".join(affected)
    to_not_ready = phase.summary.get("to NotReady", to_not_ready)
    back = phase.summary.get("back to Ready", back)
    return (phase.name, who or "—", to_not_ready, back, restart_text, lost,
            "PASS" if phase.ok else "FAIL")


def summary_lines(result: ScenarioResult, limits: Limits) -> list[str]:
    rows = [summary_row(phase, limits) for phase in result.phases]
    rows += [(name, "—", "—", "—", "—", "—", "SKIPPED") for name in result.skipped]
    return format_table(rows, SUMMARY_COLUMNS)


def print_closing(result: ScenarioResult, timeline: Timeline, limits: Limits,
                  stream: TextIO, *, interrupted: bool = False) -> None:
    write = stream.write
    write("\ntimeline (seconds since the drill started):\n")
    for event in timeline.events:
        write(f"  {format_event(event)}\n")
    scale = limits.scale.factor
    write(f"\nsummary (drill seconds at time scale {scale:g}; ÷ {scale:g} for the "
          "equivalent at real speed — the services' own reconnect times do not scale):\n")
    for line in summary_lines(result, limits):
        write(f"  {line}\n")
    account = result.telemetry
    if interrupted:
        write("\ntelemetry: not accounted (interrupted)\n")
    else:
        write(f"\ntelemetry: {account.published} readings published, "
              f"{account.telemetry_rows} stored, {account.quarantine_rows} quarantined, "
              f"{account.lost} lost, {account.repeated} stored more than once\n")
    failed = [verdict for phase in result.phases for verdict in phase.checks.verdicts
              if not verdict.ok]
    total = sum(len(phase.checks.verdicts) for phase in result.phases)
    write(f"checks: {total - len(failed)} of {total} held\n")
    for phase in result.phases:
        for verdict in phase.checks.verdicts:
            if not verdict.ok:
                write(f"  [{phase.name}] {verdict.line()}\n")
    stream.flush()


def probe_json(spec: ProbeSpec) -> dict:
    return {
        "handler": spec.handler.describe(),
        "initial_delay_seconds": spec.initial_delay,
        "period_seconds": spec.period,
        "timeout_seconds": spec.timeout,
        "success_threshold": spec.success_threshold,
        "failure_threshold": spec.failure_threshold,
    }


def phase_json(phase: PhaseResult) -> dict:
    return {
        "name": phase.name,
        "description": phase.description,
        "ok": phase.ok,
        "started_at": round(phase.started_at, 3),
        "recovered_at": None if phase.recovered_at is None else round(phase.recovered_at, 3),
        "ended_at": round(phase.ended_at, 3),
        "affected": list(phase.affected),
        "telemetry": {"published_range": list(phase.published), "lost": phase.lost,
                      "repeated": phase.repeated},
        "fault": phase.details,
        "services": {name: observation.as_json()
                     for name, observation in phase.observations.items()},
        "checks": [verdict.as_json() for verdict in phase.checks.verdicts],
    }


def build_report(*, result: ScenarioResult, timeline: Timeline, limits: Limits,
                 containers: Mapping[str, Container], services: Mapping[str, dict],
                 render: dict, started_at: str, interrupted: bool, exit_code: int,
                 workdir: str | None, samples: list[dict] | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "interrupted": interrupted,
        "started_at": started_at,
        "wall_seconds": round(timeline.now(), 3),
        "time_scale": limits.scale.factor,
        "render": render,
        "services": {
            name: {
                **services.get(name, {}),
                "probes": {kind: probe_json(spec) for kind, spec in container.probes.items()},
                "restarts": container.restarts,
                "ready_at_end": container.ready,
                # Every failed probe (the timeline keeps only the first of a streak).
                "probe_failures": [
                    {"t": round(r.t, 3), "kind": r.kind, "detail": r.detail,
                     "latency": round(r.latency, 4), "timed_out": r.timed_out}
                    for r in container.records if not r.ok],
            }
            for name, container in containers.items()},
        "phases": [phase_json(phase) for phase in result.phases],
        "skipped_faults": list(result.skipped),
        "telemetry": {
            "published": result.telemetry.published,
            "telemetry_rows": result.telemetry.telemetry_rows,
            "quarantine_rows": result.telemetry.quarantine_rows,
            "lost": result.telemetry.lost,
            "repeated": result.telemetry.repeated,
            "caught_up_after": rounded(result.telemetry.caught_up_after),
            "samples": list(samples or []),
        },
        "timeline": [event.as_json() for event in timeline.events],
        "workdir": workdir,
    }


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
