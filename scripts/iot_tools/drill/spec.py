"""Probe specs as Kubernetes reads them from a container, with the API server's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProbeKind = Literal["startup", "liveness", "readiness"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("startup", "liveness", "readiness")
MANIFEST_FIELD: dict[ProbeKind, str] = {
    "startup": "startupProbe", "liveness": "livenessProbe", "readiness": "readinessProbe",
}


class UnsupportedProbe(ValueError):  # noqa: N818 - reads as what it is: a probe we cannot run
    """A probe the drill cannot execute faithfully (grpc, HTTPS, custom host or headers)."""


@dataclass(frozen=True)
class HttpGet:
    path: str
    port: int | str

    def describe(self) -> str:
        return f"GET {self.path} :{self.port}"


@dataclass(frozen=True)
class TcpSocket:
    port: int | str

    def describe(self) -> str:
        return f"TCP :{self.port}"


@dataclass(frozen=True)
class Exec:
    command: tuple[str, ...]

    def describe(self) -> str:
        return "exec " + " ".join(self.command)


Handler = HttpGet | TcpSocket | Exec


@dataclass(frozen=True)
class ProbeSpec:
    """One probe; the defaults are Kubernetes' for fields the manifest omits."""

    kind: ProbeKind
    handler: Handler
    initial_delay: float = 0
    period: float = 10
    timeout: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    # Liveness/startup only: overrides the pod's grace period for restarts this probe causes.
    termination_grace: float | None = None

    @classmethod
    def from_manifest(cls, kind: ProbeKind, probe: dict) -> ProbeSpec:
        return cls(
            kind=kind,
            handler=_handler(kind, probe),
            initial_delay=probe.get("initialDelaySeconds", 0),
            period=probe.get("periodSeconds", 10),
            timeout=probe.get("timeoutSeconds", 1),
            success_threshold=probe.get("successThreshold", 1),
            failure_threshold=probe.get("failureThreshold", 3),
            termination_grace=probe.get("terminationGracePeriodSeconds"),
        )

    @property
    def failing_for(self) -> float:
        """Seconds of consecutive failures that flip this probe: period x failureThreshold."""
        return self.period * self.failure_threshold

    def describe(self) -> str:
        return (f"{self.handler.describe()} delay {self.initial_delay:g}s every "
                f"{self.period:g}s timeout {self.timeout:g}s "
                f"success {self.success_threshold} failure {self.failure_threshold}")


def _handler(kind: ProbeKind, probe: dict) -> Handler:
    if "httpGet" in probe:
        action = probe["httpGet"]
        if action.get("scheme", "HTTP").upper() != "HTTP":
            raise UnsupportedProbe(f"{kind} probe: only scheme HTTP is supported")
        if action.get("host") or action.get("httpHeaders"):
            raise UnsupportedProbe(f"{kind} probe: httpGet host and httpHeaders are not supported")
        return HttpGet(path=action.get("path", "/"), port=action["port"])
    if "tcpSocket" in probe:
        if probe["tcpSocket"].get("host"):
            raise UnsupportedProbe(f"{kind} probe: tcpSocket host is not supported")
        return TcpSocket(port=probe["tcpSocket"]["port"])
    if "exec" in probe:
        return Exec(command=tuple(probe["exec"]["command"]))
    raise UnsupportedProbe(f"{kind} probe: handler {sorted(probe)} is not supported "
                           "(httpGet, tcpSocket and exec are)")


def probes_of(container: dict) -> dict[ProbeKind, ProbeSpec]:
    """The container's probes by kind; a probe the manifest omits is absent."""
    return {kind: ProbeSpec.from_manifest(kind, container[field])
            for kind, field in MANIFEST_FIELD.items() if field in container}
