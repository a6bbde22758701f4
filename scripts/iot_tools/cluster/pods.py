"""Small readers of pods as the API returns them, and the one deadline-bound wait the cluster
tests and the cluster drill share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeoutError(TimeoutError):
    """What a `wait_for` waited for did not happen in time (the message names it)."""


def wait_for(what: str, check: Callable[[], Any], timeout: float,
             interval: float = 0.5) -> Any:
    """Call `check` every `interval` seconds until it returns something true, and return
    that; WaitTimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise WaitTimeoutError(f"{what} did not happen within {timeout:.0f} s")


def is_ready(pod: dict) -> bool:
    """The pod's Ready condition is True (the kubelet's readiness verdict)."""
    return any(condition["type"] == "Ready" and condition["status"] == "True"
               for condition in pod.get("status", {}).get("conditions", []))


def restart_count(pod: dict) -> int:
    """Restarts of all the pod's containers together."""
    return sum(status.get("restartCount", 0)
               for status in pod.get("status", {}).get("containerStatuses", []))
