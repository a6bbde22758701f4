"""The probe drill end to end: `python -m iot_tools.drill` against real helm, nats-server,
PostgreSQL and the five services, at time scale 0.1 (probe timings, the crash-loop back-off
and scenario durations are a tenth of the values'; the ratios stay; grace periods and the
services' own timings run at real speed).

Each drill run is started once per module and read from its JSON report; bounds are the
values' own (x 0.1) with the slack the drill itself applies, so a loaded machine does not
make them flaky. Five runs, about two and a half minutes in all.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from iot_tools.services import NATS_USERS, SERVICES

SCALE = 0.1
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class DrillRun:
    returncode: int
    report: dict
    output: str

    def phase(self, name: str) -> dict:
        return next(phase for phase in self.report["phases"] if phase["name"] == name)

    def probe(self, service: str, kind: str) -> dict:
        return self.report["services"][service]["probes"][kind]

    def events(self, kind: str, service: str | None = None) -> list[dict]:
        return [event for event in self.report["timeline"] if event["kind"] == kind
                and (service is None or event["service"] == service)]


def drill_command(report: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "iot_tools.drill", "--plain", "--time-scale", str(SCALE),
            "--report", str(report), *args]


def run_drill(directory: Path, *args: str) -> DrillRun:
    report = directory / "report.json"
    # The workdir under pytest's tmp dirs: a run that fails on purpose keeps its logs there.
    result = subprocess.run(drill_command(report, "--workdir", str(directory / "work"), *args),
                            capture_output=True, text=True, timeout=240, check=False)
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return DrillRun(result.returncode, json.loads(report.read_text()), result.stdout)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> DrillRun:
    """Default values: NATS outage, slow database, hung ingest_iot."""
    return run_drill(tmp_path_factory.mktemp("default"), "--faults",
                     "nats-outage,slow-database,hung-service=ingest_iot", "--warmup", "0",
                     "--settle", "10")


@pytest.fixture(scope="module")
def slow_start_run(tmp_path_factory) -> DrillRun:
    """Start-up budget 5 + 30 x 5 = 155 s: ops_worker takes 100 s, ui_iot 200 s."""
    return run_drill(tmp_path_factory.mktemp("slow-start"), "--faults", "",
                     "--slow-start", "ops_worker=100", "--slow-start", "ui_iot=200")


AGGRESSIVE = ("ingest.probes.liveness.httpGet.path=/ready",
              "ingest.probes.liveness.periodSeconds=5",
              "ingest.probes.liveness.timeoutSeconds=2",
              # 5 s x 4 = 20 s: just what the chart's guard allows (readiness 10 s x 2).
              "ingest.probes.liveness.failureThreshold=4")


@pytest.fixture(scope="module")
def aggressive_run(tmp_path_factory) -> DrillRun:
    sets = [argument for value in AGGRESSIVE for argument in ("--set", value)]
    return run_drill(tmp_path_factory.mktemp("aggressive"), "--faults", "nats-outage",
                     "--warmup", "0", "--settle", "10", *sets)


@pytest.fixture(scope="module")
def self_healing_run(tmp_path_factory) -> DrillRun:
    """Default values: a poison storm, then ingest's durable consumer deleted."""
    return run_drill(tmp_path_factory.mktemp("self-healing"), "--faults",
                     "poison-storm,consumer-deleted", "--warmup", "0", "--settle", "10")


def not_ready_limit(run: DrillRun, service: str) -> float:
    readiness = run.probe(service, "readiness")
    period = readiness["period_seconds"]
    return (period * readiness["failure_threshold"] + period) * SCALE


# -- default values ------------------------------------------------------------------------

def test_default_values_hold_every_expectation(default_run):
    assert default_run.returncode == 0, default_run.output[-4000:]
    assert default_run.report["ok"] and default_run.report["time_scale"] == SCALE
    telemetry = default_run.report["telemetry"]
    assert telemetry["published"] > 500 and telemetry["lost"] == 0
    assert "summary" in default_run.output and "FAIL" not in default_run.output


def test_nats_outage_takes_only_nats_users_out_of_rotation_and_restarts_nothing(default_run):
    phase = default_run.phase("nats-outage")
    services = phase["services"]
    assert set(phase["affected"]) == set(NATS_USERS)
    for name in NATS_USERS:
        assert services[name]["not_ready_after"] is not None
        assert services[name]["not_ready_after"] <= not_ready_limit(default_run, name)
    for name in set(SERVICES) - set(NATS_USERS):
        assert services[name]["not_ready_after"] is None, f"{name} does not need NATS"
    for name in SERVICES:
        assert services[name]["restarts"] == 0
        assert services[name]["ready_at_end"] and services[name]["ready_again_after"] is not None
    assert phase["recovered_at"] - phase["started_at"] >= 120 * SCALE, "outage longer than " \
        "liveness period x threshold + period, so no restart means no liveness coupling"
    first, end = phase["telemetry"]["published_range"]
    assert end - first > 100 and phase["telemetry"]["lost"] == 0


