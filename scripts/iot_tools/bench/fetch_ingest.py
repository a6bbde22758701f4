"""ingest_iot as it was before the lean pull loop: the same service, the same pipelined
writer, its messages fetched by nats-py (`PullConsumer`: pull subscription, `Msg.ack()`).
The bench runs it beside the real service, on a durable of its own (INGEST_DURABLE), to
compare the two pull paths in the same run: `python -m iot_tools.bench.fetch_ingest`."""

from __future__ import annotations

from services.common.config import load
from services.common.messaging import PullConsumer
from services.common.runtime import run
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.main import NAME, IngestService


def main() -> int:
    config = load(NAME, IngestConfig.from_env)
    return run(NAME, config.runtime,
               lambda health: (IngestService(config, health, PullConsumer), None))


if __name__ == "__main__":
    raise SystemExit(main())
