"""The tables of a run, as Markdown: printed by the harness and written to
docs/benchmarks.md (with the run's context and how each figure was measured)."""

from __future__ import annotations

from collections.abc import Sequence

from iot_tools.bench.charts import FAULTS, LATENCY, THROUGHPUT
from iot_tools.bench.cpu import HARNESS
from iot_tools.bench.labels import (
    BARE_LABEL,
    CEILING,
    COMMIT_ONLY,
    FETCH_CEILING,
    IDLE,
    INGEST,
    INGEST_FETCH,
    INGEST_PROBED,
    LOAD,
    ONE_INSERT,
    VALIDATION_ONLY,
)
from iot_tools.bench.machine import LOGICAL_CPUS
from iot_tools.bench.method import method
from iot_tools.bench.results import Results
from iot_tools.bench.stats import median
from iot_tools.bench.targets import evaluate
from iot_tools.services import SERVICES


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def targets_table(results: Results) -> str:
    return table(("target", "figure", "limit", "verdict"),
                 [(v.target, v.figure, v.limit, "**met**" if v.met else "**MISSED**")
                  for v in evaluate(results)])


def latency_table(results: Results) -> str:
    bare = {condition: results.latency_of(condition, BARE_LABEL) for condition in (IDLE, LOAD)}
    rows = []
    for label in results.latency[IDLE]:
        cells: list[object] = [label.replace(BARE_LABEL, f"{BARE_LABEL} (baseline)")]
        for condition in (IDLE, LOAD):
            figure = results.latency_of(condition, label)
            failures = results.latency_failures.get(condition, {}).get(label, 0)
            cells += [f"{figure.p50_ms:.2f}", f"{figure.p99_ms:.2f}",
                      f"{figure.p99_ms / bare[condition].p99_ms:.1f}x",
                      f"{figure.samples}" + (f" ({failures} unanswered)" if failures else "")]
        rows.append(cells)
    return table(("endpoint", "idle p50 ms", "idle p99 ms", "p99 ÷ bare", "samples",
                  "load p50 ms", "load p99 ms", "p99 ÷ bare", "samples"), rows)


def latency_note(results: Results) -> str:
    validation_ms = results.batch_size / results.rate(VALIDATION_ONLY) * 1000
    return ("Under load every process shares the cores with ingest at full speed, so the "
            "baseline's tail rises too. `/ready` is answered on the probe server's own thread "
            "(`services.common.probe_server`) from the answer the service's event loop last "
            "rendered: it waits for a core and for the GIL, never for that loop, which "
            f"meanwhile validates a batch of {results.batch_size} messages ({validation_ms:.1f} "
            "ms of work) in slices of 100 and handles each pull request's messages in "
            "callbacks of a few microseconds. `/health` and `/metrics` are answered by the "
            "service's loop itself (a liveness answer is the proof that the loop turns), so "
            "they wait for it. No answer does I/O: `/ready` and `/health` are precomputed or "
            "read from memory, `/metrics` (a Prometheus scrape) renders a few dozen series "
            "from memory on each request.")


def throughput_table(results: Results) -> str:
    ingest = results.rate(INGEST)
    rows = []
    for variant, runs in results.throughput.items():
        rate = results.rate(variant)
        rows.append((variant, f"{rate:,.0f}", f"{rate / ingest:.2f}",
                     ", ".join(f"{run.rate:,.0f}" for run in runs),
                     f"{runs[0].messages:,}"))
    return table(("variant", "median msg/s", "÷ ingest_iot", "every run (msg/s)",
                  "messages per run"), rows)


def _seconds(values: Sequence[float | None]) -> tuple[str, str]:
    if any(value is None for value in values):
        return "—", "never"
    present = [value for value in values if value is not None]
    return f"{median(present):.2f}", f"{max(present):.2f}"


def faults_table(results: Results) -> str:
    rows = []
    for fault, timings in results.faults.items():
        start = median(timings.dependency_start)
        for name in timings.detection:
            rows.append((fault, name, *_seconds(timings.detection[name]),
                         *_seconds(timings.recovery[name]),
                         f"{start:.2f}" if start else "— (SIGCONT)",
                         len(timings.detection[name])))
    return table(("fault", "service", "detection median s", "max s", "recovery median s",
                  "max s", "dependency start-up s (median)", "repeats"), rows)


def memory_table(results: Results) -> str:
    idle, load = results.rss["idle"], results.rss["under load"]
    return table(("service", "idle RSS MB", "idle peak MB", "peak under load MB"),
                 [(name, f"{idle[name].current_mb:.0f}", f"{idle[name].peak_mb:.0f}",
                   f"{load[name].peak_mb:.0f}") for name in idle])


