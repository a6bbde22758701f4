"""Resident memory of a process, from /proc: current (VmRSS) and peak so far (VmHWM, the
kernel's high-water mark, so no peak between two samples is missed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rss:
    current_mb: float  # MB = 10^6 bytes, the unit of the target
    peak_mb: float


def rss(pid: int) -> Rss:
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                fields[key] = int(value.split()[0]) * 1024 / 1e6  # the kernel's "kB" is KiB
    return Rss(fields["VmRSS"], fields["VmHWM"])