def test_a_database_slower_than_the_readiness_timeout_restarts_nothing(default_run):
    phase = default_run.phase("slow-database")
    services = phase["services"]
    timeout = max(default_run.probe(s, "readiness")["timeout_seconds"] for s in SERVICES)
    assert phase["recovered_at"] - phase["started_at"] > 10 * timeout * SCALE
    # The freeze was real: the services' own database checks timed out ...
    assert any(services[s]["not_ready_after"] is not None for s in SERVICES)
    for name in SERVICES:
        # ... yet no probe waited on the database, and nothing restarted.
        assert services[name]["restarts"] == 0
        for kind in ("readiness", "liveness"):
            stats = services[name]["probes"][kind]
            assert stats["count"] > 0 and stats["timeouts"] == 0, (name, kind, stats)
        assert services[name]["ready_at_end"]
    assert phase["telemetry"]["lost"] == 0


def test_a_hung_service_is_restarted_after_liveness_period_times_threshold(default_run):
    phase = default_run.phase("hung-service")
    hung = phase["services"]["ingest_iot"]
    liveness = default_run.probe("ingest_iot", "liveness")
    period, threshold = liveness["period_seconds"], liveness["failure_threshold"]
    assert hung["restarts"] == 1
    assert (threshold - 1) * period * SCALE <= hung["first_restart_after"] \
        <= (threshold + 1) * period * SCALE
    assert hung["not_ready_after"] <= not_ready_limit(default_run, "ingest_iot")
    assert hung["ready_at_end"] and hung["ready_again_after"] is not None
    kills = default_run.events("kill", "ingest_iot")
    assert len(kills) == 1 and f"liveness probe failed {threshold}" in kills[0]["detail"]
    # A blocked event loop ignores SIGTERM: SIGKILL after the (real) grace period.
    exited = default_run.events("exited", "ingest_iot")[0]
    grace = default_run.report["services"]["ingest_iot"]["termination_grace_period_seconds"]
    assert exited["detail"] == "killed by SIGKILL"
    assert grace - 0.5 <= exited["t"] - kills[0]["t"] <= grace + 2
    for name in set(SERVICES) - {"ingest_iot"}:
        assert phase["services"][name]["restarts"] == 0
    assert phase["telemetry"]["lost"] == 0, "unacked readings of the hung process redelivered"


# -- faults the service heals by itself ----------------------------------------------------

def test_self_healing_phases_hold_every_expectation(self_healing_run):
    assert self_healing_run.returncode == 0, self_healing_run.output[-4000:]
    telemetry = self_healing_run.report["telemetry"]
    assert telemetry["lost"] == 0 and telemetry["repeated"] == 0


def test_a_poison_storm_is_quarantined_once_per_message_and_ingest_stays_ready(
        self_healing_run):
    phase = self_healing_run.phase("poison-storm")
    fault = phase["fault"]
    assert fault["quarantined_messages"] == fault["quarantine_rows"] == 200
    assert fault["stored_rows"] == 0
    assert fault["quarantined_after"] is not None and fault["quarantined_after"] <= 30
    ingest = phase["services"]["ingest_iot"]
    assert ingest["not_ready_after"] is None and ingest["restarts"] == 0
    assert ingest["probes"]["liveness"]["failures"] == 0
    assert phase["telemetry"]["lost"] == 0 and phase["telemetry"]["repeated"] == 0
    held = {(c["check"], c["service"]): c["ok"] for c in phase["checks"]}
    assert held[("own_readiness_held", "ingest_iot")]


def test_a_deleted_consumer_is_noticed_and_re_created_without_a_restart(self_healing_run):
    phase = self_healing_run.phase("consumer-deleted")
    fault = phase["fault"]
    assert fault["recreated"] is True
    assert fault["check_failing_after"] is not None and fault["check_failing_after"] <= 10
    assert fault["ready_again_after"] is not None and fault["ready_again_after"] <= 15
    for name in SERVICES:
        assert phase["services"][name]["restarts"] == 0
        assert phase["services"][name]["ready_at_end"]
    first, end = phase["telemetry"]["published_range"]
    assert end - first > 50
    assert phase["telemetry"]["lost"] == 0 and phase["telemetry"]["repeated"] == 0


# -- slow start-up -------------------------------------------------------------------------

