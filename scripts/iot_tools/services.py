"""The platform's Python services as real subprocesses, and HTTP probes against them."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iot_tools.servers import free_port

SERVICES = ("ingest_iot", "evaluator_iot", "ops_worker", "route_delivery", "ui_iot")
NATS_USERS = ("ingest_iot", "route_delivery")


@dataclass(frozen=True)
class Answer:
    """One HTTP GET: status None means no answer (refused, reset or timed out)."""

    status: int | None
    body: str
    seconds: float
    error: str = ""


def http_get(port: int, path: str, timeout: float = 2.0, host: str = "127.0.0.1") -> Answer:
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return Answer(response.status, body, time.monotonic() - started)
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, "", time.monotonic() - started, type(error).__name__)
    finally:
        connection.close()


def wait_until(
    condition: Callable[[], bool], timeout: float, interval: float = 0.05
) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


class ServiceProcess:
    """`python -m services.<name>` (or another `module`) with the given environment, stderr
    to a log file."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        port: int | None = None,
        python: str = sys.executable,
        module: str | None = None,
    ) -> None:
        self.name = name
        self.module = module or f"services.{name}"
        self.port = port or free_port()
        self.env = {**env, "HEALTH_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self._python = python
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        environment = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self._python, "-m", self.module],
                env=environment, stdout=log, stderr=log, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def get(self, path: str, timeout: float = 2.0) -> Answer:
        return http_get(self.port, path, timeout)

    def status(self, path: str, timeout: float = 2.0) -> int | None:
        return self.get(path, timeout).status

    def wait_status(self, path: str, status: int | None, timeout: float) -> float | None:
        """Seconds until `path` answers `status` (None: until it stops answering)."""
        return wait_until(lambda: self.status(path, timeout=1.0) == status, timeout)

    def wait_ready(self, timeout: float = 30.0) -> float:
        waited = self.wait_status("/ready", 200, timeout)
        if waited is None:
            raise AssertionError(
                f"{self.name} not ready within {timeout} s: {self.get('/ready').body}\n"
                f"--- log ---\n{self.log_text()[-3000:]}")
        return waited

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
