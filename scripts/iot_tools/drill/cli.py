"""`python -m iot_tools.drill`: the probe drill's command line (what `make demo` runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from iot_tools.drill.drill import DrillOptions, run_drill
from iot_tools.drill.faults import DEFAULT_FAULTS, parse_fault
from iot_tools.drill.render import RenderReadError
from iot_tools.drill.spec import UnsupportedProbe
from iot_tools.helm import HelmNotFound, HelmRenderError

EXIT_USAGE = 2

DESCRIPTION = """\
Render the chart with your values, start NATS (JetStream), PostgreSQL and the five Python
services as local processes configured the way the chart configures their pods, feed them
simulated device telemetry, and execute the rendered startup/liveness/readiness probes with
kubelet semantics while a scripted scenario injects faults: warm-up, NATS outage,
PostgreSQL outage, slow (frozen) database, one hung service, a poison storm, ingest's
consumer deleted. Prints a live table, then a timeline and a summary per fault; exits 0
only when every expectation held."""

EPILOG = """\
faults: nats-outage, postgres-outage, slow-database, hung-service[=<service>],
        poison-storm, consumer-deleted
        (default: all six, the hung service being ingest_iot)
exit status: 0 every expectation held; 1 an expectation failed; 2 bad usage or the chart
             did not render (e.g. a probe guard); 130 interrupted
example: python -m iot_tools.drill --values my-values.yaml \\
             --set ingest.probes.readiness.periodSeconds=5 --report demo-report.json"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m iot_tools.drill", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--values", action="append", default=[], metavar="FILE",
                   help="a values file for helm template (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   dest="set_values", help="a --set for helm template (repeatable)")
    p.add_argument("--helm", type=int, choices=(3, 4), default=3,
                   help="Helm major version to render with (default 3)")
    p.add_argument("--time-scale", type=float, default=0.2, metavar="FACTOR",
                   help="multiply every probe timing, the crash-loop back-off and every "
                        "scenario duration by FACTOR (default 0.2; 1 = real speed); grace "
                        "periods and the services' own timings stay real")
    p.add_argument("--faults", default=",".join(DEFAULT_FAULTS), metavar="LIST",
                   help="comma-separated faults to play, in order; empty: warm-up only")
    p.add_argument("--slow-start", action="append", default=[], metavar="SERVICE=SECONDS",
                   help="make SERVICE take SECONDS (values seconds, scaled) to open its "
                        "probe port, through its documented start-up test hook")
    p.add_argument("--warmup", type=float, default=20.0, metavar="SECONDS",
                   help="steady running once everything is Ready (values seconds; 20)")
    p.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                   help="how long a dependency stays away (values seconds; default: "
                        "max(60, liveness period × failureThreshold + period))")
    p.add_argument("--settle", type=float, default=20.0, metavar="SECONDS",
                   help="steady running after a recovery (values seconds; 20)")
    p.add_argument("--feed-rate", type=float, default=50.0, metavar="PER_SECOND",
                   help="simulated readings per second (default 50)")
    p.add_argument("--report", type=Path, default=None, metavar="PATH",
                   help="write the JSON report here")
    p.add_argument("--html", type=Path, default=None, metavar="PATH",
                   help="write the self-contained HTML timeline here (from the same data as "
                        "the JSON report)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="directory for the servers' data and the logs, kept afterwards "
                        "(default: a temp dir, removed unless the drill fails)")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the workdir (it is kept anyway when the drill fails)")
    p.add_argument("--plain", action="store_true",
                   help="plain periodic lines even on a terminal")
    return p


def _slow_starts(items: list[str]) -> dict[str, float]:
    starts: dict[str, float] = {}
    for item in items:
        service, separator, seconds = item.partition("=")
        if not separator:
            raise ValueError(f"--slow-start {item!r}: expected SERVICE=SECONDS")
        starts[service] = float(seconds)
    return starts


def options_from(args: argparse.Namespace) -> DrillOptions:
    faults = tuple(name.strip() for name in args.faults.split(",") if name.strip())
    for fault in faults:
        parse_fault(fault)  # fail on a typo before anything starts
    return DrillOptions(
        values_files=tuple(args.values), set_values=tuple(args.set_values),
        helm_major=args.helm, time_scale=args.time_scale, faults=faults,
        slow_start=_slow_starts(args.slow_start), warmup=args.warmup, hold=args.hold,
        settle=args.settle, feed_rate=args.feed_rate, report=args.report, html=args.html,
        workdir=args.workdir, keep_workdir=args.keep_workdir,
        tty=False if args.plain else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_drill(options_from(args))
    except HelmRenderError as error:
        print(f"probe drill: the chart did not render with these values:\n{error}",
              file=sys.stderr)
    except (HelmNotFound, RenderReadError, UnsupportedProbe, ValueError) as error:
        print(f"probe drill: {error}", file=sys.stderr)
    return EXIT_USAGE
