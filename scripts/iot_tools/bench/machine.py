"""What the figures were measured on, read from the machine itself."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from iot_tools.servers import _executable, _postgres_bin

LOGICAL_CPUS = "logical CPUs"


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":" if ":" in line else "=")
            if name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except OSError:
        return "unknown"


def _filesystem(path: Path) -> str:
    """Type and device of the filesystem holding `path` (where the databases write)."""
    result = _version(["df", "--output=fstype,source", str(path)])
    lines = result.splitlines()
    return " on ".join(lines[-1].split()) if len(lines) > 1 else "unknown"


def describe(workdir: Path) -> dict[str, str]:
    memory_kb = int(_first("/proc/meminfo", "MemTotal").split()[0])
    return {
        "CPU": _first("/proc/cpuinfo", "model name"),
        LOGICAL_CPUS: str(os.cpu_count()),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "OS": f"{_first('/etc/os-release', 'PRETTY_NAME')}, kernel {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "nats-server": _version([str(_executable("nats-server")), "--version"]),
        "PostgreSQL": _version([str(_postgres_bin() / "postgres"), "--version"]),
        "filesystem of the data": _filesystem(workdir),
    }