def chart_table(results: Results) -> str:
    rows = []
    for major in sorted({timing.helm for timing in results.chart}):
        runs = [timing for timing in results.chart if timing.helm == major]
        rows.append((f"Helm {major}", f"{median([t.wall_s for t in runs]):.2f}",
                     f"{median([t.template_s for t in runs]):.3f}",
                     f"{median([t.parse_s for t in runs]):.3f}",
                     f"{median([t.validate_s for t in runs]):.3f}",
                     f"{runs[0].objects} x {runs[0].kube_versions}", len(runs)))
    return table(("render", "wall s (fresh process)", "helm template s", "YAML parse s",
                  "strict validation s", "objects x Kubernetes versions", "repeats"), rows)


def _cores(results: Results, variant: str) -> dict[str, float]:
    runs = results.throughput[variant]
    return {name: median([run.cores[name] for run in runs]) for name in runs[0].cores}


def _bound(results: Results, cores: dict[str, float], cpus: int) -> str:
    """What the CPU figures say limits ingest (judged on this run's figures)."""
    loop = cores[INGEST]
    ceiling_ms = results.batch_size / results.rate(CEILING) * 1000
    ingest_ms = results.batch_size / results.rate(INGEST) * 1000
    if loop >= 0.7:
        return (f"ingest is bound mostly by its own event loop, busy {loop * 100:.0f} % of the "
                "time: receiving and acking (which alone, in the lean ceiling consumer, takes "
                f"{ceiling_ms:.1f} of these {ingest_ms:.1f} ms per batch), validation, and "
                "building the batch's JSON document; the commit itself overlaps the next "
                "batch's validation. PostgreSQL is not the limit")
    if cores["machine"] >= 0.9 * cpus:
        return (f"the machine's {cpus} cores are saturated ({cores['machine']:.2f} busy): "
                "ingest competes with NATS and PostgreSQL for CPU")
    return (f"neither ingest_iot's loop ({loop * 100:.0f} % busy) nor the machine is "
            "saturated: ingest waits on round trips to JetStream and PostgreSQL")


def probe_cost(results: Results) -> str:
    splits, controls = results.splits(INGEST_PROBED), results.splits(INGEST)
    share, control = results.probing_ratio(), results.probing_ratio(INGEST)
    cost = results.probe_cpu
    services = sum(cost[name] for name in SERVICES)
    attributed = services + cost[HARNESS] + cost["nats-server"] + cost["postgresql"]
    loop = _cores(results, INGEST)[INGEST]
    s = results.settings
    return f"""\
- Probe traffic ({results.probe_rate:.1f} probes/s, {s['probe_factor']:g}x the kubelet's \
rate) switched on and off every {s['probe_block']:g} s within each run: rate while on ÷ rate \
while off, all windows pooled, {share:.3f}: a cost of {(1 - share) * 100:+.1f} % \
({sum(x.on_seconds for x in splits):.1f} s on, {sum(x.off_seconds for x in splits):.1f} s off; \
per run {", ".join(f"{split.ratio:.3f}" for split in splits)}). Control: the runs without any \
probe traffic, their rows split into the same alternating windows, give {control:.3f} (per run \
{", ".join(f"{split.ratio:.3f}" for split in controls)}): the noise of this measurement. \
The same traffic, measured on \
the idle stack, costs {attributed * 1000:.1f} ms of CPU per second ({attributed * 100:.2f} % \
of one core): the prober, i.e. the kubelet's side with pg_isready, {cost[HARNESS] * 1000:.1f}; \
the five services {services * 1000:.1f}, of which ingest_iot {cost[INGEST] * 1000:.2f} \
({cost[INGEST] / loop * 100:.2f} % of its busy loop while ingesting); nats-server \
{cost['nats-server'] * 1000:.1f}; PostgreSQL {cost['postgresql'] * 1000:.1f} (every \
pg_isready and TCP probe is a new connection). Machine-wide busy time rose by \
{cost['machine'] * 1000:.1f} ms per second (kernel network work and anything else running)."""


