"""The lean pull loop: JetStream pull requests sent by hand on plain subscriptions.

nats-py's `fetch` builds a future, a uuid and a task hop per message, and `Msg.ack()` adds
another await: most of a consumer's time goes there, not into the messages. This loop
speaks the pull protocol itself over nats-py's plain publish and subscribe, and acks as
plain publishes. Each inbox's data messages go from the client's parser straight to a plain
function that files them (DirectClient: no Msg object, queue or task per message); its status
messages come through nats-py's callback.

The protocol rules it follows (JetStream `$JS.API.CONSUMER.MSG.NEXT`, as documented by NATS
and implemented by its clients):

1. A pull request is a publish to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>` whose reply
   subject is where the server delivers; its body is JSON `{"batch", "expires",
   "idle_heartbeat", "max_bytes"}` (durations in nanoseconds). The server serves it until
   `batch` messages were sent, the next message would pass `max_bytes`, or `expires` passes.
2. Delivered messages keep their stream subject; their reply subject is the ack subject
   `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stored ns>.<pending>`
   (or, with a domain, `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.
   <stream seq>.<consumer seq>.<stored ns>.<pending>[.<token>]`). The metadata the store
   needs (stream sequence, stored time) is read from it, here, not from nats-py internals.
3. Since messages carry their stream subject, a request can only be told apart from another
   by the subscription it arrives on: each request in flight has an inbox (a subscription) of
   its own, so its messages and statuses are counted exactly and its byte reservation is
   given back the moment it ends. The server serves waiting requests round-robin; several in
   flight (IN_FLIGHT) keep the pipe full while the process handles what arrived.
4. A request ends silently once `batch` messages arrived; otherwise with a status message
   (headers only, `NATS/1.0 <code> <description>`): 404 No Messages, 408 Request Timeout
   (expired), 409 (Message Size Exceeds MaxBytes; Consumer Deleted; Leadership Change;
   Server Shutdown; Exceeded MaxWaiting / MaxRequestBatch / MaxRequestExpires /
   MaxRequestMaxBytes; Consumer is push based), 503 No Responders (no consumer, or no
   JetStream, to take the request). Each ends the request; 409 Consumer Deleted and 503 also
   make the consumer look itself up at once (it re-creates itself: PullConsumer's healing),
   and the limit and unknown statuses back that inbox off for a second, logged once. A
   409 Batch Completed trails a request whose last message ended it already: ignored.
5. 100 is a control status: an idle heartbeat, sent while a request is open and nothing was
   delivered for `idle_heartbeat`, or a flow-control request. One with a reply subject (flow
   control), or a heartbeat naming a stalled consumer (`Nats-Consumer-Stalled`), is answered
   with an empty publish to that subject.
6. `idle_heartbeat` stays at most half of `expires` (the server refuses more). An open
   request with nothing heard for MISSED_HEARTBEATS heartbeats, or past its expiry with no
   status, means the request or the server is lost: the "nats" readiness check fails (within
   MISSED_HEARTBEATS x IDLE_HEARTBEAT_SECONDS plus a tick) until something is heard again, and
   the request is re-issued on a fresh inbox (a late answer to the old one cannot be mistaken
   for the new one's). Nothing the loop awaits may outlast that watch: the periodic look at
   the consumer (a JetStream API round trip, up to its 5 s timeout when the server is frozen)
   runs beside the loop, not in it.
7. Requests live on the server as long as the connection's interest in their inbox: after a
   disconnect every open request is abandoned and re-issued on fresh inboxes, also when the
   client reconnected before the loop saw it disconnected (its reconnect count moved).
8. Each request's `max_bytes` is reserved from the ByteBudget before it is sent, and what it
   did not use is given back when it ends: payload bytes in flight plus bytes fetched and not
   yet settled never pass the budget (plus one largest message, which a request must always
   be able to bring).
9. Acks (`+ACK`), naks (`-NAK`) and in-progress signals (`+WPI`) are plain publishes to a
   message's reply subject. A batch's acks (or in-progress signals) are one block of
   `PUB <reply> <size>` lines handed to the client's write buffer at once and flushed once
   (nats-py's publish costs a future and a flusher wake-up per message: a tenth of the loop's
   time); if the client lacks that buffer, or a reply subject is not a plain printable token
   string, each is published through the client's `publish`. JetStream treats a lost ack as
   no ack: the message is redelivered after the ack wait, which the idempotent insert
   absorbs.

The subjects the loop and its binding use, and so all that its NATS user is granted (the chart's
nats.conf, chart/templates/_nats.tpl; services/tests/test_nats_permissions.py runs the loop as
that user): publish to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>` (pull requests),
`$JS.ACK.<stream>.<durable>.>` (acks, naks, in-progress), `$JS.FC.<stream>.<durable>.>` (rule 5's
answers), `$JS.API.CONSUMER.INFO.<stream>.<durable>` and `$JS.API.CONSUMER.DURABLE.CREATE.<stream>.
<durable>` (binding and healing), `$JS.API.STREAM.INFO.<stream>` (is the stream there; where to
resume); subscribe to `<NATS_INBOX_PREFIX>.>` (the inboxes, and JetStream API replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common.faults import Fault, classify
from services.common.health import HealthState
from services.common.messaging import (
    CONSUMER_CHECK_SECONDS,
    NATS_TROUBLE,
    ByteBudget,
    DirectClient,
    NatsLink,
    PullConsumer,
    Stream,
    settle,
)
from services.common.retry import Backoff

log = logging.getLogger("lean-pull")

ACK, NAK, IN_PROGRESS = b"+ACK", b"-NAK", b"+WPI"
CONSUMER_STALLED = "Nats-Consumer-Stalled"
# Reply subjects written into a block of PUB lines, newline-joined: printable ASCII, no spaces.
_PLAIN_REPLIES = re.compile(r"[!-~]+(?:\n[!-~]+)*")
# Requests in flight at once, each on its own inbox.
IN_FLIGHT = 4
# A request waits this long for messages before the server ends it with 408.
EXPIRES_SECONDS = 5.0
# The server's heartbeat on an open request with nothing to deliver (≤ half the expiry).
IDLE_HEARTBEAT_SECONDS = 1.0
# Heartbeats that may go missing before the request (or the server) is taken for lost.
MISSED_HEARTBEATS = 3
# How long the loop sleeps at most between two looks at its requests.
TICK_SECONDS = 0.25
# An inbox that met a limit or an unexpected status waits this long before its next request.
STATUS_BACKOFF_SECONDS = 1.0
# Retiring an inbox: the round trip that makes sure the server sent all it will send.
RETIRE_TIMEOUT_SECONDS = 5.0
API_PREFIX = "$JS.API.CONSUMER.MSG.NEXT"
# Status codes ending a request, and 409 descriptions that are part of normal operation.
_ENDS = ("404", "408", "409", "503")
_ROUTINE_409 = ("Message Size Exceeds MaxBytes", "Leadership Change", "Server Shutdown")
REPORTER = "pull requests"


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequencePair:
    stream: int
    consumer: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a JetStream ack subject says about its message (protocol rule 2)."""

    sequence: SequencePair
    num_delivered: int
    num_pending: int
    timestamp: datetime  # when the stream stored the message: the same on every redelivery
    stream: str
    consumer: str
    domain: str = ""


