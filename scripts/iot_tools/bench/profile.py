"""Where ingest_iot's time goes at full speed: the bench's stack with ingest_iot under
cProfile, the stream replayed a few times, then the functions by own time.

`python -m iot_tools.bench.profile [--messages N] [--runs R] [--top K]`; the profile file is
kept with --keep (open it with `python -m pstats` or snakeviz). cProfile slows Python code
down, so the rate printed here is not a benchmark figure; the shares of time are the point.
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iot_tools.bench import jetstream
from iot_tools.bench.run import stderr_log
from iot_tools.bench.stack import Stack
from iot_tools.bench.throughput import ingest_run
from services.common.config import Env
from services.ingest_iot.config import IngestConfig

SERVICE = "ingest_iot"


def profile(messages: int, runs: int) -> tuple[pstats.Stats, Path]:
    stack = Stack(profiled=(SERVICE,))
    try:
        stack.start()
        assert stack.nats is not None
        epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        jetstream.publish(stack.nats.url, jetstream.readings(messages, 1000, epoch))
        config = IngestConfig.from_env(Env(stack.env))
        consumer = jetstream.ConsumerSettings(config.durable, config.ack_wait,
                                              config.max_ack_pending)
        for number in range(runs):
            result = ingest_run(stack, consumer, "profiled", messages)
            stderr_log(f"run {number + 1}/{runs}: {result.rate:,.0f} msg/s under cProfile")
        stack.services[SERVICE].stop()
        kept = Path(shutil.copy(stack.profile_path(SERVICE), Path.cwd() / f"{SERVICE}.prof"))
        return pstats.Stats(str(kept)), kept
    finally:
        stack.stop()
        stack.remove()


# Where a function's own time is filed, first match wins (path fragments).
AREAS = (
    ("messaging/lean", "lean pull loop (services/common/messaging/lean.py)"),
    ("messaging/__init__", "DirectClient, NATS link (services/common/messaging/__init__.py)"),
    ("/nats/", "NATS client (nats-py)"),
    ("/asyncpg/", "PostgreSQL client (asyncpg)"),
    ("ingest_iot/telemetry", "validation (services/ingest_iot/telemetry.py)"),
    ("/json/", "json (stdlib, called by validation and the NATS client)"),
    ("uuid", "uuid (stdlib, nats-py's next_msg: the fetch path only)"),
    ("asyncio", "asyncio machinery (tasks, queues, wait_for)"),
    ("/services/", "services code (pipeline, store, health kit)"),
    ("~", "C built-ins (regex, len, urandom, socket calls, ...)"),
)


def by_area(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time per area, largest first."""
    totals: dict[str, float] = {}
    for (path, _line, _function), (_calls, _primitive, own, _cumulative, _callers) in \
            stats.stats.items():  # type: ignore[attr-defined]
        area = next((name for fragment, name in AREAS if fragment in path), "other")
        totals[area] = totals.get(area, 0.0) + own
    return sorted(totals.items(), key=lambda item: -item[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.bench.profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--keep", action="store_true", help="keep ingest_iot.prof here")
    args = parser.parse_args(argv)
    stats, path = profile(args.messages, args.runs)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]  # pstats prints to .stream
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    areas = by_area(stats)
    total = sum(seconds for _area, seconds in areas)
    print("own time by area:")
    for area, seconds in areas:
        print(f"  {seconds / total * 100:5.1f} %  {seconds:7.2f} s  {area}")
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