def ratios(results: Results) -> str:
    ingest, batch = results.rate(INGEST), results.batch_size
    cores = _cores(results, INGEST)
    others = sum(value for name, value in cores.items()
                 if name not in {INGEST, "postgresql", "nats-server", "machine"})
    cpus = int(results.machine.get(LOGICAL_CPUS, "0") or 0)

    def per_batch(variant: str) -> float:
        return batch / results.rate(variant) * 1000

    loop = per_batch(CEILING) + per_batch(VALIDATION_ONLY)
    return f"""\
- Two ceilings: the *lean pull ceiling* is the pull loop ingest_iot uses \
(`services.common.messaging.lean`: pull requests on inboxes of their own, their messages handed \
from the client's parser straight to the loop by `DirectClient`, a batch's acks as one block \
of plain publishes) with nothing but an ack per message, the most one Python process \
moves from JetStream; the *nats-py fetch-and-ack ceiling* is nats-py's `fetch()` + \
`Msg.ack()`, the ceiling ingest_iot had before, kept as the reference for the client's own path \
({results.rate(CEILING) / results.rate(FETCH_CEILING):.1f}x apart in this run). ingest_iot \
moves {ingest / results.rate(CEILING) * 100:.0f} % of the lean ceiling and \
{ingest / results.rate(FETCH_CEILING) * 100:.0f} % of the nats-py one; \
{ingest / results.rate(INGEST_FETCH):.1f}x what the same service moves with nats-py's fetch \
(*{INGEST_FETCH}*, same pipelined writer, same run), and \
{ingest / results.rate(ONE_INSERT):.1f}x what a one-INSERT-per-message writer commits.
{probe_cost(results)}
- Where a batch of {batch} messages goes (median rates of this run): ingest_iot needs \
{per_batch(INGEST):.1f} ms for it end to end. Measured alone: fetching and acking it \
{per_batch(CEILING):.1f} ms (the lean ceiling consumer), validating it \
{per_batch(VALIDATION_ONLY):.1f} ms, committing it {per_batch(COMMIT_ONLY):.1f} ms (one \
statement: PostgreSQL plus building the batch's JSON document). Pulling, acking and \
validation run on \
ingest_iot's one event loop: {loop:.1f} ms, {loop / per_batch(INGEST) * 100:.0f} % of its time \
per batch; the commit runs in PostgreSQL while the writer validates the next batch and the \
batch before settles (its acks go out), and what is fetched while a commit runs joins the next \
commit, up to 4 batches (group commit).
- CPU while ingest_iot drains the stream (cores busy, median of its runs): ingest_iot \
{cores[INGEST]:.2f}, PostgreSQL {cores['postgresql']:.2f}, nats-server \
{cores['nats-server']:.2f}, the other four services {others:.2f}; the whole machine \
{cores['machine']:.2f} of {cpus}. So {_bound(results, cores, cpus)}. (The bench defines no \
alert rules: evaluator_iot answers each batch's notification with a query that finds no rule \
and reads no reading.)"""


def _chart(name: str, what: str, charts: bool) -> str:
    """A link to the chart written next to the document (the terminal gets none)."""
    return f"\n\n![{what}]({name})" if charts else ""


def tables(results: Results, *, charts: bool = False) -> str:
    return "\n\n".join([
        "### Targets\n\n" + targets_table(results),
        "### Probe latency (new TCP connection per probe, as the kubelet)\n\n"
        + latency_table(results) + "\n\n" + latency_note(results)
        + _chart(LATENCY, "probe latency idle and under load against the bare baseline",
                 charts),
        "### Ingest throughput (JetStream → committed rows, ack after commit)\n\n"
        + throughput_table(results)
        + _chart(THROUGHPUT, "ingest throughput per round, every variant", charts)
        + "\n\n" + ratios(results),
        "### Detection and recovery (/ready)\n\n" + faults_table(results)
        + _chart(FAULTS, "detection and recovery per fault", charts),
        "### Memory (resident set size)\n\n" + memory_table(results),
        "### The chart\n\n" + chart_table(results),
    ])


def document(results: Results) -> str:
    machine = table(("", ""), list(results.machine.items()))
    load = ", ".join(f"{value:.2f}" for value in results.load_average)
    others = ("none" if not results.others_running
              else "<br>".join(f"`{line[:110]}`" for line in results.others_running))
    return f"""# Benchmarks

Measured by `make bench` (`python -m iot_tools.bench`): the real stack on one machine —
PostgreSQL with its default durability (fsync on, synchronous commit), NATS with JetStream, the
five services as real processes — every comparison side by side in the same run. Reproduce
with `make bench` from a clone; figures vary with the machine and with anything else running.

| run | |
|---|---|
| command | `{results.command}` |
| date | {results.started_at} |
| duration | {results.duration_s / 60:.1f} min |
| load average at start (1, 5, 15 min) | {load} |
| other tests, services or servers at start (pid, CPU time so far, command) | {others} |

## Machine

{machine}

## Results

{tables(results, charts=True)}

## How each figure was measured

{method(results)}
"""