def test_a_slow_start_up_within_the_startup_budget_is_not_restarted(slow_start_run):
    warm_up = slow_start_run.phase("warm-up")["services"]["ops_worker"]
    assert warm_up["restarts"] == 0 and warm_up["ready_at_end"]
    # The delay was real: the startup probe failed for a while before it passed.
    assert warm_up["probes"]["startup"]["failures"] >= 15
    assert slow_start_run.report["services"]["ops_worker"]["env_added"] == {
        "IOT_TEST_HOOKS": "true", "IOT_TEST_STARTUP_DELAY_SECONDS": "10"}


def test_a_slow_start_up_beyond_the_startup_budget_is_restarted(slow_start_run):
    assert slow_start_run.returncode == 1
    warm_up = slow_start_run.phase("warm-up")
    ui = warm_up["services"]["ui_iot"]
    startup = slow_start_run.probe("ui_iot", "startup")
    budget = (startup["initial_delay_seconds"]
              + startup["period_seconds"] * startup["failure_threshold"]) * SCALE
    assert ui["restarts"] >= 1
    assert budget - startup["period_seconds"] * SCALE - 0.5 <= ui["first_restart_after"] \
        <= budget + 2.0
    kill = slow_start_run.events("kill", "ui_iot")[0]
    assert f"startup probe failed {startup['failure_threshold']}" in kill["detail"]
    failed = {(c["check"], c["service"]) for c in warm_up["checks"] if not c["ok"]}
    assert ("no_restarts", "ui_iot") in failed
    assert ("no_restarts", "ops_worker") not in failed


# -- an aggressive override --------------------------------------------------------------------

def test_liveness_on_ready_restarts_in_a_cascade_and_fails_the_drill(aggressive_run):
    assert aggressive_run.returncode == 1
    assert aggressive_run.probe("ingest_iot", "liveness")["handler"].startswith("GET /ready")
    phase = aggressive_run.phase("nats-outage")
    assert not phase["ok"]
    assert phase["services"]["ingest_iot"]["restarts"] >= 2, "a restart does not bring NATS back"
    assert phase["services"]["route_delivery"]["restarts"] == 0, "default liveness: no restart"
    failed = {(c["check"], c["service"]) for c in phase["checks"] if not c["ok"]}
    assert ("no_restarts", "ingest_iot") in failed
    kills = aggressive_run.events("kill", "ingest_iot")
    assert kills and all("liveness probe failed 4" in kill["detail"] for kill in kills)
    # A healthy process honours SIGTERM: it drains and exits 0 within the grace period.
    assert {event["detail"] for event in aggressive_run.events("exited", "ingest_iot")} == {
        "exit 0"}
    # The kubelet starts a container it killed in the same sync, checking the back-off
    # against the container before it: that one exited a drain and a liveness window earlier
    # (longer than the first back-offs), so the first restarts come at once.
    exits = [event["t"] for event in aggressive_run.events("exited", "ingest_iot")]
    relaunches = [event["t"] for event in aggressive_run.events("launched", "ingest_iot")][1:]
    assert len(relaunches) >= 2
    assert all(0 <= launch - exit_ < 0.5 for exit_, launch in zip(exits[:2], relaunches[:2],
                                                                  strict=True))
    assert "nats-outage" in aggressive_run.output and "FAIL" in aggressive_run.output
    assert phase["telemetry"]["lost"] == 0, "restarts cost availability, not data"


# -- Ctrl-C ------------------------------------------------------------------------------------

def processes_using(directory: Path) -> list[str]:
    """Processes whose command line, working directory or open files are in `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            paths = [(entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"),
                     os.readlink(entry / "cwd")]
            paths += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(str(directory) in path for path in paths):
            found.append(f"{entry.name}: {paths[0][:120]}")
    return found


def test_ctrl_c_stops_every_process_the_drill_started(tmp_path):
    workdir = tmp_path / "work"
    report = tmp_path / "report.json"
    drill = subprocess.Popen(drill_command(report, "--workdir", str(workdir), "--faults",
                                           "nats-outage"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert drill.stdout is not None
    output = []
    with selectors.DefaultSelector() as selector:
        selector.register(drill.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("every service Ready" in line
                                                      for line in output):
            if selector.select(timeout=1):
                output.append(drill.stdout.readline())
    assert processes_using(workdir), "the platform was running"
    drill.send_signal(signal.SIGINT)
    rest, _ = drill.communicate(timeout=60)
    assert drill.returncode == 130, "".join(output) + rest
    assert "interrupted" in rest
    assert processes_using(workdir) == []
    assert json.loads(report.read_text())["interrupted"] is True
