"""The benchmark harness (`make bench`, `python -m iot_tools.bench --help`).

Modules, one concern each:
  settings     how much a full run and a --quick run measure
  labels       the names figures are filed under
  stack        the real stack: durable PostgreSQL, NATS JetStream, five services, baseline
  bare_server  the latency baseline: a bare aiohttp handler returning 200
  background   work on a thread for the span of a `with` block
  latency      probe latency as the kubelet sees it (new connection per probe)
  prober       probe traffic at a multiple of the chart's default kubelet rate
  jetstream    readings published once, replayed through a recreated durable consumer
  throughput   ingest runs, reference runs and component runs; rates from committed rows
  consumers    the reference consumers: lean and nats-py ceilings, one-INSERT writer
  fetch_ingest ingest_iot on nats-py's fetch path, the comparison run beside the service
  cpu          CPU time of process trees and of the machine, from /proc
  faults       detection and recovery of NATS killed / frozen and PostgreSQL killed
  memory       resident set size and its peak, from /proc
  chart, chart_check  helm template + strict validation, timed in fresh processes
  machine      what the machine is, read from itself
  results      the raw figures and the summary figures derived from them
  targets      the issue's targets, judged
  report, method  the Markdown tables and docs/benchmarks.md
  run, cli     the phases in order; `python -m iot_tools.bench`
  profile, profiled  `python -m iot_tools.bench.profile`: ingest_iot under cProfile
"""
