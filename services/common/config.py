"""Environment parsing: read once at start-up, fail fast with the variable's name.

A bad or missing setting ends the process with exit status 2 and one line on stderr that
names the variable and says what is expected. Values of URL settings are never echoed:
they may carry credentials.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

CONFIG_ERROR_EXIT = 2

T = TypeVar("T")


class ConfigError(Exception):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class Env:
    """Typed access to environment variables, each error naming its variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str | None = None) -> str:
        value = self._raw(name)
        if value is None:
            if default is None:
                raise ConfigError(name, "is required but not set")
            return default
        return value

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value, 10)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {value!r}") from None
        _check_range(name, number, minimum, maximum)
        return number

    def seconds(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"must be a number of seconds, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(name, f"must be a finite number of seconds, got {value!r}")
        _check_range(name, number, minimum, maximum)
        return number

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices`, matched case-insensitively, returned as spelled in `choices`."""
        value = self.text(name, default)
        for candidate in choices:
            if candidate.lower() == value.lower():
                return candidate
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")

    def optional(self, name: str) -> str | None:
        """The value, or None when unset or blank."""
        return self._raw(name)

    def secret(self, name: str) -> str | None:
        """A credential exactly as given (no stripping: spaces may be part of it), None when
        unset or empty. Never echoed in errors."""
        value = self._environ.get(name)
        return value if value else None

    def readable_file(self, name: str) -> str | None:
        """A path that must name a readable file (checked now, not at first use)."""
        path = self._raw(name)
        if path is None:
            return None
        if not os.path.isfile(path):
            raise ConfigError(name, f"names no file: {path}")
        if not os.access(path, os.R_OK):
            raise ConfigError(name, f"names a file this process cannot read: {path}")
        return path

    def url(self, name: str, schemes: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(name, default)
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            raise ConfigError(name, "is not a valid URL") from None
        if parts.scheme not in schemes:
            expected = " or ".join(f"{scheme}://" for scheme in schemes)
            raise ConfigError(name, f"must be a {expected} URL (got scheme {parts.scheme!r})")
        if not parts.hostname:
            raise ConfigError(name, "must name a host")
        return value


def _check_range(
    name: str, number: float, minimum: float | None, maximum: float | None
) -> None:
    if minimum is not None and number < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {number}")


def exit_on_config_error(program: str, error: ConfigError) -> NoReturn:
    print(f"{program}: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR_EXIT)


def load(program: str, parse: Callable[[Env], T], environ: Mapping[str, str] | None = None) -> T:
    """Parse the configuration or exit with status 2 naming the bad variable."""
    try:
        return parse(Env(environ))
    except ConfigError as error:
        exit_on_config_error(program, error)


@dataclass(frozen=True)
class RuntimeSettings:
    """Settings every service shares: the health server, the drain, the watchdog."""

    health_port: int
    drain_delay: float
    shutdown_timeout: float
    log_level: str
    stall_threshold: float
    # A worker holding work with no progress this long, dependencies healthy: liveness fails.
    # Above every bounded await a worker makes (commit timeout 60 s).
    worker_stall_threshold: float
    readiness_tick: float
    # Test hooks (off in production): SIGUSR1 blocks the event loop for test_block_seconds;
    # SIGUSR2 makes every worker's next unit of work wait forever; start-up sleeps
    # test_startup_delay before the probe port opens.
    test_hooks: bool
    test_block_seconds: float
    test_startup_delay: float

    @classmethod
    def from_env(cls, env: Env) -> RuntimeSettings:
        return cls(
            health_port=env.integer("HEALTH_PORT", 8080, minimum=1, maximum=65535),
            drain_delay=env.seconds("DRAIN_DELAY_SECONDS", 5.0, maximum=300),
            shutdown_timeout=env.seconds(
                "SHUTDOWN_TIMEOUT_SECONDS", 15.0, minimum=1, maximum=600
            ),
            log_level=env.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            stall_threshold=env.seconds("LIVENESS_STALL_SECONDS", 10.0, minimum=0.5),
            worker_stall_threshold=env.seconds("WORKER_STALL_SECONDS", 120.0, minimum=1,
                                               maximum=3600),
            readiness_tick=env.seconds("READINESS_TICK_SECONDS", 0.2, minimum=0.01, maximum=5),
            test_hooks=env.flag("IOT_TEST_HOOKS", False),
            test_block_seconds=env.seconds("IOT_TEST_BLOCK_SECONDS", 3600.0),
            test_startup_delay=env.seconds("IOT_TEST_STARTUP_DELAY_SECONDS", 0.0),
        )


# libpq's sslmode values; asyncpg reads PGSSLMODE and PGSSLROOTCERT itself, as libpq does.
# Dot-separated subject tokens, no wildcards or spaces: the client appends `.<id>` to it.
INBOX_PREFIX = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    check_interval: float
    check_timeout: float
    # Validated here so a typo fails at start naming the variable; asyncpg applies both from
    # the environment (a sslmode in DATABASE_URL's query wins over PGSSLMODE).
    sslmode: str | None = None
    sslrootcert: str | None = None

    @classmethod
    def from_env(cls, env: Env) -> DatabaseSettings:
        interval = env.seconds("DB_CHECK_INTERVAL_SECONDS", 1.0, minimum=0.05, maximum=60)
        timeout = env.seconds("DB_CHECK_TIMEOUT_SECONDS", 1.0, minimum=0.05, maximum=2.5)
        sslmode = env.optional("PGSSLMODE")
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ConfigError("PGSSLMODE",
                              f"must be one of {', '.join(SSL_MODES)}, got {sslmode!r}")
        return cls(
            url=env.url("DATABASE_URL", ("postgresql", "postgres")),
            check_interval=interval,
            check_timeout=timeout,
            sslmode=sslmode,
            sslrootcert=env.readable_file("PGSSLROOTCERT"),
        )


@dataclass(frozen=True)
class NatsSettings:
    """Where NATS is and how to log in: NATS_URL; NATS_USER and NATS_PASSWORD (from a Secret,
    never in the URL in a deployment); NATS_TLS_CA_FILE, the CA the server's certificate is
    checked against (TLS itself follows the server, or a tls:// URL); NATS_INBOX_PREFIX, the
    prefix of the client's reply subjects (a user whose subscribe permission is only its own
    `_INBOX.<user>.>` cannot read another user's replies)."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    inbox_prefix: str = "_INBOX"

    @classmethod
    def from_env(cls, env: Env) -> NatsSettings:
        url = env.url("NATS_URL", ("nats", "tls"))
        user = env.optional("NATS_USER")
        password = env.secret("NATS_PASSWORD")
        if user is not None and password is None:
            raise ConfigError("NATS_PASSWORD", "is required when NATS_USER is set")
        if password is not None and user is None:
            raise ConfigError("NATS_USER", "is required when NATS_PASSWORD is set")
        if user is not None and urlsplit(url).username is not None:
            raise ConfigError("NATS_URL", "carries credentials while NATS_USER is set: use one")
        inbox_prefix = env.text("NATS_INBOX_PREFIX", "_INBOX")
        if not INBOX_PREFIX.fullmatch(inbox_prefix):
            raise ConfigError("NATS_INBOX_PREFIX", "must be subject tokens without wildcards "
                              f"(e.g. _INBOX.ingest), got {inbox_prefix!r}")
        return cls(url=url, user=user, password=password,
                   tls_ca_file=env.readable_file("NATS_TLS_CA_FILE"),
                   inbox_prefix=inbox_prefix)
