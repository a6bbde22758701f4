"""`python -m iot_tools.bench`: run the benchmarks, print the tables, write the report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from iot_tools.bench.charts import write_charts
from iot_tools.bench.report import document, tables
from iot_tools.bench.results import Results
from iot_tools.bench.run import run, stderr_log
from iot_tools.bench.settings import FULL, QUICK
from iot_tools.helm import REPO_ROOT

DOC = REPO_ROOT / "docs" / "benchmarks.md"

DESCRIPTION = """\
Starts the real stack (durable PostgreSQL, NATS JetStream, the five services) and measures
probe latency idle and under full ingest load against a bare aiohttp baseline, ingest
throughput with and without probe traffic against the same service on nats-py's fetch, a
one-INSERT writer and two ceilings (the lean pull loop acking only, nats-py's fetch-and-ack),
detection and recovery of dependency faults, memory, and the chart's
render-plus-validation time. Prints the tables with every target marked met or missed."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.bench", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: every phase once, small volumes (about a minute); "
                             "writes no docs unless --doc is given")
    parser.add_argument("--doc", type=Path, default=None,
                        help="Markdown report to write (default: docs/benchmarks.md for a "
                             "full run, none for --quick)")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench-results.json",
                        help="raw figures (default: %(default)s)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="JSON",
                        help="measure nothing: render the tables (and --doc) from the raw "
                             "figures of an earlier run")
    args = parser.parse_args(argv)
    if args.from_json:
        results = Results.read_json(args.from_json)
    else:
        arguments = sys.argv[1:] if argv is None else argv
        command = " ".join(["python -m iot_tools.bench", *map(shlex.quote, arguments)])
        results = run(QUICK if args.quick else FULL, command, stderr_log)
        results.write_json(args.json)
    print(tables(results))
    doc = args.doc or (None if args.quick or args.from_json else DOC)
    if doc is not None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(document(results))
        # The charts the document links to, beside it (relative links).
        write_charts(results, doc.parent)
        stderr_log(f"wrote {doc} and its charts")
    return 0