class NotAckSubjectError(ValueError):
    pass


def parse_ack_subject(reply: str) -> Metadata:
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise NotAckSubjectError(reply)
    if len(tokens) == 9:
        domain, rest = "", tokens[2:]
    elif len(tokens) in (11, 12):
        domain = "" if tokens[2] == "_" else tokens[2]
        rest = tokens[4:11]
    else:
        raise NotAckSubjectError(reply)
    stream, consumer, delivered, stream_seq, consumer_seq, stored_ns, pending = rest
    return Metadata(
        sequence=SequencePair(int(stream_seq), int(consumer_seq)),
        num_delivered=int(delivered), num_pending=int(pending),
        timestamp=datetime.fromtimestamp(int(stored_ns) / 1e9, UTC),
        stream=stream, consumer=consumer, domain=domain,
    )


class Pulled:
    """One delivered message: subject, payload, and settling by plain publishes through the
    link's current client (an ack is valid on any connection)."""

    __slots__ = ("_link", "_metadata", "data", "reply", "subject")

    def __init__(self, subject: str, reply: str, data: bytes, link: NatsLink) -> None:
        self.subject = subject
        self.reply = reply
        self.data = data
        self._link = link
        self._metadata: Metadata | None = None

    @property
    def metadata(self) -> Metadata:
        if self._metadata is None:
            self._metadata = parse_ack_subject(self.reply)
        return self._metadata

    async def ack(self) -> None:
        await self._link.client.publish(self.reply, ACK)

    async def nak(self) -> None:
        await self._link.client.publish(self.reply, NAK)

    async def in_progress(self) -> None:
        await self._link.client.publish(self.reply, IN_PROGRESS)


