"""Credentials never reach a log line or a probe body: redact_url over every URL form,
redact_text over free text, the formatter every service logs through, and real services
started with secrets in their connection URLs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from iot_tools.services import wait_until

from services.common.logs import RedactingFormatter, redact_text, redact_url

from .conftest import service_env

# (text, substrings that must not survive, substrings that must)
CASES = [
    ("postgresql://u:p4ssw0rd@db.local/iot", ["p4ssw0rd"], ["postgresql://u:***@db.local/iot"]),
    ("postgres://iot@db.local/iot", [], ["postgres://iot@db.local/iot"]),
    ("nats://t0kenvalue@nats.local:4222", ["t0kenvalue"], ["nats://***@nats.local:4222"]),
    ("nats://:t0kenvalue@nats.local:4222", ["t0kenvalue"], ["nats://***@nats.local:4222"]),
    ("tls://alice:w0nderland@nats.local", ["w0nderland"], ["tls://alice:***@nats.local"]),
    ("https://t0kenvalue@git.example.com/repo", ["t0kenvalue"],
     ["https://***@git.example.com/repo"]),
    ("https://api.example.com/x?token=abc123xyz&x=1", ["abc123xyz"],
     ["https://api.example.com/x?token=***&x=1"]),
    ("https://api.example.com/x?PASSWORD=Upper9Case", ["Upper9Case"], ["PASSWORD=***"]),
    ("https://h.example/x?a=1&api_key=k3yk3y&apikey=k4yk4y&key=k5yk5y&b=2",
     ["k3yk3y", "k4yk4y", "k5yk5y"], ["a=1", "&b=2", "api_key=***"]),
    ("postgresql://iot@db/iot?sslpassword=cl13ntkey&sslmode=require", ["cl13ntkey"],
     ["postgresql://iot@db/iot?sslpassword=***&sslmode=require"]),
    ("https://h.example/cb?pwd=aa1111;passwd=bb2222;pass=cc3333;secret=dd4444;auth=ee5555",
     ["aa1111", "bb2222", "cc3333", "dd4444", "ee5555"], ["https://h.example/cb?"]),
    ("https://h.example/cb#access_token=fr4gment", ["fr4gment"], ["#access_token=***"]),
    ("https://h.example/x?%74oken=enc0ded", ["enc0ded"], ["https://h.example/x?"]),
    ("connecting to postgresql://iot:s3cretpw@10.0.0.7:5432/iot (attempt 3)", ["s3cretpw"],
     ["connecting to postgresql://iot:***@10.0.0.7:5432/iot (attempt 3)"]),
    ("primary postgresql://a:first111@h1/db, fallback nats://second22@h2:4222.",
     ["first111", "second22"], ["postgresql://a:***@h1/db,", "nats://***@h2:4222."]),
    ("a=postgresql://a:glued111@h1/db,b=nats://glued222@h2", ["glued111", "glued222"],
     ["a=postgresql://a:***@h1/db,b=nats://***@h2"]),
    ("postgresql://iot:v6secret@[::1]:5432/iot", ["v6secret"],
     ["postgresql://iot:***@[::1]:5432/iot"]),
    ("postgresql://iot:p%40ss%2Fw0rd@db/iot", ["p%40ss%2Fw0rd", "p@ss/w0rd", "w0rd"],
     ["postgresql://iot:***@db/iot"]),
    ("postgresql://iot:with@at@db/iot", ["with@at", "with"], ["postgresql://iot:***@db/iot"]),
    ("ValueError('cannot reach nats://repr5ecret@n:4222')", ["repr5ecret"],
     ["ValueError('cannot reach nats://***@n:4222')"]),
    ("http://user:br0ken@[::1/x", ["br0ken"], ["<unparseable url>"]),
    ("no url here, just password=visible and a:b@c", [], ["no url here, just password=visible"]),
    ("https://example.com/path?x=1&y=2", [], ["https://example.com/path?x=1&y=2"]),
]


@pytest.mark.parametrize(("text", "secrets", "kept"), CASES,
                         ids=[case[0][:40] for case in CASES])
def test_redact_text_removes_every_secret_and_keeps_the_rest(text, secrets, kept):
    redacted = redact_text(text)
    for secret in secrets:
        assert secret not in redacted
    for part in kept:
        assert part in redacted


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://iot:s3cret@db:5432/iot", "postgresql://iot:***@db:5432/iot"),
        ("postgres://iot@db/iot", "postgres://iot@db/iot"),
        ("nats://tok@nats:4222", "nats://***@nats:4222"),
        ("NATS://tok@nats:4222", "nats://***@nats:4222"),
        ("https://h/x?token=abc&x=1", "https://h/x?token=***&x=1"),
        ("https://h/x?x=1", "https://h/x?x=1"),
        ("http://[::1", "<unparseable url>"),
    ],
)
def test_redact_url_gives_the_exact_redacted_form(url, redacted):
    assert redact_url(url) == redacted


def test_text_without_a_url_comes_back_as_the_same_object():
    text = "readiness: not ready: database (unreachable (ConnectionRefusedError))"
    assert redact_text(text) is text


# Characters RFC 3986 lets stand unescaped anywhere in userinfo and query values.
URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
SHAPES = [
    "postgresql://iot:{secret}@db.example:5432/iot",
    "postgres://iot:{secret}@[::1]/iot?sslmode=require",
    "nats://{secret}@nats.example:4222",
    "nats://user:{secret}@nats.example:4222",
    "tls://{secret}@10.1.2.3",
    "https://{secret}@api.example/v1",
    "https://api.example/v1?x=1&token={secret}&y=2",
    "https://api.example/v1?Password={secret}",
    "redis://:{secret}@cache.example:6379/0",
    "postgresql://iot@db/iot?password={secret}",
    "https://api.example/cb#access_token={secret}&state=1",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=st.text(alphabet=URL_SAFE, min_size=6),
    shape=st.sampled_from(SHAPES),
    before=st.sampled_from(["", "connecting to ", "error (", "url='", "a=", "x\n"]),
    after=st.sampled_from(["", " failed", ")", "', retrying", ",b=nats://h", ".", "\n"]),
)
def test_no_secret_survives_redact_text_in_any_url_shape(secret, shape, before, after):
    text = before + shape.format(secret=secret) + after
    # A secret that happens to spell a non-secret part of the line ("exampl") proves nothing.
    assume(secret not in before + shape.format(secret="***") + after)
    assert secret not in redact_text(text)


def test_formatter_redacts_message_exception_text_and_traceback():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_redaction.formatter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ConnectionError("cannot reach postgresql://iot:tr4cebackpw@db.internal/iot")
        except ConnectionError:
            logger.exception("connect to %s failed", "nats://m3ssagetok@nats.internal:4222")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "tr4cebackpw" not in output
    assert "m3ssagetok" not in output
    assert "Traceback" in output
    assert "db.internal" in output
    assert "nats.internal:4222" in output


def test_setup_logging_installs_the_redacting_formatter_for_every_logger():
    program = (
        "import logging\n"
        "from services.common.logs import setup_logging\n"
        "setup_logging('probe-test', 'INFO')\n"
        "logging.getLogger('asyncpg.some.driver').warning("
        "'dsn %s', 'postgresql://iot:subpr0cesspw@db.internal/iot')\n"
        "try:\n"
        "    raise RuntimeError('nats://subpr0cesstok@nats.internal:4222')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('x').exception('failed')\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "subpr0cesspw" not in result.stderr
    assert "subpr0cesstok" not in result.stderr
    assert "postgresql://iot:***@db.internal/iot" in result.stderr
    assert "nats://***@nats.internal:4222" in result.stderr


def _probe_bodies(service) -> str:
    return service.get("/ready").body + service.get("/health").body + \
        service.get("/ready?verbose").body + service.get("/health?verbose").body


@pytest.mark.slow
def test_database_password_never_reaches_log_or_probe_bodies(launch, database, nats_server):
    secret = "s3cretpw"
    env = service_env(database, nats_server,
                      DATABASE_URL=f"postgresql://iot:{secret}@127.0.0.1:1/db",
                      LOG_LEVEL="DEBUG")
    service = launch("ops_worker", env)
    assert wait_until(lambda: service.status("/ready") is not None, 15) is not None
    time.sleep(3)  # several failed connection attempts, each a chance to log the URL
    ready = service.get("/ready")
    assert ready.status == 503
    assert json.loads(ready.body)["checks"]["database"]["status"] == "fail"
    bodies = _probe_bodies(service)
    service.stop()
    log = service.log_text()
    assert "database" in log  # the outage is logged ...
    assert secret not in log  # ... without the password
    assert secret not in bodies


@pytest.mark.slow
def test_migrate_names_the_unreachable_database_without_its_password(launch, database):
    secret = "m1gratepw"
    env = service_env(database, None,
                      DATABASE_URL=f"postgresql://iot:{secret}@127.0.0.1:1/db",
                      MIGRATE_WAIT_SECONDS="1")
    process = launch("migrate", env)
    assert process.process is not None
    assert process.process.wait(60) == 1
    log = process.log_text()
    assert "postgresql://iot:***@127.0.0.1:1/db not reachable" in log
    assert secret not in log


@pytest.mark.slow
def test_nats_token_never_reaches_log_or_probe_bodies(launch, database):
    secret = "tok3nsecret"
    env = service_env(database, None, NATS_URL=f"nats://{secret}@127.0.0.1:1",
                      LOG_LEVEL="DEBUG")
    service = launch("route_delivery", env)
    assert wait_until(lambda: service.status("/ready") is not None, 15) is not None
    time.sleep(3)
    ready = service.get("/ready")
    assert ready.status == 503
    assert json.loads(ready.body)["checks"]["nats"]["status"] == "fail"
    bodies = _probe_bodies(service)
    service.stop()
    log = service.log_text()
    assert "nats://***@127.0.0.1:1" in log  # where it connects to is still said
    assert secret not in log
    assert secret not in bodies
