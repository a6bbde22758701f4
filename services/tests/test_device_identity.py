"""Ingest believes a reading's device only when its subject agrees: EMQX lets a device publish
only to telemetry/<its client id>, which reaches NATS as telemetry.<client id>. Properties of the
check (Hypothesis), then the running service against real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from iot_tools.feed import publish_batch
from iot_tools.services import wait_until

from services.ingest_iot.telemetry import (
    Reading,
    ReadingLimits,
    Rejection,
    check_sender,
    device_of_subject,
    parse_reading,
)

from .conftest import service_env

NOW = datetime.now(UTC)
LIMITS = ReadingLimits(65_536)
WINDOW = LIMITS.window(NOW)
device_ids = st.from_regex(r"[A-Za-z0-9_\-:]{1,128}", fullmatch=True)
# Subject tokens as NATS carries them (no dots, spaces or wildcards inside one).
tokens = st.from_regex(r"[A-Za-z0-9_\-:]{1,40}", fullmatch=True)
subjects = st.one_of(
    device_ids.map(lambda device: f"telemetry.{device}"),
    st.lists(tokens, min_size=2, max_size=4).map(lambda parts: "telemetry." + ".".join(parts)),
    tokens.map(lambda token: f"{token}.x"),
    st.just("telemetry"),
)


def reading_of(device: str) -> bytes:
    return json.dumps({"device_id": device, "ts": NOW.isoformat(), "metrics": {"t": 1}}).encode()


@given(device=device_ids, subject=subjects)
def test_a_valid_reading_is_accepted_only_on_its_own_devices_subject(device, subject):
    outcome = check_sender(parse_reading(reading_of(device), LIMITS, WINDOW), subject)
    if subject == f"telemetry.{device}":
        assert isinstance(outcome, Reading) and outcome.device_id == device
    elif device_of_subject(subject) is None:
        assert outcome == Rejection("subject_without_device")
    else:
        assert outcome == Rejection("device_id_mismatch")


@given(payload=st.binary(max_size=200), subject=subjects)
def test_a_payload_problem_keeps_its_own_reason_whatever_the_subject(payload, subject):
    parsed = parse_reading(payload, LIMITS, WINDOW)
    outcome = check_sender(parsed, subject)
    if isinstance(parsed, Rejection):
        assert outcome == parsed


@given(subject=subjects)
def test_the_subjects_device_is_its_one_token_after_telemetry(subject):
    device = device_of_subject(subject)
    parts = subject.split(".")
    if len(parts) == 2 and parts[0] == "telemetry":
        assert device == parts[1]
    else:
        assert device is None


def test_ingest_stores_a_devices_own_readings_and_quarantines_spoofed_ones(launch, database,
                                                                            nats_server):
    service = launch("ingest_iot", service_env(database, nats_server))
    service.wait_ready()
    ts = (NOW - timedelta(minutes=1)).isoformat()

    own = [(f"telemetry.dev-{n}", json.dumps({
        "device_id": f"dev-{n}", "ts": ts, "metrics": {"t": n}}).encode()) for n in range(5)]
    spoofed = [("telemetry.dev-0", json.dumps({
        "device_id": "dev-victim", "ts": ts, "metrics": {"t": 99}}).encode()),
        ("telemetry.dev-1.extra", json.dumps({
            "device_id": "dev-1", "ts": ts, "metrics": {"t": 98}}).encode())]
    asyncio.run(publish_batch(nats_server.url, own + spoofed))
    assert wait_until(lambda: database.count("telemetry") + database.count("quarantine") == 7,
                      20) is not None
    assert database.count("telemetry") == 5
    assert database.count("telemetry", "device_id = 'dev-victim'") == 0
    assert sorted(database.sql("SELECT reason FROM quarantine").split()) == [
        "device_id_mismatch", "subject_without_device"]
    assert service.status("/ready") == 200
