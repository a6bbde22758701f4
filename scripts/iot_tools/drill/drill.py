"""One drill run, wired: render → servers → migration → feed → containers under the kubelet
model → live view → scenario → closing output and JSON report. Everything started here is
stopped here, also when the run is interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from iot_tools.drill.counters import HealthCounters
from iot_tools.drill.display import LiveView, format_table
from iot_tools.drill.faults import DEFAULT_FAULTS, Fault, FaultContext, parse_fault
from iot_tools.drill.html import write_html
from iot_tools.drill.kubelet import Container
from iot_tools.drill.limits import Limits
from iot_tools.drill.platform import LocalPlatform
from iot_tools.drill.probes import ProbeExecutor
from iot_tools.drill.render import RenderedPlatform, read_render
from iot_tools.drill.report import build_report, print_closing, write_report
from iot_tools.drill.scenario import Scenario, ScenarioResult, ScenarioSettings
from iot_tools.drill.telemetry import TelemetryLedger, index_now
from iot_tools.drill.timeline import Timeline
from iot_tools.drill.timescale import TimeScale
from iot_tools.feed import SteadyFeed
from iot_tools.servers import temp_workdir

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_INTERRUPTED = 130
PROBE_THREADS = 32
# The telemetry lane of the HTML report: how often the feed's count and ingest's /health
# counters are sampled (the counters themselves are polled about as often).
TELEMETRY_SAMPLE_SECONDS = 1.0
INGEST = "ingest_iot"
# The services' documented start-up hook (services/common/config.py).
SLOW_START_ENV = "IOT_TEST_STARTUP_DELAY_SECONDS"


@dataclass(frozen=True)
class DrillOptions:
    values_files: tuple[str, ...] = ()
    set_values: tuple[str, ...] = ()
    helm_major: int = 3
    time_scale: float = 0.2
    faults: tuple[str, ...] = DEFAULT_FAULTS
    # service → values seconds its start-up takes before the probe port opens (test hook).
    slow_start: Mapping[str, float] = field(default_factory=dict)
    warmup: float = 20.0
    hold: float | None = None
    settle: float = 20.0
    feed_rate: float = 50.0
    catch_up_timeout: float = 90.0
    report: Path | None = None
    html: Path | None = None
    workdir: Path | None = None
    keep_workdir: bool = False
    tty: bool | None = None


class Drill:
    def __init__(self, options: DrillOptions, stream: TextIO = sys.stdout) -> None:
        self.options = options
        self.stream = stream
        self.scale = TimeScale(options.time_scale)
        self.faults: tuple[Fault, ...] = tuple(parse_fault(text) for text in options.faults)
        self.timeline = Timeline()
        self.containers: dict[str, Container] = {}
        self.result = ScenarioResult()
        self.interrupted = False
        self.samples: list[dict] = []

    # -- set-up ----------------------------------------------------------------------------

    def env_additions(self, rendered: RenderedPlatform) -> dict[str, dict[str, str]]:
        additions: dict[str, dict[str, str]] = {}
        for fault in self.faults:
            for service, env in fault.env_additions().items():
                additions.setdefault(service, {}).update(env)
        for service, seconds in self.options.slow_start.items():
            additions.setdefault(service, {}).update(
                {"IOT_TEST_HOOKS": "true", SLOW_START_ENV: f"{self.scale(seconds):g}"})
        known = {plan.service for plan in rendered.containers}
        unknown = sorted(set(additions) - known)
        if unknown:
            raise ValueError(f"no such service in the render: {', '.join(unknown)} "
                             f"(services: {', '.join(sorted(known))})")
        return additions

    def _print_plan(self, rendered: RenderedPlatform, platform: LocalPlatform) -> None:
        options = self.options
        write = self.stream.write
        overrides = [*(f"--values {f}" for f in options.values_files),
                     *(f"--set {s}" for s in options.set_values)]
        write(f"probe drill: helm {options.helm_major} template "
              f"{' '.join(overrides) or '(default values)'}\n")
        write(f"time scale {self.scale.factor:g}: probe timings, crash-loop back-off and "
              "scenario durations × that factor (grace periods and the services' own timings "
              "run at real speed)\n")
        rows = []
        for plan in rendered.containers:
            for kind, spec in plan.probes.items():
                rows.append((plan.service, kind, spec.handler.describe(),
                             f"{self.scale(spec.initial_delay):g}",
                             f"{self.scale(spec.period):g}", f"{self.scale(spec.timeout):g}",
                             f"{spec.success_threshold}/{spec.failure_threshold}"))
        table = format_table(rows, ("service", "probe", "handler", "delay s", "period s",
                                    "timeout s", "success/failure"))
        write("".join(f"  {line}\n" for line in table))
        streams = rendered.streams
        write(f"  init containers, once: migrate (roles as {rendered.database_admin}, schema as "
              f"{rendered.migrate.env.get('PGUSER', '?')})"
              + (f", streams (NATS user {streams.env.get('NATS_USER', '-')})" if streams else "")
              + "; each service logs in as its own PGUSER"
              + (" and NATS_USER" if rendered.nats_server else "") + "\n")
        for service, env in platform.extra_env.items():
            write(f"  drill adds to {service}'s env: {env}\n")
        write(f"  workdir (logs): {platform.workdir}\n")
        self.stream.flush()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> int:
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        rendered = await asyncio.to_thread(read_render, self.options.values_files,
                                           self.options.set_values, self.options.helm_major)
        platform = LocalPlatform(rendered, self.options.workdir or temp_workdir("iot-drill-"),
                                 extra_env=self.env_additions(rendered))
        self._print_plan(rendered, platform)
        limits = Limits({p.service: p.probes for p in rendered.containers},
                        {p.service: p.termination_grace for p in rendered.containers},
                        self.scale)
        exit_code = EXIT_INTERRUPTED
        pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")
        feed: SteadyFeed | None = None
        tasks: list[asyncio.Task] = []
        _cancel_on_signals()
        try:
            await asyncio.to_thread(platform.start_servers)
            await asyncio.to_thread(platform.run_init_containers)
            assert platform.nats is not None and platform.postgres is not None
            first_index = index_now()
            feed = SteadyFeed(platform.nats.url, self.options.feed_rate,
                              start_index=first_index).__enter__()
            for plan in rendered.containers:
                network = platform.networks[plan.service]
                self.containers[plan.service] = Container(
                    plan.service, platform.service_process(plan), plan.probes,
                    ProbeExecutor(network.local, pool, platform.container_env(plan)),
                    self.timeline, self.scale, plan.termination_grace)
            context = FaultContext(platform, self.containers, limits)
            scenario = Scenario(self._settings(), context, self.timeline,
                                TelemetryLedger(platform.postgres, first_index,
                                                lambda: feed.published),
                                feed.stop)
            counters = HealthCounters({s: platform.networks[s].local(rendered.container(s)
                                                                     .health_port)
                                       for s in self.containers}, pool)
            view = LiveView(self.containers, counters, self.timeline,
                            lambda: f"phase {scenario.phase}  feed published {feed.published}",
                            stream=self.stream, tty=self.options.tty)
            launched_at = self.timeline.now()
            tasks = [asyncio.create_task(c.run(), name=n) for n, c in self.containers.items()]
            tasks += [asyncio.create_task(counters.run()), asyncio.create_task(view.run()),
                      asyncio.create_task(self._sample_telemetry(feed, counters))]
            # The scenario fills this result as it goes: an interruption keeps what it has.
            self.result = scenario.result
            await scenario.run(launched_at)
            exit_code = EXIT_OK if self.result.ok else EXIT_EXPECTATION_FAILED
        except asyncio.CancelledError:
            self.interrupted = True
            self.stream.write("\ninterrupted: stopping every process the drill started\n")
        finally:
            with _sigint_ignored():
                await self._stop(tasks, feed, platform, pool)
        # A workdir the user named is never removed; a temporary one unless the run failed.
        keep = self.options.keep_workdir or self.options.workdir is not None or \
            exit_code != EXIT_OK
        print_closing(self.result, self.timeline, limits, self.stream,
                      interrupted=self.interrupted)
        self._write_report(started_at, limits, platform, rendered, exit_code=exit_code,
                           keep=keep)
        if not keep:
            platform.remove()
        else:
            self.stream.write(f"logs kept in {platform.workdir / 'logs'}\n")
        return exit_code

    async def _sample_telemetry(self, feed: SteadyFeed, counters: HealthCounters) -> None:
        """Published (the feed's acked count) and ingest's own counters over time, for the
        report's telemetry lane: the end-of-run account says how many readings were lost,
        this says when the pipeline stalled and caught up."""
        while True:
            self.samples.append({"t": round(self.timeline.now(), 3),
                                 "published": feed.published,
                                 "ingest": dict(counters.latest.get(INGEST) or {})})
            await asyncio.sleep(TELEMETRY_SAMPLE_SECONDS)

    def _settings(self) -> ScenarioSettings:
        options = self.options
        return ScenarioSettings(self.faults, warmup=options.warmup, hold=options.hold,
                                settle=options.settle,
                                catch_up_timeout=options.catch_up_timeout)

    async def _stop(self, tasks: list[asyncio.Task], feed: SteadyFeed | None,
                    platform: LocalPlatform, pool: ThreadPoolExecutor) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for container in self.containers.values():
            container.kill()
        for container in self.containers.values():
            await asyncio.to_thread(container.wait_exited, 10)
        # The feed retries until NATS acks; it can only stop while NATS is up (otherwise it
        # is a daemon thread, gone with this process).
        if feed is not None and platform.nats is not None and platform.nats.process:
            await asyncio.to_thread(feed.stop)
        await asyncio.to_thread(platform.stop)
        pool.shutdown(wait=False, cancel_futures=True)

    def _write_report(self, started_at: str, limits: Limits, platform: LocalPlatform,
                      rendered: RenderedPlatform, *, exit_code: int, keep: bool) -> None:
        if self.options.report is None and self.options.html is None:
            return
        services = {
            plan.service: {
                "workload": plan.workload,
                "health_port": {"container": plan.health_port,
                                "local": platform.networks[plan.service].local(plan.health_port)},
                "termination_grace_period_seconds": plan.termination_grace,
                "env_added": platform.extra_env.get(plan.service, {}),
            } for plan in rendered.containers}
        render = {"helm_major": self.options.helm_major,
                  "values_files": [str(f) for f in self.options.values_files],
                  "set": list(self.options.set_values)}
        report = build_report(
            result=self.result, timeline=self.timeline, limits=limits,
            containers=self.containers, services=services, render=render,
            started_at=started_at, interrupted=self.interrupted, exit_code=exit_code,
            workdir=str(platform.workdir) if keep else None, samples=self.samples)
        # Both files come from this one dict, so the picture never disagrees with the JSON.
        if self.options.report is not None:
            write_report(self.options.report, report)
            self.stream.write(f"report written to {self.options.report}\n")
        if self.options.html is not None:
            write_html(self.options.html, report)
            self.stream.write(f"HTML timeline written to {self.options.html}\n")


def _cancel_on_signals() -> None:
    """Ctrl-C and SIGTERM (e.g. a CI timeout) stop the drill and what it started. SIGINT is
    handled explicitly: a shell starts background jobs with SIGINT ignored, and an ignored
    SIGINT would leave the platform running."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)


@contextlib.contextmanager
def _sigint_ignored():
    """A second Ctrl-C must not cut the clean-up short and leave processes behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_drill(options: DrillOptions, stream: TextIO = sys.stdout) -> int:
    """Run one drill to completion; the exit status (0: every expectation held)."""
    try:
        return asyncio.run(Drill(options, stream).run())
    except KeyboardInterrupt:  # before the drill had anything to stop
        return EXIT_INTERRUPTED
