"""Webhook signatures: the per-route secret (migration 006), the headers route_delivery sends,
verified with the README's own snippet, and the secret kept out of logs and probes.
Real PostgreSQL, NATS, route_delivery and an HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from iot_tools.services import wait_until

from services.route_delivery.signing import signed_headers

from .conftest import service_env
from .test_route_delivery import add_route, publish

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verify() -> Callable[..., bool]:
    """`verify` as the README's Webhooks section prints it, executed as written."""
    text = README.read_text()
    section = re.split(r"^#+ Webhooks\n", text, flags=re.M)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md (Webhooks)", "exec"), namespace)
    return namespace["verify"]


class Receiver:
    """A webhook on 127.0.0.1 that keeps each request's headers and raw body."""

    def __init__(self, status: int = 204) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(status: int = 204) -> Receiver:
        receiver = Receiver(status)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


def secret_of(database, route: int) -> str:
    return database.sql(f"SELECT webhook_secret FROM message_routes WHERE id = {route}")


# -- the secret --------------------------------------------------------------------------------


def test_every_new_route_gets_its_own_generated_secret(database):
    first, second = add_route(database, "http://a.example/"), add_route(database, "http://b/")
    secrets = {secret_of(database, first), secret_of(database, second)}
    assert len(secrets) == 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", secret) for secret in secrets)


def test_migration_006_gives_each_existing_route_a_distinct_secret(postgres):
    name = "webhook_secret_upgrade"
    postgres.create_database(name)
    postgres.migrate(name)
    # Back to the schema before 006, with routes in it; then migrate as an upgrade would.
    postgres.psql("ALTER TABLE message_routes DROP COLUMN webhook_secret; "
                  "DELETE FROM schema_migrations WHERE version LIKE '006%'; "
                  "INSERT INTO message_routes (device_id, webhook_url) "
                  "SELECT 'd' || n, 'http://hook.example/' || n FROM generate_series(1, 50) n",
                  database=name)
    postgres.migrate(name)
    counts = postgres.psql("SELECT count(*) || '|' || count(DISTINCT webhook_secret) || '|' || "
                           "min(length(webhook_secret)) FROM message_routes",
                           database=name).strip()
    assert counts == "50|50|64"


def test_a_secret_shorter_than_32_characters_is_refused(database):
    route = add_route(database, "http://a.example/")
    with pytest.raises(RuntimeError, match="message_routes_webhook_secret_length"):
        database.sql(f"UPDATE message_routes SET webhook_secret = 'short' WHERE id = {route}")


# -- the signature -----------------------------------------------------------------------------


def test_a_delivered_request_verifies_with_the_readme_snippet_and_not_with_another_secret(
        launch, database, nats_server, receivers):
    receiver = receivers()
    route = add_route(database, receiver.url)
    publish(nats_server.url, [(route, "signed-1")])
    launch("route_delivery", service_env(database, nats_server)).wait_ready()
    assert wait_until(lambda: len(receiver.requests) == 1, timeout=20) is not None
    headers, body = receiver.requests[0]
    verify = readme_verify()
    secret = secret_of(database, route)
    assert json.loads(body)["route_id"] == route
    assert re.fullmatch(r"v1=[0-9a-f]{64}", headers["X-IoT-Signature"])
    assert abs(int(headers["X-IoT-Timestamp"]) - time.time()) < 60
    assert verify(secret, headers, body)
    assert not verify("0" * 64, headers, body)
    assert not verify(secret, headers, body + b" ")


def test_the_readme_snippet_refuses_a_signature_older_than_five_minutes():
    verify = readme_verify()
    body, secret = b'{"route_id": 1}', "s" * 64
    headers = signed_headers(secret, body, now=1_000_000)
    assert verify(secret, headers, body, now=1_000_000 + 299)
    assert not verify(secret, headers, body, now=1_000_000 + 301)
    assert not verify(secret, headers, body, now=1_000_000 - 301)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    headers = signed_headers("key", b"{}", now=1_700_000_000.9)
    expected = hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert headers == {"X-IoT-Timestamp": "1700000000", "X-IoT-Signature": f"v1={expected}"}


def test_the_secret_never_appears_in_logs_probes_or_metrics(
        launch, database, nats_server, receivers):
    ok, failing = receivers(), receivers(status=500)
    routes = [add_route(database, ok.url), add_route(database, failing.url),
              add_route(database, "http://169.254.169.254/")]
    secrets = [secret_of(database, route) for route in routes]
    publish(nats_server.url, [(route, f"m-{route}") for route in routes])
    service = launch("route_delivery", service_env(
        database, nats_server, LOG_LEVEL="DEBUG", MAX_ATTEMPTS="2",
        RETRY_BACKOFF_SECONDS="0.1"))
    service.wait_ready()
    assert wait_until(lambda: database.count("dead_letters") == 2, timeout=30) is not None
    assert len(ok.requests) == 1 and len(failing.requests) == 2
    outputs = [service.log_text()] + [service.get(path).body
                                      for path in ("/health", "/ready", "/metrics")]
    assert "destination_denied" in outputs[0]  # the logs did say what happened
    for secret in secrets:
        for output in outputs:
            assert secret not in output
            assert secret[:16] not in output
