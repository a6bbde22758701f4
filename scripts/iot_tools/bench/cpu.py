"""CPU time from /proc: of a process tree (a service, nats-server, or PostgreSQL's
postmaster with its backends) and of the whole machine, to show what bounds a run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, CPU ticks: utime + stime + what it reaped from ended children,
    cutime + cstime, so exited backends still count)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2:].split()  # from field 3 (state) on
        found[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return found


def _tree_ticks(root: int, processes: dict[int, tuple[int, int]]) -> int:
    """Ticks of a process and all its descendants (PostgreSQL's backends call setsid(), so
    the process tree, not the process group, is what belongs to the server)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _ticks) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += processes.get(pid, (0, 0))[1]
        pending.extend(children.get(pid, []))
    return total


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle, iowait = values[3], values[4]
    return sum(values[:8]) - idle - iowait


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    groups: dict[str, int]
    machine: int


HARNESS = "harness"


def snapshot(roots: dict[str, int], *, harness: bool = False) -> CpuSnapshot:
    """`roots`: name → pid of the process whose tree is counted under that name. `harness`:
    also this process alone (its threads, and the children it has reaped), under HARNESS."""
    processes = _processes()
    groups = {name: _tree_ticks(pid, processes) for name, pid in roots.items()}
    if harness:
        groups[HARNESS] = processes[os.getpid()][1]
    return CpuSnapshot(time.monotonic(), groups, _machine_busy_ticks())


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Cores each tree kept busy between two snapshots (1.0 = one core all the time), and
    "machine" for everything together."""
    wall = after.at - before.at
    used = {name: (after.groups[name] - before.groups[name]) / TICKS / wall
            for name in before.groups}
    used["machine"] = (after.machine - before.machine) / TICKS / wall
    return used
