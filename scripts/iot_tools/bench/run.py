"""One bench run, phase by phase, against one stack: idle probe latency, the throughput
variants interleaved round by round (latency under load is sampled during its own ingest
runs), memory, the dependency faults, and the chart."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from iot_tools.bench import faults, jetstream
from iot_tools.bench.chart import time_chart
from iot_tools.bench.labels import (
    BARE_LABEL,
    CEILING,
    COMMIT_ONLY,
    FETCH_CEILING,
    IDLE,
    INGEST,
    INGEST_FETCH,
    INGEST_PROBED,
    INGEST_SAMPLED,
    LOAD,
    NATS_FROZEN,
    NATS_KILLED,
    ONE_INSERT,
    POSTGRES_KILLED,
    VALIDATION_ONLY,
)
from iot_tools.bench.latency import BackgroundSampler, Endpoint, Samples, sample_rounds, summarise
from iot_tools.bench.machine import describe
from iot_tools.bench.memory import Rss, rss
from iot_tools.bench.prober import ProbeTraffic, kubelet_schedule, probe_cpu
from iot_tools.bench.results import Results
from iot_tools.bench.settings import Settings
from iot_tools.bench.stack import Stack
from iot_tools.bench.throughput import (
    RunResult,
    commit_run,
    ingest_run,
    reference_run,
    validation_run,
)
from iot_tools.bench.windows import alternating
from iot_tools.services import ServiceProcess
from services.common.config import Env
from services.ingest_iot.config import IngestConfig

Log = Callable[[str], None]
# The durable of ingest_iot on nats-py fetch (iot_tools.bench.fetch_ingest), run beside the
# real service.
FETCH_DURABLE = "bench-fetch-ingest"


def endpoints(stack: Stack) -> list[Endpoint]:
    assert stack.bare is not None
    # /metrics: a Prometheus scrape, timed like a probe (the same request from a scraper).
    found = [Endpoint(f"{name} {path}", service.port, path)
             for name, service in stack.services.items()
             for path in ("/health", "/ready", "/metrics")]
    return [*found, Endpoint(BARE_LABEL, stack.bare.port, "/")]


OTHERS = ("pytest", "python -m services.", "nats-server", "bin/postgres ")


def others_running() -> list[str]:
    """Processes of others that would load the machine: tests, services, NATS and PostgreSQL
    servers (postmasters only: their backends are part of them), with their CPU so far."""
    listing = subprocess.run(["ps", "-eo", "pid,time,args"], capture_output=True, text=True,
                             check=False).stdout.splitlines()
    own = str(os.getpid())
    return [" ".join(line.split()) for line in listing[1:]
            if any(word in line for word in OTHERS) and line.split()[0] != own]


def run(settings: Settings, command: str, log: Log) -> Results:
    began = time.monotonic()
    stack = Stack()
    results = Results(
        started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), command=command,
        settings=dataclasses.asdict(settings), load_average=os.getloadavg(),
        others_running=others_running(), machine=describe(stack.workdir))
    try:
        log("starting PostgreSQL (durable), NATS, the five services and the baseline server")
        stack.start()
        _idle_latency(stack, settings, results, log)
        results.rss["idle"] = _rss(stack)
        log(f"CPU cost of probe traffic: {settings.probe_cpu_seconds:g} s idle, then "
            f"{settings.probe_cpu_seconds:g} s at {settings.probe_cpu_factor:g}x the kubelet rate")
        results.probe_cpu = probe_cpu(stack, settings.probe_factor, settings.probe_cpu_factor,
                                      settings.probe_cpu_seconds)
        _throughput(stack, settings, results, log)
        results.rss["under load"] = _rss(stack)
        _faults(stack, settings, results, log)
    finally:
        log("stopping the stack")
        stack.stop()
        stack.remove()
    _chart(settings, results, log)
    results.duration_s = time.monotonic() - began
    return results


def _idle_latency(stack: Stack, settings: Settings, results: Results, log: Log) -> None:
    log(f"idle probe latency: {settings.idle_rounds} rounds x {settings.idle_samples} "
        "requests per endpoint")
    targets = endpoints(stack)
    for _ in range(settings.idle_rounds):
        samples = sample_rounds(targets, settings.idle_samples, settings.sample_pause)
        _record_latency(results, IDLE, samples)


def _record_latency(results: Results, condition: str, samples: Samples) -> None:
    rounds = results.latency.setdefault(condition, {})
    for label, seconds in samples.seconds.items():
        rounds.setdefault(label, []).append(summarise(seconds))
    failures = results.latency_failures.setdefault(condition, {})
    for label, count in samples.failures.items():
        failures[label] = failures.get(label, 0) + count


def _rss(stack: Stack) -> dict[str, Rss]:
    return {name: rss(service.pid) for name, service in stack.services.items()}


def _throughput(stack: Stack, settings: Settings, results: Results, log: Log) -> None:
    assert stack.nats is not None
    # Started before the readings are published, like the real service: its durable takes
    # them in as they come, and each run then replays them.
    fetch_ingest = ServiceProcess(
        "ingest_iot-fetch", {**stack.env, "INGEST_DURABLE": FETCH_DURABLE},
        stack.workdir / "logs", module="iot_tools.bench.fetch_ingest").start()
    fetch_ingest.wait_ready(60)
    # Recent readings: ops_worker prunes telemetry older than its retention.
    epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    payloads = jetstream.readings(settings.messages, settings.devices, epoch)
    log(f"publishing {settings.messages:,} readings to JetStream (once; every run replays them)")
    jetstream.publish(stack.nats.url, payloads)
    config = IngestConfig.from_env(Env(stack.env))
    results.batch_size = config.batch_size
    consumer = jetstream.ConsumerSettings(config.durable, config.ack_wait,
                                          config.max_ack_pending)
    schedule = kubelet_schedule(stack, settings.probe_factor)
    results.probe_rate = ProbeTraffic(schedule).rate
    targets = endpoints(stack)
    samplers: list[BackgroundSampler] = []
    fetch_consumer = jetstream.ConsumerSettings(FETCH_DURABLE, config.ack_wait,
                                                config.max_ack_pending)
    try:
        _rounds(stack, settings, results, log, payloads=payloads, config=config,
                consumer=consumer, fetch_consumer=fetch_consumer, schedule=schedule,
                targets=targets, samplers=samplers)
    finally:
        fetch_ingest.stop(timeout=30)
    for sampler in samplers:
        _record_latency(results, LOAD, sampler.samples)


def _rounds(stack: Stack, settings: Settings, results: Results, log: Log, *,
            payloads: jetstream.Payloads, config: IngestConfig,
            consumer: jetstream.ConsumerSettings, fetch_consumer: jetstream.ConsumerSettings,
            schedule, targets: list[Endpoint], samplers: list[BackgroundSampler]) -> None:

    def sampled() -> BackgroundSampler:
        samplers.append(BackgroundSampler(targets, settings.sample_pause))
        return samplers[-1]

    block = settings.probe_block

    def plain_run(number: int) -> RunResult:
        # No probes at all; its rows split into the same alternating windows all the same:
        # the control, whose on ÷ off is 1 but for noise.
        return ingest_run(stack, consumer, INGEST, settings.messages, split_by=lambda run: (
            alternating(run[0].start, block, math.ceil((run[-1].start - run[0].start) / block),
                        start_on=number % 2 == 0)))

    def probed_run(number: int) -> RunResult:
        # Alternate which state comes first, so neither always gets the run's first block.
        traffic = ProbeTraffic(schedule, blocks=block, start_on=number % 2 == 0)
        return ingest_run(stack, consumer, INGEST_PROBED, settings.messages, lambda: traffic,
                          split_by=lambda _run: traffic.windows)

    def done(variant: str) -> int:
        return len(results.throughput.get(variant, []))

    variants: list[tuple[str, Callable[[], RunResult]]] = [
        (INGEST, lambda: plain_run(done(INGEST))),
        (INGEST_PROBED, lambda: probed_run(done(INGEST_PROBED))),
        (INGEST_SAMPLED, lambda: ingest_run(stack, consumer, INGEST_SAMPLED,
                                            settings.messages, sampled)),
        (INGEST_FETCH, lambda: ingest_run(stack, fetch_consumer, INGEST_FETCH,
                                          settings.messages)),
        (ONE_INSERT, lambda: reference_run(stack, "one-insert", settings.one_insert_messages)),
        (CEILING, lambda: reference_run(stack, "ceiling", settings.messages)),
        (FETCH_CEILING, lambda: reference_run(stack, "fetch-ceiling", settings.messages)),
        (VALIDATION_ONLY, lambda: validation_run(payloads, config.reading_limits)),
        (COMMIT_ONLY, lambda: commit_run(stack, payloads, config)),
    ]
    log("warm-up: one uncounted ingest run of each pull path")
    ingest_run(stack, consumer, "warm-up", settings.messages)
    ingest_run(stack, fetch_consumer, "warm-up", settings.messages)
    for round_number in range(settings.rounds):
        # Rotate the order so that no variant always runs first or last in a round.
        shift = round_number % len(variants)
        for name, measure in variants[shift:] + variants[:shift]:
            result = measure()
            results.throughput.setdefault(name, []).append(result)
            log(f"round {round_number + 1}/{settings.rounds}: {name}: "
                f"{result.rate:,.0f} msg/s ({result.messages:,} in {result.wall_seconds:.1f} s)")


def _faults(stack: Stack, settings: Settings, results: Results, log: Log) -> None:
    scenarios = [
        (NATS_KILLED, faults.nats_killed, settings.kill_repeats),
        (NATS_FROZEN, faults.nats_frozen, settings.freeze_repeats),
        (POSTGRES_KILLED, faults.postgres_killed, settings.kill_repeats),
    ]
    for name, scenario, repeats in scenarios:
        log(f"fault: {name} x {repeats}")
        results.faults[name] = scenario(stack, repeats)


def _chart(settings: Settings, results: Results, log: Log) -> None:
    log(f"chart: helm template + strict validation in a fresh process x {settings.chart_repeats}"
        " per Helm major")
    for _ in range(settings.chart_repeats):
        for major in (3, 4):
            results.chart.append(time_chart(major))


def stderr_log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)
