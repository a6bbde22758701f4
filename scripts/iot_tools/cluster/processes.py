"""The cluster's processes outlive the `up` command: each is started in its own session with
its log in logs/, and recorded in run/<name>.json with its pid and start time, so that
`down` and `status` (other commands, later) find exactly the process they started, never a
later process that reused the pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None for a dead process or a
    zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return fields[19]


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    started: str
    log: Path

    @property
    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


def start(
    name: str, command: Sequence[str], run_dir: Path, log_dir: Path, *,
    env: dict[str, str] | None = None, cwd: Path | None = None,
) -> Process:
    log = log_dir / f"{name}.log"
    with log.open("ab") as output:
        # Own session: neither a Ctrl-C of `up` nor the end of the shell stops the cluster.
        child = subprocess.Popen(
            list(command), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd or log_dir,
        )
    started = _start_time(child.pid) or ""
    process = Process(name, child.pid, started, log)
    (run_dir / f"{name}.json").write_text(json.dumps(
        {"pid": process.pid, "started": started, "log": str(log), "command": list(command)}))
    return process


def recorded(run_dir: Path) -> dict[str, Process]:
    """Every process the run directory records, alive or not, by name."""
    found: dict[str, Process] = {}
    for path in sorted(run_dir.glob("*.json")) if run_dir.is_dir() else []:
        with_data = json.loads(path.read_text())
        found[path.stem] = Process(
            path.stem, with_data["pid"], with_data["started"], Path(with_data["log"]))
    return found


def stop(process: Process, run_dir: Path, timeout: float = 20) -> None:
    """SIGTERM the process's group, SIGKILL what is left after `timeout`; forget it."""
    if process.alive:
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.alive:
            _signal_group(process, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while process.alive and time.monotonic() < deadline:
                time.sleep(0.1)
    (run_dir / f"{process.name}.json").unlink(missing_ok=True)


def _signal_group(process: Process, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(process.pid, signum)


def log_tail(process: Process, lines: int = 25) -> str:
    try:
        text = process.log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
