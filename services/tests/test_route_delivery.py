"""route_delivery under concurrency and failing webhooks, against real NATS, PostgreSQL and
local aiohttp webhook servers; and its pure decisions (breaker, endpoint key, backoff)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import nats
import pytest
from aiohttp import web
from iot_tools.servers import free_port
from iot_tools.services import wait_until

from services.common.config import ConfigError, Env
from services.common.messaging import ROUTES, ensure_stream
from services.route_delivery.config import DeliveryConfig
from services.route_delivery.delivery import (
    BoundedCache,
    CircuitBreaker,
    Transition,
    endpoint_key,
    parse_route_message,
    retry_delay,
)

from .conftest import service_env

# -- local webhooks --------------------------------------------------------------------------


@dataclass
class Hook:
    """One webhook server (its own port, so its own endpoint) and what it received."""

    port: int
    behaviour: str
    # (monotonic time, Idempotency-Key, status answered) per request, in arrival order.
    requests: list[tuple[float, str, int]] = field(default_factory=list)
    # Arrival times of requests (a request cut off by the client still sleeps here).
    arrivals: list[float] = field(default_factory=list)
    fail_first: bool = False
    slow_seconds: float = 0.0
    redirect_to: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def keys(self, status: int | None = None) -> Counter[str]:
        return Counter(key for _, key, answered in list(self.requests)
                       if status is None or answered == status)

    def count(self) -> int:
        return len(self.requests)


class Webhooks:
    """aiohttp webhook servers on 127.0.0.1, served by one event loop in a thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def start(self, behaviour: str = "ok", **options) -> Hook:
        hook = Hook(free_port(), behaviour, **options)
        asyncio.run_coroutine_threadsafe(self._serve(hook), self._loop).result(10)
        return hook

    @staticmethod
    def refused() -> str:
        """A URL where nothing listens: every request is refused."""
        return f"http://127.0.0.1:{free_port()}/hook"

    async def _serve(self, hook: Hook) -> None:
        seen: set[str] = set()

        async def handle(request: web.Request) -> web.StreamResponse:
            await request.read()
            key = request.headers.get("Idempotency-Key", "")
            hook.arrivals.append(time.monotonic())
            status = 204
            if hook.behaviour == "fail":
                status = 500
            elif hook.behaviour == "slow":
                await asyncio.sleep(hook.slow_seconds)
            elif hook.behaviour == "redirect":
                status = 302
            elif hook.fail_first and key not in seen:
                seen.add(key)
                status = 500
            hook.requests.append((time.monotonic(), key, status))
            if status == 302:
                raise web.HTTPFound(hook.redirect_to)
            return web.Response(status=status)

        app = web.Application()
        app.router.add_route("*", "/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook.port).start()
        self._runners.append(runner)

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    servers = Webhooks()
    yield servers
    servers.close()


# -- helpers ---------------------------------------------------------------------------------


def add_route(database, url: str, device: str = "dev-r") -> int:
    return int(database.sql(f"INSERT INTO message_routes (device_id, webhook_url) "
                            f"VALUES ('{device}', '{url}') RETURNING id").splitlines()[0])


def publish(nats_url: str, messages: list[tuple[int, str]]) -> None:
    """Publish (route_id, message id) pairs to ROUTES as ingest does, in this order."""

    async def send() -> None:
        connection = await nats.connect(nats_url)
        try:
            js = connection.jetstream()
            await ensure_stream(js, ROUTES)
            for route_id, message_id in messages:
                body = json.dumps({"route_id": route_id, "device_id": "dev-r",
                                   "ts": "2026-01-01T00:00:00Z", "metrics": {"t": 1}}).encode()
                await js.publish("routes.dev-r", body, headers={"Nats-Msg-Id": message_id})
        finally:
            await connection.close()

    asyncio.run(send())


def start_delivery(launch, database, nats_server, **env: str):
    service = launch("route_delivery", service_env(database, nats_server, **env))
    service.wait_ready()
    return service


def health(service) -> dict:
    answer = service.get("/health")
    assert answer.status == 200, answer.body
    return json.loads(answer.body)


# -- one dead or slow endpoint does not stall the others --------------------------------------


def test_a_dead_webhook_beside_a_healthy_one_does_not_delay_it(
        launch, database, nats_server, webhooks):
    healthy = webhooks.start("ok")
    failing = webhooks.start("fail")
    refused_route = add_route(database, Webhooks.refused())
    failing_route = add_route(database, failing.url)
    healthy_route = add_route(database, healthy.url)
    service = start_delivery(launch, database, nats_server, RETRY_BACKOFF_SECONDS="0.2",
                             MAX_ATTEMPTS="100")
    # The dead routes' messages are ahead of the healthy ones in the stream.
    publish(nats_server.url, [(refused_route, f"refused-{i}") for i in range(50)]
            + [(failing_route, f"failing-{i}") for i in range(50)])
    published = time.monotonic()
    publish(nats_server.url, [(healthy_route, f"healthy-{i}") for i in range(50)])
    took = wait_until(lambda: len(healthy.keys(204)) == 50, timeout=30)
    assert took is not None, f"healthy got {len(healthy.keys(204))} of 50"
    assert time.monotonic() - published < 5, "the healthy route waited for the dead ones"
    assert max(healthy.keys().values()) == 1  # each delivered once
    assert failing.count() > 0  # and the dead one is still being tried
    assert service.status("/ready") == 200
    assert health(service)["delivered"] == 50
    assert database.count("dead_letters") == 0


def test_a_slow_webhook_does_not_delay_a_healthy_one(launch, database, nats_server, webhooks):
    slow = webhooks.start("slow", slow_seconds=3)
    healthy = webhooks.start("ok")
    slow_route = add_route(database, slow.url)
    healthy_route = add_route(database, healthy.url)
    start_delivery(launch, database, nats_server, REQUEST_TIMEOUT_SECONDS="1",
                   RETRY_BACKOFF_SECONDS="0.2", MAX_ATTEMPTS="100")
    publish(nats_server.url, [(slow_route, f"slow-{i}") for i in range(40)])
    assert wait_until(lambda: slow.count() > 0, timeout=10) is not None
    started = time.monotonic()
    publish(nats_server.url, [(healthy_route, f"healthy-{i}") for i in range(50)])
    assert wait_until(lambda: len(healthy.keys(204)) == 50, timeout=30) is not None
    assert time.monotonic() - started < 5
    # The slow endpoint never had more than ENDPOINT_CONCURRENCY (4) requests at once: each
    # is held for the 1 s timeout, so no 0.9 s window sees more than 4 arrive.
    arrivals = sorted(slow.arrivals)
    assert len(arrivals) >= 4
    assert max(sum(1 for t in arrivals if start <= t < start + 0.9) for start in arrivals) <= 4


# -- attempts are real requests ---------------------------------------------------------------


def test_a_failing_webhook_yields_dead_letters_after_exactly_max_attempts_requests(
        launch, database, nats_server, webhooks):
    failing = webhooks.start("fail")
    route = add_route(database, failing.url)
    service = start_delivery(launch, database, nats_server, MAX_ATTEMPTS="3",
                             RETRY_BACKOFF_SECONDS="0.1", CIRCUIT_FAILURE_THRESHOLD="1000")
    publish(nats_server.url, [(route, f"m-{i}") for i in range(10)])
    assert wait_until(lambda: database.count("dead_letters") == 10, timeout=30) is not None
    time.sleep(1.5)  # nothing more is sent after the dead letter
    assert failing.keys() == Counter({f"m-{i}": 3 for i in range(10)})
    assert database.sql("SELECT DISTINCT attempts || '|' || last_error FROM dead_letters") \
        == "3|HTTP 500"
    assert database.count("delivery_attempts") == 0
    counters = health(service)
    assert (counters["failed"], counters["retries"], counters["delivered"]) == (10, 20, 0)
    assert service.status("/ready") == 200


def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(
        launch, database, nats_server, webhooks):
    target = webhooks.start("ok")
    redirecting = webhooks.start("redirect", redirect_to=target.url)
    route = add_route(database, redirecting.url)
    start_delivery(launch, database, nats_server, MAX_ATTEMPTS="2",
                   RETRY_BACKOFF_SECONDS="0.1")
    publish(nats_server.url, [(route, "moved")])
    assert wait_until(lambda: database.count("dead_letters") == 1, timeout=20) is not None
    time.sleep(0.5)
    assert redirecting.keys() == Counter({"moved": 2})
    assert target.count() == 0
    assert database.sql("SELECT attempts || '|' || last_error FROM dead_letters") == "2|HTTP 302"


def test_deferrals_by_an_open_circuit_are_not_counted_as_attempts(
        launch, database, nats_server, webhooks):
    failing = webhooks.start("fail")
    route = add_route(database, failing.url)
    start_delivery(launch, database, nats_server, MAX_ATTEMPTS="2", RETRY_BACKOFF_SECONDS="0.1",
                   CIRCUIT_FAILURE_THRESHOLD="2", CIRCUIT_OPEN_SECONDS="1",
                   ENDPOINT_CONCURRENCY="1")
    publish(nats_server.url, [(route, f"m-{i}") for i in range(6)])
    # Each message is deferred many times while the circuit is open, yet dead-lettered after
    # exactly two requests.
    assert wait_until(lambda: database.count("dead_letters") == 6, timeout=60) is not None
    time.sleep(1)
    assert failing.keys() == Counter({f"m-{i}": 2 for i in range(6)})


def test_redeliveries_during_a_database_outage_are_not_attempts(
        launch, private_postgres, nats_server, webhooks):
    failing = webhooks.start("fail")
    route = add_route(private_postgres, failing.url)
    service = start_delivery(launch, private_postgres, nats_server, MAX_ATTEMPTS="3",
                             RETRY_BACKOFF_SECONDS="0.1", ROUTES_CACHE_SECONDS="0",
                             CIRCUIT_FAILURE_THRESHOLD="1000")
    private_postgres.server.stop()
    publish(nats_server.url, [(route, f"m-{i}") for i in range(5)])
    assert service.wait_status("/ready", 503, timeout=10) is not None
    time.sleep(5)  # each message comes back every ~2 s; the route cannot be read
    assert failing.count() == 0
    assert service.status("/health") == 200
    private_postgres.server.start()
    assert wait_until(lambda: private_postgres.count("dead_letters") == 5, timeout=60) \
        is not None
    time.sleep(1)
    assert failing.keys() == Counter({f"m-{i}": 3 for i in range(5)})
    assert service.wait_status("/ready", 200, timeout=10) is not None


# -- concurrency -------------------------------------------------------------------------------


def test_a_burst_over_twenty_routes_is_delivered_exactly_once_with_a_shared_pool(
        launch, database, nats_server, webhooks):
    # Every first request fails, so each message takes the database path twice (recording
    # the failure, then forgetting it); routes are re-read on every message; 32 deliveries
    # share 2 pooled connections. (Ten first failures in a row would open a circuit.)
    hooks = [webhooks.start("ok", fail_first=True) for _ in range(20)]
    routes = [add_route(database, hook.url) for hook in hooks]
    service = start_delivery(launch, database, nats_server, DELIVERY_CONCURRENCY="32",
                             DB_POOL_SIZE="2", ROUTES_CACHE_SECONDS="0",
                             RETRY_BACKOFF_SECONDS="0.1", CIRCUIT_FAILURE_THRESHOLD="1000")
    publish(nats_server.url, [(routes[i % 20], f"burst-{i}") for i in range(200)])

    def delivered() -> int:
        return sum(len(hook.keys(204)) for hook in hooks)

    assert wait_until(lambda: delivered() == 200, timeout=60) is not None, delivered()
    time.sleep(1)
    for index, hook in enumerate(hooks):
        expected = {f"burst-{i}" for i in range(index, 200, 20)}
        assert hook.keys(204) == Counter({key: 1 for key in expected})
        assert hook.keys(500) == Counter({key: 1 for key in expected})
    assert "another operation is in progress" not in service.log_text()
    counters = health(service)
    assert (counters["delivered"], counters["retries"], counters["failed"]) == (200, 200, 0)
    assert database.count("delivery_attempts") == 0
    assert service.status("/ready") == 200


# -- the circuit breaker -----------------------------------------------------------------------


def test_an_open_circuit_sends_nothing_then_one_trial_request(
        launch, database, nats_server, webhooks):
    failing = webhooks.start("fail")
    route = add_route(database, failing.url)
    service = start_delivery(launch, database, nats_server, MAX_ATTEMPTS="100",
                             RETRY_BACKOFF_SECONDS="0.05", CIRCUIT_FAILURE_THRESHOLD="3",
                             CIRCUIT_OPEN_SECONDS="4", ENDPOINT_CONCURRENCY="1")
    publish(nats_server.url, [(route, f"m-{i}") for i in range(20)])
    assert wait_until(lambda: failing.count() >= 3, timeout=15) is not None
    opened = failing.requests[2][0]
    time.sleep(max(0.0, opened + 3.5 - time.monotonic()))
    assert failing.count() == 3, "requests reached the endpoint while its circuit was open"
    assert service.status("/ready") == 200
    # Half-open after 4 s: exactly one trial, which fails and opens the circuit again.
    assert wait_until(lambda: failing.count() >= 4, timeout=5) is not None
    trial = failing.requests[3][0]
    assert trial - opened >= 3.9
    time.sleep(max(0.0, trial + 3.5 - time.monotonic()))
    assert failing.count() == 4
    assert health(service)["deferred"] > 0


# -- pure decisions ----------------------------------------------------------------------------


def test_breaker_opens_after_the_threshold_of_consecutive_failures():
    breaker = CircuitBreaker(threshold=3, open_seconds=30)
    for _ in range(2):
        assert breaker.admit(0).allowed
        assert breaker.record(False, 0, trial=False) is None
    assert breaker.admit(0).allowed
    assert breaker.record(False, 1, trial=False) is Transition.OPENED
    refused = breaker.admit(11)
    assert not refused.allowed and refused.wait == pytest.approx(20)
    assert breaker.state(11) == "open"


def test_breaker_success_resets_the_consecutive_failure_count():
    breaker = CircuitBreaker(threshold=2, open_seconds=30)
    breaker.record(False, 0, trial=False)
    breaker.record(True, 0, trial=False)
    breaker.record(False, 0, trial=False)
    assert breaker.state(0) == "closed"


def test_half_open_breaker_admits_one_trial_at_a_time():
    breaker = CircuitBreaker(threshold=1, open_seconds=10)
    breaker.record(False, 0, trial=False)
    trial = breaker.admit(10)
    assert trial.allowed and trial.trial
    assert not breaker.admit(10.5).allowed  # the trial is still in flight
    assert breaker.record(True, 11, trial=True) is Transition.CLOSED
    assert breaker.admit(11) == breaker.admit(11)  # closed: everything is allowed
    assert breaker.admit(11).allowed and not breaker.admit(11).trial


def test_a_failed_trial_opens_the_breaker_for_another_period():
    breaker = CircuitBreaker(threshold=1, open_seconds=10)
    breaker.record(False, 0, trial=False)
    assert breaker.admit(10).trial
    assert breaker.record(False, 12, trial=True) is None  # it was open already
    assert not breaker.admit(21).allowed
    assert breaker.admit(22).trial


def test_an_abandoned_trial_lets_the_next_request_try():
    breaker = CircuitBreaker(threshold=1, open_seconds=10)
    breaker.record(False, 0, trial=False)
    assert breaker.admit(10).trial
    breaker.abandon(trial=True)
    assert breaker.admit(10).trial


def test_a_late_failure_of_a_request_sent_before_opening_does_not_extend_the_circuit():
    breaker = CircuitBreaker(threshold=1, open_seconds=10)
    breaker.record(False, 0, trial=False)
    breaker.record(False, 9, trial=False)
    assert breaker.admit(10).trial


def test_endpoint_key_is_scheme_host_and_port_without_path_or_credentials():
    assert endpoint_key("http://user:secret@Example.COM/a?b=1") == "http://example.com:80"
    assert endpoint_key("https://example.com/x") == "https://example.com:443"
    assert endpoint_key("http://example.com:8080/x") == "http://example.com:8080"
    assert endpoint_key("http://[::1]:9000/") == "http://[::1]:9000"
    assert endpoint_key("http://h:99999/") == "http://h:99999/"  # unparsable: itself
    assert endpoint_key("not a url") == "not a url"


def test_retry_delay_doubles_from_the_base_up_to_the_cap():
    assert [retry_delay(n, 1.0, 5.0) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert retry_delay(0, 0.5, 60) == 0.5


def test_route_messages_need_an_int64_route_id_and_a_device():
    ok = json.dumps({"route_id": 7, "device_id": "d"}).encode()
    assert parse_route_message(ok).route_id == 7
    for bad in ({"route_id": 2**63, "device_id": "d"}, {"route_id": 0, "device_id": "d"},
                {"route_id": True, "device_id": "d"}, {"route_id": "7", "device_id": "d"},
                {"route_id": 7}, [1]):
        assert parse_route_message(json.dumps(bad).encode()) is None
    assert parse_route_message(b"\xff") is None


def test_bounded_cache_forgets_the_least_recently_used():
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)


BASE_ENV = {"DATABASE_URL": "postgresql://u@h/d", "NATS_URL": "nats://h:4222"}


def test_config_refuses_a_request_timeout_the_stall_watchdog_would_call_stuck():
    with pytest.raises(ConfigError) as error:
        DeliveryConfig.from_env(Env({**BASE_ENV, "REQUEST_TIMEOUT_SECONDS": "100",
                                     "WORKER_STALL_SECONDS": "60"}))
    assert error.value.variable == "REQUEST_TIMEOUT_SECONDS"


def test_config_ack_wait_exceeds_a_whole_delivery():
    config = DeliveryConfig.from_env(Env({**BASE_ENV, "REQUEST_TIMEOUT_SECONDS": "20"}))
    assert config.ack_wait > config.delivery_budget > 20
