"""Logging: one line per event, the service named, credentials never printed."""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit, urlunsplit


def setup_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # nats-py logs a traceback per failed reconnect attempt; the NATS link reports an outage
    # once per transition instead. Probe requests must not fill the access log.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    for noisy in ("asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class ProbePathFilter(logging.Filter):
    """Drops access-log records of probe requests: they arrive every few seconds, forever."""

    PROBE_PATHS = ("/health", "/ready")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(
            isinstance(arg, str) and arg.split("?", 1)[0] in self.PROBE_PATHS for arg in args
        )


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe_error(error: BaseException) -> str:
    """A short, safe description for health bodies: the exception type, never its text
    (driver messages can carry hostnames, user names or SQL)."""
    return type(error).__name__