# -- requests ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    batch: int
    max_bytes: int
    issued_at: float
    deadline: float  # expiry plus a heartbeat: no status by then means it was lost
    received: int = 0
    bytes: int = 0


class _Inbox:
    """A subscription carrying at most one open request at a time (protocol rule 3)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.subscription = None
        self.request: _Request | None = None
        self.heard_at = 0.0
        self.resume_at = 0.0
        self.retired = False


class LeanPullConsumer(PullConsumer):
    """A PullConsumer (binding, self-healing, the "consumer" check) whose messages come
    through the lean loop above. `batches` yields lists of `Pulled`."""

    def __init__(
        self,
        link: NatsLink,
        health: HealthState,
        stream: Stream,
        durable: str,
        *,
        ack_wait: float,
        max_ack_pending: int,
        also_require: tuple[Stream, ...] = (),
        in_flight: int = IN_FLIGHT,
        expires: float = EXPIRES_SECONDS,
        idle_heartbeat: float = IDLE_HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(link, health, stream, durable, ack_wait=ack_wait,
                         max_ack_pending=max_ack_pending, also_require=also_require)
        if idle_heartbeat * 2 > expires:
            raise ValueError("idle_heartbeat must be at most half of expires")
        self._in_flight = in_flight
        self._expires = expires
        self._heartbeat = idle_heartbeat
        self._nats_state = health.dependency("nats")
        self._inboxes: list[_Inbox] = []
        self._ready: deque[Pulled] = deque()
        self._wake = asyncio.Event()
        self._budget: ByteBudget | None = None
        self._in_doubt = False
        self._lost_reported = False
        self._failure: BaseException | None = None
        self._logged: set[str] = set()
        self._retiring: set[asyncio.Task] = set()
        self._verifying: asyncio.Task[None] | None = None
        self._names = itertools.count()
        self._inbox_prefix = ""
        self._reconnects = 0
        self.requests_issued = 0
        self.requests_lost = 0

    # -- the loop ------------------------------------------------------------------------

    async def batches(  # type: ignore[override]
        self, batch_size: int, budget: ByteBudget | None = None
    ) -> AsyncIterator[list[Pulled]]:
        """Delivered messages, in lists of at most `batch_size`, until `stop()`. With a
        budget, every request's max_bytes is reserved from it first (the caller gives a
        message's bytes back once it is settled)."""
        if budget is None:
            budget = ByteBudget(64 * max(self._link.client.max_payload, 1024 * 1024))
        self._budget = budget
        budget.on_freed(self._wake.set)
        backoff = Backoff(initial=0.2, maximum=5.0)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._failure is not None:
                raise self._failure
            if not self._link.client.is_connected:
                self._abandon_all("disconnected from NATS")
                await asyncio.sleep(0.1)
                continue
            reconnects = self._link.client.stats["reconnects"]
            if reconnects != self._reconnects:
                # Rule 7 also when the client reconnected between two turns of this loop: the
                # server dropped the open requests with the old connection.
                self._reconnects = reconnects
                self._abandon_all("reconnected to NATS")
            if self._subscription is None or self._generation != self._link.generation:
                self._abandon_all("binding")
                await self._bind_or_wait(backoff)
                continue
            now = loop.time()
            self._watch(now)
            try:
                if not self._inboxes:  # abandoned after a disconnect (rule 7)
                    await self._open_inboxes()
                await self._issue(now, batch_size, budget)
            except Exception as error:
                if classify(error) is Fault.BUG:
                    raise
                await asyncio.sleep(0.1)  # NATS trouble: the "nats" check shows it
                continue
            if self._in_doubt or now - self._checked_at > CONSUMER_CHECK_SECONDS:
                self._in_doubt = False
                self._verify_aside()
            if self._ready:
                # Requests were re-issued above first: the pipe stays full while the
                # caller works on these.
                yield self._take(batch_size)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
        # Stopping: no new requests; what the open ones still bring is delivered.
        self._stop_verifying()
        self._abandon_all("stopping")
        await self._retired()
        while self._ready:
            yield self._take(batch_size)

    def _verify_aside(self) -> None:
        """Look the consumer up (PullConsumer._verify) in a task of its own, one at a time:
        the loop goes on watching its requests meanwhile (rule 6). A bug there ends the loop."""
        if self._verifying is not None and not self._verifying.done():
            return
        self._checked_at = asyncio.get_running_loop().time()
        task = asyncio.ensure_future(self._verify())

        def finished(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self._fail(done.exception())

        task.add_done_callback(finished)
        self._verifying = task

    def _fail(self, error: BaseException) -> None:
        """A bug in a callback or a task beside the loop: the loop raises it on its next turn
        (the taxonomy's "bug": the writer ends, liveness fails)."""
        self._failure = error
        self._wake.set()

    def _take(self, batch_size: int) -> list[Pulled]:
        ready = self._ready
        if len(ready) <= batch_size:
            taken = list(ready)
            ready.clear()
            return taken
        return [ready.popleft() for _ in range(batch_size)]

    # -- requests ------------------------------------------------------------------------

    async def _issue(self, now: float, batch_size: int, budget: ByteBudget) -> None:
        largest = max(self._link.client.max_payload, 1024 * 1024)
        share = max(budget.limit // self._in_flight, largest)
        client = self._link.client
        subject = f"{API_PREFIX}.{self._stream.name}.{self._durable}"
        for inbox in self._inboxes:
            if inbox.request is not None or now < inbox.resume_at:
                continue
            # One largest message must always fit (rule 8): wait for that much room.
            if budget.free < min(largest, budget.limit):
                return
            max_bytes = max(min(budget.free, share), largest)
            body = json.dumps({
                "batch": batch_size, "expires": int(self._expires * 1e9),
                "idle_heartbeat": int(self._heartbeat * 1e9), "max_bytes": max_bytes,
            }).encode()
            budget.take(max_bytes)
            inbox.request = _Request(batch_size, max_bytes, now,
                                     now + self._expires + self._heartbeat)
            try:
                await client.publish(subject, body, reply=inbox.subject)
            except Exception:
                self._end(inbox)
                raise
            self.requests_issued += 1

    def _end(self, inbox: _Inbox) -> None:
        """The request on `inbox` is over: give back the bytes it reserved and did not use."""
        request, inbox.request = inbox.request, None
        if request is not None and self._budget is not None:
            self._budget.give_back(request.max_bytes - request.bytes)
        self._wake.set()

    def _watch(self, now: float) -> None:
        """Rule 6: a request unanswered for MISSED_HEARTBEATS heartbeats, or past its expiry
        without a status, is lost: readiness fails, and it is re-issued on a fresh inbox."""
        silence = MISSED_HEARTBEATS * self._heartbeat
        for index, inbox in enumerate(self._inboxes):
            request = inbox.request
            if request is None:
                continue
            heard = max(inbox.heard_at, request.issued_at)
            if now - heard > silence:
                why = f"no message or heartbeat on a pull request for {now - heard:.1f} s"
            elif now > request.deadline:
                why = "a pull request expired without the server's answer"
            else:
                continue
            self.requests_lost += 1
            if not self._lost_reported:
                self._lost_reported = True
                log.warning("%s on %s/%s; re-issuing it", why, self._stream.name,
                            self._durable)
            self._nats_state.failed(REPORTER, why)
            self._inboxes[index] = self._renew(inbox)

    def _heard(self, inbox: _Inbox) -> None:
        inbox.heard_at = asyncio.get_running_loop().time()
        if self._lost_reported and not inbox.retired:
            self._lost_reported = False
            log.info("pull requests on %s/%s answered again", self._stream.name,
                     self._durable)
            self._nats_state.recovered(REPORTER)

    # -- inboxes -------------------------------------------------------------------------

    async def _subscribe(self, js: JetStreamContext) -> object:
        """Binding: fresh inboxes on the current client (the durable is there by now)."""
        self._abandon_all("rebinding")
        await self._open_inboxes()
        self._checked_at = asyncio.get_running_loop().time()
        return self

    async def _open_inboxes(self) -> None:
        self._inbox_prefix = self._link.client.new_inbox()
        inboxes = [self._new_inbox() for _ in range(self._in_flight)]
        for inbox in inboxes:
            await self._open(inbox)
        self._inboxes = inboxes

    def _new_inbox(self) -> _Inbox:
        return _Inbox(f"{self._inbox_prefix}.{next(self._names)}")

    async def _open(self, inbox: _Inbox) -> None:
        budget = self._budget.limit if self._budget else 64 * 1024 * 1024

        async def on_message(message: Msg) -> None:
            self._on_message(inbox, message)

        # The client may queue a whole request's bytes for this inbox: never a slow
        # consumer within the budget (rule 8), whatever the callback's pace.
        client = self._link.client
        inbox.subscription = await client.subscribe(
            inbox.subject, cb=on_message, pending_msgs_limit=-1,
            pending_bytes_limit=2 * budget + 2 * client.max_payload)
        if isinstance(client, DirectClient):
            # Messages skip nats-py's Msg, queue and task (see DirectClient), in order.
            client.deliver_directly(inbox.subscription, lambda subject, reply, data, headers: (
                self._on_raw(inbox, subject, reply, data, headers)))

    def _renew(self, inbox: _Inbox) -> _Inbox:
        """Retire `inbox` (its request abandoned) and open another in its place."""
        self._end(inbox)
        self._retire(inbox)
        fresh = self._new_inbox()
        task = asyncio.ensure_future(self._open(fresh))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        fresh.resume_at = asyncio.get_running_loop().time() + 0.05  # after its SUB went out
        return fresh

    def _retire(self, inbox: _Inbox) -> None:
        """Stop listening on `inbox` once what the server sent there has been handled (a
        message already sent is still delivered: it may be acked like any other)."""
        inbox.retired = True
        subscription, inbox.subscription = inbox.subscription, None
        if subscription is None:
            return

        async def drain() -> None:
            with contextlib.suppress(*NATS_TROUBLE, RuntimeError):
                try:
                    await asyncio.wait_for(subscription.drain(), RETIRE_TIMEOUT_SECONDS)
                except TimeoutError:
                    await subscription.unsubscribe()

        task = asyncio.ensure_future(drain())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _abandon_all(self, why: str) -> None:
        if not self._inboxes:
            return
        open_requests = sum(inbox.request is not None for inbox in self._inboxes)
        if open_requests and why not in ("stopping", "binding", "rebinding"):
            log.info("abandoning %d open pull requests (%s)", open_requests, why)
        for inbox in self._inboxes:
            self._end(inbox)
            self._retire(inbox)
        self._inboxes = []

    async def _retired(self) -> None:
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=RETIRE_TIMEOUT_SECONDS + 1)

    # -- what arrives ----------------------------------------------------------------------

    def _on_message(self, inbox: _Inbox, message: Msg) -> None:
        """A message through nats-py's callback (a client that cannot deliver directly)."""
        try:
            headers = message.headers
            status = headers.get("Status") if headers else None
            if status is not None and not message.data:
                self._heard(inbox)
                self._on_status(inbox, status, headers.get("Description", ""),
                                message.reply or headers.get(CONSUMER_STALLED))
                return
        except Exception as error:  # a bug here must end the loop, not read as NATS trouble
            self._fail(error)
            return
        self._on_data(inbox, message.subject, message.reply, message.data)

    def _on_raw(self, inbox: _Inbox, subject: bytes, reply: bytes, data: bytes,
                headers: bytes | None) -> None:
        """A message as DirectClient's parser hands it over: raw, in arrival order."""
        if headers and not data:
            try:
                status, description, fields = parse_status(headers)
                if status is not None:
                    self._heard(inbox)
                    self._on_status(inbox, status, description,
                                    reply.decode() or fields.get(CONSUMER_STALLED))
                    return
            except Exception as error:  # a bug here must end the loop
                self._fail(error)
                return
        self._on_data(inbox, subject.decode(), reply.decode(), data)

    def _on_data(self, inbox: _Inbox, subject: str, reply: str, data: bytes) -> None:
        try:
            self._heard(inbox)
            size = len(data)
            request = inbox.request
            if request is None or inbox.retired:
                # A late answer to an abandoned request: not reserved, so taken now.
                if self._budget is not None:
                    self._budget.take(size)
            else:
                request.received += 1
                request.bytes += size
                if request.received >= request.batch:
                    self._end(inbox)
            self._ready.append(Pulled(subject, reply, data, self._link))
            self._wake.set()
        except Exception as error:  # a bug here must end the loop, not read as NATS trouble
            self._fail(error)

    def _on_status(self, inbox: _Inbox, status: str, description: str,
                   answer_to: str | None) -> None:
        """`answer_to`: the status's reply subject, or its Nats-Consumer-Stalled header."""
        if status == "100":
            # Rule 5: flow control, or a heartbeat telling of a stalled consumer.
            if answer_to:
                self._answer(answer_to)
            return
        if status == "409" and description == "Batch Completed":
            return  # trails a request that its last message ended already (rule 4)
        if inbox.retired or inbox.request is None:
            return
        self._end(inbox)
        if status in ("404", "408"):
            return
        if status == "409" and description in _ROUTINE_409:
            return
        if status == "503" or (status == "409" and description == "Consumer Deleted"):
            self._in_doubt = True  # look the consumer up now; re-created if gone
            inbox.resume_at = asyncio.get_running_loop().time() + STATUS_BACKOFF_SECONDS / 4
            return
        what = f"{status} {description}".strip()
        if what not in self._logged:
            self._logged.add(what)
            log.warning("pull request on %s/%s ended with status %s; backing off",
                        self._stream.name, self._durable, what)
        inbox.resume_at = asyncio.get_running_loop().time() + STATUS_BACKOFF_SECONDS

    def _answer(self, reply: str) -> None:
        task = asyncio.ensure_future(self._link.client.publish(reply, b""))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    # -- settling (rule 9) -----------------------------------------------------------------

    async def acknowledge(self, messages: list[Pulled]) -> None:  # type: ignore[override]
        await self._publish_to_replies(messages, ACK)

    async def mark_in_progress(self, messages: list[Pulled]) -> None:  # type: ignore[override]
        await self._publish_to_replies(messages, IN_PROGRESS)

    async def _publish_to_replies(self, messages: list[Pulled], token: bytes) -> None:
        if not messages:
            return
        client = self._link.client
        replies = [message.reply for message in messages]
        block = _pub_block(replies, token)
        write = getattr(client, "_send_command", None)
        flush = getattr(client, "_flush_pending", None)
        if block is None or write is None or flush is None or not client.is_connected:
            await settle(messages, lambda message: client.publish(message.reply, token))
            return
        try:
            await write(block)
            await flush()
        except Exception as error:
            if classify(error) is Fault.BUG:
                raise
            # NATS went away meanwhile: unsettled messages are redelivered after the ack wait.

    # -- closing -------------------------------------------------------------------------

    def _stop_verifying(self) -> None:
        if self._verifying is not None:
            self._verifying.cancel()
            self._verifying = None

    async def unsubscribe(self) -> None:
        """What PullConsumer's unbind and close call on the bound subscription."""
        self._stop_verifying()
        self._abandon_all("closing")
        await self._retired()

    def _unbind(self, why: str) -> None:
        self._abandon_all(why)
        super()._unbind(why)


def parse_status(headers: bytes) -> tuple[str | None, str, dict[str, str]]:
    """(status code, description, header fields) of a raw `NATS/1.0 <code> <description>`
    header block; the code is None when the first line carries none."""
    head, _, rest = headers.partition(b"\r\n")
    code, _, description = head.removeprefix(b"NATS/1.0").strip().partition(b" ")
    fields = {}
    for line in rest.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if colon:
            fields[key.strip().decode()] = value.strip().decode()
    return (code.decode() or None), description.strip().decode(), fields


def _pub_block(replies: list[str], token: bytes) -> bytes | None:
    """`PUB <reply> <size>\r\n<token>\r\n` for every reply, as one block; None if a reply
    could break the protocol line (see _PLAIN_REPLIES)."""
    if not _PLAIN_REPLIES.fullmatch("\n".join(replies)):
        return None
    tail = f" {len(token)}\r\n{token.decode()}\r\n"
    return ("PUB " + (tail + "PUB ").join(replies) + tail).encode()
