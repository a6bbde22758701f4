"""The drill's two self-healing phases, piece by piece: the poison messages are what they
claim to be, the readiness watch reads the health kit's answers and log lines, the new
checks judge right, and the ledger counts only the feed's rows and notices a reading
stored twice (against a real PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from iot_tools.drill.expectations import Checks, ProbeStats, ServiceObservation
from iot_tools.drill.faults import (
    DEFAULT_FAULTS,
    ConsumerDeleted,
    PoisonStorm,
    parse_fault,
)
from iot_tools.drill.poison import DEVICE_PREFIX, SUBJECT_PREFIX, poison_messages
from iot_tools.drill.telemetry import TelemetryLedger
from iot_tools.drill.timeline import Timeline
from iot_tools.drill.watch import (
    ReadinessWatch,
    Sample,
    failing_in_log_line,
    failing_in_ready_body,
)
from iot_tools.feed import encode, reading
from iot_tools.servers import PostgresServer, temp_workdir

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


# -- poison ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def storm() -> list[tuple[str, bytes]]:
    return poison_messages(200, now=NOW)


def payloads_of(storm, kind: str) -> list[bytes]:
    return [payload for subject, payload in storm if subject.endswith("." + kind)]


def test_storm_has_200_messages_each_on_its_own_poison_subject(storm):
    subjects = [subject for subject, _ in storm]
    assert len(storm) == 200 and len(set(subjects)) == 200
    assert all(subject.startswith(SUBJECT_PREFIX) for subject in subjects)
    assert all(subject.count(".") == 3 for subject in subjects), "telemetry.poison.<n>.<kind>"


def test_storm_metric_names_carry_a_nul_and_a_lone_surrogate(storm):
    nul = json.loads(payloads_of(storm, "nul-in-metric-name")[0])
    surrogate = json.loads(payloads_of(storm, "lone-surrogate-in-metric-name")[0])
    assert list(nul["metrics"]) == ["t\x00"]
    assert list(surrogate["metrics"]) == ["\ud800"]
    assert nul["device_id"].startswith(DEVICE_PREFIX)


def test_storm_nests_3000_brackets_deeper_than_the_json_parser_goes(storm):
    for kind in ("3000-nested-brackets", "3000-nested-in-metrics"):
        payload = payloads_of(storm, kind)[0]
        assert payload.count(b"[") == 3000 == payload.count(b"]")
        with pytest.raises(RecursionError):
            json.loads(payload)


def test_storm_timestamps_leave_the_range_and_run_ten_years_ahead(storm):
    year_one = json.loads(payloads_of(storm, "year-1-before-utc")[0])["ts"]
    assert year_one == "0001-01-01T00:00:00+01:00"  # before year 1 once in UTC
    ahead = datetime.fromisoformat(json.loads(payloads_of(storm, "ten-years-ahead")[0])["ts"])
    assert ahead - NOW > timedelta(days=3650)


def test_storm_numbers_overflow_float8_and_bytes_are_not_utf8(storm):
    assert json.loads(payloads_of(storm, "number-1e400")[0])["metrics"]["t"] == float("inf")
    assert json.loads(payloads_of(storm, "number-minus-1e400")[0])["metrics"]["t"] == \
        float("-inf")
    with pytest.raises(UnicodeDecodeError):
        payloads_of(storm, "invalid-utf8")[0].decode()
    assert payloads_of(storm, "empty") == [b""] * 20


# -- faults are known by name and played by default -------------------------------------------

def test_both_self_healing_faults_parse_and_are_in_the_default_scenario():
    assert isinstance(parse_fault("poison-storm"), PoisonStorm)
    assert isinstance(parse_fault("consumer-deleted"), ConsumerDeleted)
    assert {"poison-storm", "consumer-deleted"} <= set(DEFAULT_FAULTS)
    with pytest.raises(ValueError, match="no argument"):
        parse_fault("consumer-deleted=x")


def test_self_healing_faults_have_no_recovery_and_need_not_leave_rotation():
    for fault in (PoisonStorm(), ConsumerDeleted()):
        assert fault.heals_itself and not fault.self_healing
        assert not fault.must_leave_rotation


# -- the readiness watch ---------------------------------------------------------------------

def test_log_transition_lines_name_the_failing_checks():
    line = ("2026-11-29T17:14:30 WARNING ingest_iot health: readiness: not ready: "
            "consumer (consumer deleted; re-creating), database (unreachable (OSError))")
    assert failing_in_log_line(line) == {"consumer", "database"}
    assert failing_in_log_line("2026-11-29T17:14:31 INFO ingest_iot health: readiness: "
                               "ready\n") == frozenset()
    assert failing_in_log_line("2026-11-29T17:14:31 INFO ingest_iot pipeline: batch") is None


def test_ready_bodies_give_the_failing_checks_or_nothing_without_an_answer():
    body = json.dumps({"status": "not_ready", "checks": {
        "nats": {"status": "pass", "detail": "connected"},
        "consumer": {"status": "fail", "detail": "consumer deleted; re-creating"}}})
    assert failing_in_ready_body(503, body) == {"consumer"}
    assert failing_in_ready_body(200, json.dumps({"checks": {}})) == frozenset()
    assert failing_in_ready_body(None, "") is None
    assert failing_in_ready_body(503, "{}") == {"?"}, "a 503 is a failure even unexplained"


def watch_with(samples: list[Sample]) -> ReadinessWatch:
    watch = ReadinessWatch(port=1, log_path=None, timeline=Timeline())
    watch.samples = samples
    return watch


def test_watch_finds_the_first_failure_of_the_named_checks_after_a_moment():
    watch = watch_with([Sample(1.0, frozenset({"database"}), "ready"),
                        Sample(2.0, frozenset(), "ready"),
                        Sample(3.0, frozenset({"consumer"}), "log"),
                        Sample(3.1, frozenset(), "log")])
    assert watch.first_failure(frozenset({"consumer"})) == 3.0
    assert watch.first_failure() == 1.0
    assert watch.first_failure(frozenset({"database"}), since=1.5) is None


def test_watch_ready_since_is_the_last_return_to_ready_that_held():
    watch = watch_with([Sample(3.0, frozenset({"consumer"}), "log"),
                        Sample(3.1, frozenset(), "log"),
                        Sample(3.2, frozenset({"consumer"}), "ready"),
                        Sample(3.5, frozenset(), "ready"),
                        Sample(4.0, frozenset(), "ready")])
    assert watch.ready_since(3.0) == 3.5
    watch.samples.append(Sample(5.0, frozenset({"consumer"}), "ready"))
    assert watch.ready_since(3.0) is None, "not ready at the end"


# -- the new checks --------------------------------------------------------------------------

def observation(liveness_failures: int, ready: bool = True) -> ServiceObservation:
    return ServiceObservation(None, None, ready, 0, None, None,
                              {"liveness": ProbeStats(10, liveness_failures, 0, 0.01)})


def test_checks_fail_on_a_liveness_failure_a_repeat_or_not_ready_at_end():
    checks = Checks({"a": observation(0), "b": observation(1, ready=False)})
    checks.liveness_never_failed(["a", "b"])
    checks.ready_at_end(["a", "b"])
    checks.telemetry_repeated(0)
    assert [(v.check, v.service, v.ok) for v in checks.verdicts] == [
        ("liveness_never_failed", "a", True), ("liveness_never_failed", "b", False),
        ("ready_at_end", "a", True), ("ready_at_end", "b", False),
        ("no_telemetry_repeated", None, True)]
    checks.telemetry_repeated(2)
    assert not checks.ok


# -- the ledger against a real database ------------------------------------------------------

@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer(temp_workdir("iot-drill-ledger-")).start()
    server.migrate()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def quarantine(postgres: PostgresServer, seq: int, subject: str, payload: bytes) -> None:
    postgres.psql("INSERT INTO quarantine (stream, stream_seq, subject, reason, payload, "
                  f"payload_size) VALUES ('TELEMETRY', {seq}, '{subject}', 'test', "
                  f"'\\x{payload.hex()}'::bytea, {len(payload)})")


def test_ledger_counts_only_feed_rows_and_finds_a_reading_stored_twice(postgres):
    first = 1000
    for index in range(first, first + 3):
        document = reading(index)
        postgres.psql("INSERT INTO telemetry (device_id, ts, metrics) VALUES "
                      f"('{document['device_id']}', '{document['ts']}', '{{}}')")
    # Reading first+1 quarantined as well: stored twice. Poison rows (invalid UTF-8, a
    # device of its own) must neither break the account nor count as feed readings.
    quarantine(postgres, 1, f"telemetry.{reading(first + 1)['device_id']}",
               encode(reading(first + 1)))
    quarantine(postgres, 2, f"{SUBJECT_PREFIX}0008.invalid-utf8", b'{"t\xff": 1}')
    postgres.psql("INSERT INTO telemetry (device_id, ts, metrics) VALUES "
                  f"('{DEVICE_PREFIX}0001', now(), '{{}}')")
    ledger = TelemetryLedger(postgres, first, lambda: 4)
    stored = ledger.stored()
    assert (stored.telemetry_rows, stored.quarantine_rows) == (3, 1)
    assert ledger.stored_count() == 4
    assert ledger.lost_between(stored, first, first + 4) == 1  # first+3 never arrived
    assert ledger.repeated_between(stored, first, first + 4) == 1
    assert ledger.repeated_between(stored, first + 2, first + 4) == 0
