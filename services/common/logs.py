"""Logging: one line per event, the service named, credentials never printed.

Every record's final text (message, exception text, traceback, stack) passes through
`redact_text`, so a driver error or a repr that embeds a connection URL cannot leak its
password or token, whoever logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

UNPARSEABLE = "<unparseable url>"
MASK = "***"

# Query (and fragment) parameters whose values are credentials, compared case-insensitively
# after percent-decoding the name.
SECRET_PARAMETERS = frozenset({
    "password", "passwd", "pwd", "pass", "secret", "token", "access_token", "api_key",
    "apikey", "key", "sslpassword", "auth",
})

# Schemes whose userinfo without a password is a user name (libpq: postgresql://iot@db/iot).
# Everywhere else a lone userinfo is a credential: nats://TOKEN@host is NATS token auth, and
# https://TOKEN@host is how Git hosts and many APIs take a token.
_USERNAME_SCHEMES = frozenset({"postgresql", "postgres"})

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# A URL in free text: a scheme, then anything up to white space, a quote or bracket that
# delimits it in reprs and messages, or the start of the next URL (so that
# "a=postgresql://…,b=nats://tok@h" is two URLs, each redacted).
_URL_IN_TEXT = re.compile(rf"{_SCHEME}(?:(?!{_SCHEME})[^\s'\"<>`])*")


def setup_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(
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


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts every URL in the result. Working on the final text
    (rather than on record.msg/args) also covers exception text, tracebacks and stack
    info, which the base class appends."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class ProbePathFilter(logging.Filter):
    """Drops access-log records of probe and scrape requests: they arrive every few seconds,
    forever."""

    PROBE_PATHS = ("/health", "/ready", "/metrics")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(
            isinstance(arg, str) and arg.split("?", 1)[0] in self.PROBE_PATHS for arg in args
        )


def redact_url(url: str) -> str:
    """The URL with its credentials replaced by ***: the password of user:password@ (the
    user name stays), a bare token@ (except where the scheme makes it a user name, see
    _USERNAME_SCHEMES), and the values of query or fragment parameters named like secrets.
    A URL that cannot be parsed is replaced whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return UNPARSEABLE
    netloc = _redact_userinfo(parts.scheme.lower(), parts.netloc)
    query = _redact_parameters(parts.query)
    fragment = _redact_parameters(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url  # untouched: keep the exact text (urlunsplit normalises a little)
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """`text` with every URL-looking substring (scheme://…) passed through redact_url."""
    if "://" not in text:
        return text  # the common case, on every log record: no regex work
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def _redact_userinfo(scheme: str, netloc: str) -> str:
    # The last @ ends the userinfo: an unescaped @ in a password must not expose its tail.
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return netloc
    user, colon, _password = userinfo.partition(":")
    if colon:
        return f"{user}:{MASK}@{host}" if user else f"{MASK}@{host}"
    if scheme in _USERNAME_SCHEMES:
        return netloc
    return f"{MASK}@{host}"


def _redact_parameters(query: str) -> str:
    if "=" not in query:
        return query
    # Rebuilt from the original pieces, not re-encoded: only secret values change.
    pieces = re.split(r"([&;])", query)
    for index in range(0, len(pieces), 2):
        name, equals, _value = pieces[index].partition("=")
        if equals and unquote(name).strip().lower() in SECRET_PARAMETERS:
            pieces[index] = f"{name}={MASK}"
    return "".join(pieces)


def describe_error(error: BaseException) -> str:
    """A short, safe description for health bodies: the exception type, never its text
    (driver messages can carry hostnames, user names or SQL)."""
    return type(error).__name__
