"""The probe drill's faults on the real cluster, measured through the API, and compared
with what the drill's kubelet model predicts for the same rendered values.

Same values: the chart on the local images (values-local.yaml) with DRILL_SETS (small probe
periods so a run takes minutes; the hang hook on in ingest's env, as the drill adds it).
Same faults, injected from the host (we are root on the node):

- nats-outage: nats-server SIGKILLed through its container's host PID (its connections close
  at once, as the drill's SIGKILL), and in the same instant its StatefulSet scaled to 0 so the
  kubelet does not restart it; after the hold scaled back to 1: a new pod on the same claim,
  i.e. restarted on its JetStream store. Scaling to 0 alone would not match: the pod's
  deletion runs the preStop lame-duck hook and a graceful stop (clients drained over
  seconds), and a SIGKILL alone would be undone by the kubelet's restart at once.
- postgres-outage: the postmaster sent SIGINT (PostgreSQL's fast shutdown, as the drill's
  `pg_ctl stop -m fast`), the StatefulSet scaled to 0 likewise, back to 1 after the hold.
- hung-service: SIGUSR1 to one ingest pod's python process (the services' test hook blocks
  the event loop); nothing is undone: the kubelet's liveness probe must restart it.

Observed: every pod's Ready condition, restart count and the kubelet's Killing events,
through two API watches (a change is seen within milliseconds of the kubelet's status write;
the conditions' lastTransitionTime has only 1 s resolution and is kept beside it).
Predicted: the drill's own Limits for the render (iot_tools.drill.limits) — no bound is
re-derived here.

`python -m iot_tools.cluster.drill run --dir .cluster` plays it on a running cluster;
`... compare --drill-report demo-report.json` adds a local drill run's observations to the
comparison (test-artifacts/cluster-drill.json) and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from iot_tools import helm
from iot_tools.cluster.clients import ClientsPod
from iot_tools.cluster.pods import WaitTimeoutError, is_ready, restart_count, wait_for
from iot_tools.cluster.runtime import Cluster
from iot_tools.drill.limits import Limits
from iot_tools.drill.render import read_render
from iot_tools.drill.timescale import TimeScale

LOCAL_VALUES = helm.REPO_ROOT / "scripts" / "iot_tools" / "images" / "values-local.yaml"
ARTIFACT = helm.REPO_ROOT / "test-artifacts" / "cluster-drill.json"
RELEASE = "iot"
FAULTS = ("nats-outage", "postgres-outage", "hung-service")
HANG_TARGET = "ingest_iot"
# The drill's values, on the cluster and in `make demo` alike: the services' probes a few
# seconds apart (liveness 3 s x 3 = 9 s >= readiness 2 s x 2 = 4 s, the chart's guard); NATS
# and PostgreSQL probed as often, so a dependency is back in its Service soon after it
# starts; Keycloak (not in the drill) keeps its slow-start budget and its default
# liveness/readiness periods; the hang hook on in ingest's env (the drill adds exactly this).
DRILL_SETS: tuple[str, ...] = (
    "emqx.enabled=false",
    "ingest.env.IOT_TEST_HOOKS=true",
    "probes.startup.initialDelaySeconds=1", "probes.startup.periodSeconds=2",
    "probes.startup.timeoutSeconds=1", "probes.startup.failureThreshold=30",
    "probes.readiness.initialDelaySeconds=1", "probes.readiness.periodSeconds=2",
    "probes.readiness.timeoutSeconds=1", "probes.readiness.failureThreshold=2",
    "probes.liveness.initialDelaySeconds=1", "probes.liveness.periodSeconds=3",
    "probes.liveness.timeoutSeconds=2", "probes.liveness.failureThreshold=3",
    "postgresql.probes.startup.periodSeconds=3", "postgresql.probes.startup.timeoutSeconds=2",
    "postgresql.probes.startup.failureThreshold=30",
    "postgresql.probes.readiness.periodSeconds=3",
    "postgresql.probes.readiness.timeoutSeconds=2",
    "keycloak.probes.startup.periodSeconds=5", "keycloak.probes.startup.failureThreshold=60",
    "keycloak.probes.liveness.initialDelaySeconds=10", "keycloak.probes.liveness.periodSeconds=30",
    "keycloak.probes.liveness.timeoutSeconds=5", "keycloak.probes.readiness.periodSeconds=10",
    "keycloak.probes.readiness.timeoutSeconds=3",
)
# How long a dependency stays away (values seconds), in both runs: longer than the liveness
# probes' 9 s + one period, so "no restarts" means something (the drill's own rule), and
# shorter than the drill's 60 s default to keep the cluster test within minutes.
HOLD_SECONDS = 20.0
# Steady running after everything is Ready again, before the next fault.
SETTLE_SECONDS = 5.0

# Tolerances added to the model's bounds when comparing with the kubelet (seconds):
# - the watch sees a status change within ~0.1 s of the kubelet's write, and the kubelet
#   writes a readiness change at once (status manager), but on 2 busy cores either can lag;
# - the kubelet notices a container's exit by relisting every 1 s (PLEG) before restarting
#   it, and creating the new container takes a moment more.
STATUS_TOLERANCE = 2.0
RESTART_TOLERANCE = 5.0
# lastTransitionTime has 1 s resolution (RFC 3339 seconds).
API_TIME_RESOLUTION = 1.0

# The drill's service modules and the chart's component labels.
COMPONENTS = {"ingest_iot": "ingest", "evaluator_iot": "evaluator", "ops_worker": "ops-worker",
              "route_delivery": "route-delivery", "ui_iot": "ui-iot"}
SERVICE_OF = {component: service for service, component in COMPONENTS.items()}
# The dependency each outage takes away: (component, StatefulSet, signal, process name).
DEPENDENCIES = {
    "nats-outage": ("nats", f"{RELEASE}-nats", signal.SIGKILL, "nats-server"),
    "postgres-outage": ("postgresql", f"{RELEASE}-postgresql", signal.SIGINT, "postgres"),
}


class ClusterDrillError(RuntimeError):
    pass


def _now() -> float:
    return time.monotonic()


# How often the drill's waits look (seconds): it moves on soon after what it waits for.
POLL = 0.1


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """The drill's predictions for one render, at real speed (time scale 1)."""

    limits: Limits
    services: tuple[str, ...]
    nats_users: tuple[str, ...]
    database_users: tuple[str, ...]

    def affected(self, fault: str) -> tuple[str, ...]:
        if fault == "nats-outage":
            return self.nats_users
        if fault == "postgres-outage":
            return self.database_users
        return (HANG_TARGET,)

    def bounds(self, fault: str) -> dict[str, dict[str, Any]]:
        """Per affected service, what the drill's checks require (seconds)."""
        limits = self.limits
        found: dict[str, dict[str, Any]] = {}
        for service in self.affected(fault):
            if fault == "hung-service":
                lower, upper = limits.hang_restart_window(service)
                found[service] = {
                    "not_ready_within": limits.not_ready(service),
                    "restart_decided_between": [lower, upper],
                    "termination_within": limits.termination(service),
                    "ready_again_within": limits.started_and_ready(service),
                    "restarts": 1}
            else:
                found[service] = {"not_ready_within": limits.not_ready(service),
                                  "ready_again_within": limits.ready_again(service),
                                  "restarts": 0}
        return found


def model(values_files: Sequence[str | Path] = (LOCAL_VALUES,),
          set_values: Sequence[str] = DRILL_SETS, helm_major: int = 3) -> Model:
    rendered = read_render(tuple(values_files), tuple(set_values), helm_major)
    limits = Limits({p.service: p.probes for p in rendered.containers},
                    {p.service: p.termination_grace for p in rendered.containers}, TimeScale(1))
    return Model(limits, tuple(p.service for p in rendered.containers), rendered.nats_users,
                 rendered.database_users)


# --- watching ---------------------------------------------------------------------------------


def _ready_since(pod: dict) -> float | None:
    for condition in pod.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready" and condition.get("lastTransitionTime"):
            return _api_time(condition["lastTransitionTime"])
    return None


def _api_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Change:
    """One thing the watches saw: `t` monotonic seconds when seen, `wall` the same moment in
    epoch seconds, `api_time` what the API says (lastTransitionTime, 1 s resolution)."""

    t: float
    wall: float
    pod: str
    component: str
    kind: str  # created, ready, not_ready, restarted, deleted, event:<Reason>
    detail: str = ""
    api_time: float | None = None


@dataclass
class Recorder:
    """The pods of one release as the watches report them, and every change."""

    release: str
    changes: list[Change] = field(default_factory=list)
    pods: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, pod: str, component: str, kind: str, detail: str = "",
             api_time: float | None = None) -> None:
        self.changes.append(Change(_now(), time.time(), pod, component, kind, detail, api_time))

    def on_pod(self, kind: str, pod: dict) -> None:
        meta = pod["metadata"]
        labels = meta.get("labels", {})
        if labels.get("app.kubernetes.io/instance") != self.release:
            return
        name, component = meta["name"], labels.get("app.kubernetes.io/component", "")
        with self.lock:
            before = self.pods.get(name)
            if kind == "DELETED":
                if before is not None and before["metadata"]["uid"] == meta["uid"]:
                    del self.pods[name]
                    self._add(name, component, "deleted")
                return
            if before is None or before["metadata"]["uid"] != meta["uid"]:
                self._add(name, component, "created")
                before = None
            self.pods[name] = pod
            was_ready = before is not None and is_ready(before)
            if is_ready(pod) != was_ready and (before is not None or is_ready(pod)):
                self._add(name, component, "ready" if is_ready(pod) else "not_ready",
                          api_time=_ready_since(pod))
            restarts = restart_count(pod)
            if before is not None and restarts > restart_count(before):
                self._add(name, component, "restarted", _last_termination(pod))

    def on_event(self, kind: str, event: dict) -> None:
        involved = event.get("involvedObject", {})
        if involved.get("kind") != "Pod" or kind == "DELETED":
            return
        name = involved.get("name", "")
        with self.lock:
            pod = self.pods.get(name)
            if pod is None:
                return
            component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "")
            self._add(name, component, f"event:{event.get('reason')}",
                      f"{event.get('message', '')} (count {event.get('count', 1)})")

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return dict(self.pods)

    def between(self, start: float, end: float, *, pod: str | None = None,
                kind: str | None = None) -> list[Change]:
        with self.lock:
            return [c for c in self.changes if start <= c.t <= end
                    and (pod is None or c.pod == pod) and (kind is None or c.kind == kind)]


def _last_termination(pod: dict) -> str:
    for status in pod.get("status", {}).get("containerStatuses", []):
        terminated = status.get("lastState", {}).get("terminated")
        if terminated:
            return (f"{status['name']}: {terminated.get('reason')} exit "
                    f"{terminated.get('exitCode')} at {terminated.get('finishedAt')}")
    return ""


class ApiWatch(threading.Thread):
    """List, then watch one collection, handing every object to `handler(type, object)`;
    re-lists after the server ends the watch with an error (410 Gone) or the connection
    drops. Runs until `stop` is set (the watch requests time out every 30 s to notice)."""

    def __init__(self, cluster: Cluster, path: str, handler: Callable[[str, dict], None],
                 stop: threading.Event) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self.cluster, self.path, self.handler, self.stop = cluster, path, handler, stop
        self.listed = threading.Event()
        self.errors: list[str] = []

    def _open(self, query: str, timeout: float) -> Any:
        request = urllib.request.Request(
            f"{self.cluster.url}{self.path}?{query}",
            headers={"Authorization": f"Bearer {self.cluster.token}"})
        context = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        return urllib.request.urlopen(request, timeout=timeout, context=context)

    def run(self) -> None:
        version = ""
        while not self.stop.is_set():
            try:
                if not version:
                    with self._open("limit=500", 30) as answer:
                        listing = json.loads(answer.read())
                    for item in listing["items"]:
                        self.handler("ADDED", item)
                    version = listing["metadata"]["resourceVersion"]
                    self.listed.set()
                query = (f"watch=1&resourceVersion={version}&timeoutSeconds=30"
                         "&allowWatchBookmarks=true")
                with self._open(query, 60) as stream:
                    for line in stream:
                        if self.stop.is_set():
                            return
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            version = ""  # expired: list again
                            break
                        version = event["object"]["metadata"].get("resourceVersion", version)
                        if event["type"] != "BOOKMARK":
                            self.handler(event["type"], event["object"])
            except (OSError, ValueError, urllib.error.URLError) as error:
                self.errors.append(f"{type(error).__name__}: {error}"[:200])
                version = ""
                self.stop.wait(0.5)


# --- the host side: a container's process ----------------------------------------------------


def _container_id(pod: dict, container: str | None = None) -> str:
    for status in pod.get("status", {}).get("containerStatuses", []):
        if container in (None, status["name"]) and status.get("containerID"):
            return status["containerID"].split("://", 1)[-1]
    raise ClusterDrillError(f"pod {pod['metadata']['name']} has no running container")


def task_pid(cluster: Cluster, container_id: str) -> int:
    """The host PID of a container's first process (`ctr task ls` on the node's containerd)."""
    listed = subprocess.run(
        ["ctr", "--address", str(cluster.layout.containerd_socket), "--namespace", "k8s.io",
         "task", "ls"], capture_output=True, text=True, timeout=60, check=False)
    if listed.returncode != 0:
        raise ClusterDrillError(f"ctr task ls: {listed.stderr.strip()}")
    for line in listed.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0] == container_id and parts[2] == "RUNNING":
            return int(parts[1])
    raise ClusterDrillError(f"containerd runs no task {container_id[:12]}")


def signal_container(cluster: Cluster, pod: dict, signum: int, process: str) -> int:
    """Send `signum` to the container's main process from the host; it must be `process`
    (its /proc comm), so a wrong image layout fails loudly instead of signalling a shell."""
    pid = task_pid(cluster, _container_id(pod))
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm != process:
        raise ClusterDrillError(f"pod {pod['metadata']['name']}: main process {pid} is "
                                f"{comm!r}, not {process!r}")
    os.kill(pid, signum)
    return pid


# The feed: readings published to NATS through its Service as EMQX's bridge would, from a
# pod (iot_tools.cluster.clients); no requests to ui-iot.
FEED_POD = "drill-feed"
FEED_PREFIX = "drill-"


# --- one run ----------------------------------------------------------------------------------


@dataclass
class PodResult:
    """One pod through one fault (seconds from the injection unless said otherwise)."""

    pod: str
    not_ready_after: float | None
    not_ready_after_api: float | None  # from lastTransitionTime (1 s resolution)
    ready_again_after: float | None  # from the phase's reference (see FaultResult)
    ready_at_end: bool
    restarts: int
    restart_decided_after: float | None = None  # the kubelet's Killing event
    restarted_after: float | None = None  # restartCount + 1 seen (the new container runs)

    def as_json(self) -> dict:
        return {key: round(value, 3) if isinstance(value, float) else value
                for key, value in self.__dict__.items()}


@dataclass
class FaultResult:
    fault: str
    injected_at: float  # monotonic
    affected: tuple[str, ...]
    pods: dict[str, dict[str, PodResult]]  # service -> pod -> result (every service pod)
    others: dict[str, PodResult]  # the release's other pods (NATS, PostgreSQL, Keycloak)
    dependency: dict[str, Any] = field(default_factory=dict)
    reference: str = ""  # what ready_again_after counts from

    def worst(self, service: str, key: str) -> float | None:
        values = [getattr(r, key) for r in self.pods.get(service, {}).values()]
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def as_json(self) -> dict:
        return {"fault": self.fault, "affected": list(self.affected),
                "reference": self.reference, "dependency": self.dependency,
                "services": {service: {pod: r.as_json() for pod, r in pods.items()}
                             for service, pods in self.pods.items()},
                "others": {pod: r.as_json() for pod, r in self.others.items()}}


@dataclass
class ClusterDrill:
    """The chart installed on `cluster` in `namespace` with the drill's values, its pods
    watched, the faults injected one by one."""

    cluster: Cluster
    namespace: str = "drill"
    helm_major: int = 4
    values_files: tuple[str | Path, ...] = (LOCAL_VALUES,)
    set_values: tuple[str, ...] = DRILL_SETS
    hold: float = HOLD_SECONDS
    settle: float = SETTLE_SECONDS
    out: Callable[[str], None] = lambda text: print(f"cluster drill: {text}", flush=True)
    recorder: Recorder = field(init=False)
    results: list[FaultResult] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.recorder = Recorder(RELEASE)
        self._stop = threading.Event()
        self._watches: list[ApiWatch] = []
        self.feed = ClientsPod(self.cluster, self.namespace, RELEASE, FEED_POD, FEED_PREFIX,
                               mqtt_timeout=2.0)
        self.model = model(self.values_files, self.set_values)

    # -- release ----------------------------------------------------------------------------

    def helm(self, *args: str, timeout: float = 900) -> helm.HelmResult:
        return helm.run_helm(self.helm_major, *args, "--namespace", self.namespace,
                             "--kubeconfig", str(self.cluster.kubeconfig), timeout=timeout)

    def install(self, timeout: float = 600) -> None:
        values = [argument for path in self.values_files for argument in ("-f", str(path))]
        sets = [argument for value in self.set_values for argument in ("--set", value)]
        started = _now()
        result = self.helm("install", RELEASE, str(helm.CHART_DIR), "--create-namespace",
                           *values, *sets, "--wait", "--timeout", f"{timeout:.0f}s",
                           timeout=timeout + 60)
        if result.returncode != 0:
            raise ClusterDrillError(f"helm install: {result.stderr[-3000:]}")
        self.figures["install_to_ready_seconds"] = round(_now() - started, 1)
        self.out(f"installed in {self.figures['install_to_ready_seconds']} s")

    def uninstall(self) -> None:
        self.stop_watching()
        self.feed.delete()
        self.helm("uninstall", RELEASE, "--wait", "--timeout", "300s", timeout=360)
        self.cluster.request("DELETE", f"/api/v1/namespaces/{self.namespace}")

    def get(self, path: str) -> dict:
        return self.cluster.get(path)

    # -- watching ---------------------------------------------------------------------------

    def watch(self) -> None:
        for path, handler in (
                (f"/api/v1/namespaces/{self.namespace}/pods", self.recorder.on_pod),
                (f"/api/v1/namespaces/{self.namespace}/events", self.recorder.on_event)):
            watch = ApiWatch(self.cluster, path, handler, self._stop)
            watch.start()
            self._watches.append(watch)
        for watch in self._watches:
            if not watch.listed.wait(60):
                raise ClusterDrillError(f"{watch.name}: no listing within 60 s "
                                        f"({watch.errors[-1:]})")

    def stop_watching(self) -> None:
        self._stop.set()
        for watch in self._watches:
            watch.join(timeout=40)
        self._watches.clear()

    def pods_of(self, component: str) -> list[dict]:
        return sorted((pod for pod in self.recorder.snapshot().values()
                       if pod["metadata"]["labels"].get("app.kubernetes.io/component")
                       == component and not pod["metadata"].get("deletionTimestamp")),
                      key=lambda pod: pod["metadata"]["name"])

    def service_pods(self) -> dict[str, list[str]]:
        return {service: [pod["metadata"]["name"] for pod in self.pods_of(component)]
                for service, component in COMPONENTS.items()}

    def all_ready(self) -> bool:
        pods = [pod for pod in self.recorder.snapshot().values()
                if not pod["metadata"].get("deletionTimestamp")]
        return bool(pods) and all(is_ready(pod) for pod in pods)

    # -- the feed ---------------------------------------------------------------------------

    def start_feed(self) -> None:
        self.feed.start()

    def stop_feed(self) -> dict:
        final = self.feed.stop()
        self.figures["feed"] = final
        return final

    def wait_stored(self, published: int, timeout: float = 150) -> tuple[int, int]:
        rows = self.feed.wait_stored(published, timeout)
        self.figures["stored"] = {"rows": rows[0], "distinct": rows[1]}
        return rows

    # -- faults -----------------------------------------------------------------------------

    def _scale(self, statefulset: str, replicas: int) -> None:
        status, answer = self.cluster.request(
            "PATCH", f"/apis/apps/v1/namespaces/{self.namespace}/statefulsets/{statefulset}"
            "/scale", {"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json")
        if status != 200:
            raise ClusterDrillError(f"scaling {statefulset} to {replicas}: {status} {answer}")

    def dependency_outage(self, fault: str) -> FaultResult:
        component, statefulset, signum, process = DEPENDENCIES[fault]
        wait_for("every pod Ready before the fault", self.all_ready, timeout=180,
                 interval=POLL)
        pods_before = self.service_pods()
        (victim,) = self.pods_of(component)
        name = victim["metadata"]["name"]
        restarts_before = restart_count(victim)
        injected, injected_wall = _now(), time.time()
        signal_container(self.cluster, victim, signum, process)
        self._scale(statefulset, 0)
        self.out(f"{fault}: {process} sent {signal.Signals(signum).name}, {statefulset} "
                 "scaled to 0")
        gone = wait_for(f"{name} deleted", lambda: (
            changes[0].t if (changes := self.recorder.between(injected, _now(), pod=name,
                                                               kind="deleted")) else None),
            timeout=self.hold + 90, interval=POLL)
        restarted = [c for c in self.recorder.between(injected, gone, pod=name,
                                                      kind="restarted")]
        time.sleep(max(0.0, injected + self.hold - _now()))
        recovered = _now()
        self._scale(statefulset, 1)
        back = wait_for(f"{component} Ready again", lambda: (
            changes[0].t if (changes := [c for c in self.recorder.between(
                recovered, _now(), kind="ready") if c.component == component]) else None),
            timeout=300, interval=POLL)
        bound = max(self.model.limits.ready_again(s) for s in self.model.services)
        with contextlib.suppress(WaitTimeoutError):
            wait_for("every pod Ready after the recovery", self.all_ready,
                     timeout=bound + RESTART_TOLERANCE + 30, interval=POLL)
        time.sleep(self.settle)
        end = _now()
        result = self._measure(fault, (injected, injected_wall), reference_at=back, end=end,
                               pods_before=pods_before,
                               reference="the dependency's pod Ready again")
        result.dependency = {
            "pod": name, "signal": signal.Signals(signum).name,
            "deleted_after": round(gone - injected, 3),
            "restarted_by_kubelet_before_deletion": bool(restarted) or restart_count(
                victim) > restarts_before,
            "recovery_at": round(recovered - injected, 3),
            "ready_after_recovery": round(back - recovered, 3)}
        self.results.append(result)
        self.out(f"{fault}: done ({json.dumps(result.dependency)})")
        return result

    def hung_service(self) -> FaultResult:
        component = COMPONENTS[HANG_TARGET]
        wait_for("every pod Ready before the fault", self.all_ready, timeout=180,
                 interval=POLL)
        pods_before = self.service_pods()
        victim = self.pods_of(component)[0]
        name = victim["metadata"]["name"]
        injected, injected_wall = _now(), time.time()
        signal_container(self.cluster, victim, signal.SIGUSR1, "python")
        self.out(f"hung-service: {name}'s event loop blocked (SIGUSR1)")
        limits = self.model.limits
        _lower, upper = limits.hang_restart_window(HANG_TARGET)
        restarted = wait_for(f"{name} restarted", lambda: (
            changes[0].t if (changes := self.recorder.between(
                injected, _now(), pod=name, kind="restarted")) else None),
            timeout=(upper or 0) + limits.termination(HANG_TARGET) + 60, interval=POLL)
        with contextlib.suppress(WaitTimeoutError):
            wait_for(f"{name} Ready again", lambda: any(
                c.kind == "ready" for c in self.recorder.between(restarted, _now(), pod=name)),
                timeout=limits.started_and_ready(HANG_TARGET) + 30, interval=POLL)
        time.sleep(self.settle)
        end = _now()
        result = self._measure("hung-service", (injected, injected_wall),
                               reference_at=restarted, end=end, pods_before=pods_before,
                               reference="the restart (new container running)", target=name)
        self.results.append(result)
        self.out(f"hung-service: done ({name} restarted after {restarted - injected:.1f} s)")
        return result

    def _measure(self, fault: str, injected: tuple[float, float], *, reference_at: float,
                 end: float, pods_before: dict[str, list[str]], reference: str,
                 target: str | None = None) -> FaultResult:
        """Every pod of the release through the fault; `target`: the one pod a hang hit (the
        only affected one of its service)."""
        affected = self.model.affected(fault)
        pods: dict[str, dict[str, PodResult]] = {}
        for service, names in pods_before.items():
            pods[service] = {name: self._pod_result(name, injected, reference_at, end)
                             for name in names if target is None or service != HANG_TARGET
                             or name == target}
        seen = {name for names in pods_before.values() for name in names}
        others = {name: self._pod_result(name, injected, reference_at, end)
                  for name, pod in self.recorder.snapshot().items()
                  if name not in seen or (target is not None and name != target
                                          and name in pods_before.get(HANG_TARGET, []))}
        return FaultResult(fault, injected[0], affected, pods, others, reference=reference)

    def _pod_result(self, name: str, injected: tuple[float, float], reference_at: float,
                    end: float) -> PodResult:
        changes = self.recorder.between(injected[0], end, pod=name)
        not_ready = next((c for c in changes if c.kind == "not_ready"), None)
        current = self.recorder.snapshot().get(name)
        ready_at_end = current is not None and is_ready(current)
        ready_again = None
        if ready_at_end:
            readies = [c for c in changes if c.kind == "ready" and c.t >= reference_at]
            # Ready throughout since the reference reads as 0 (as in the drill).
            ready_again = readies[-1].t - reference_at if readies else 0.0
        killing = next((c for c in changes if c.kind == "event:Killing"), None)
        restarts = [c for c in changes if c.kind == "restarted"]
        return PodResult(
            pod=name,
            not_ready_after=None if not_ready is None else not_ready.t - injected[0],
            not_ready_after_api=None if not_ready is None or not_ready.api_time is None
            else not_ready.api_time - injected[1],
            ready_again_after=ready_again, ready_at_end=ready_at_end, restarts=len(restarts),
            restart_decided_after=None if killing is None else killing.t - injected[0],
            restarted_after=restarts[0].t - injected[0] if restarts else None)

    # -- the whole run ----------------------------------------------------------------------

    def run(self, faults: Iterable[str] = FAULTS) -> dict:
        """Install, watch, feed, play the faults, account the telemetry; uninstall always.
        Returns the report (also written by `write`)."""
        try:
            self.install()
            self.watch()
            self.start_feed()
            for fault in faults:
                if fault == "hung-service":
                    self.hung_service()
                else:
                    self.dependency_outage(fault)
            final = self.stop_feed()
            self.wait_stored(final["published"])
        finally:
            self.uninstall()
        return self.report()

    def report(self, drill_report: dict | None = None) -> dict:
        return {
            "schema": "iot-platform/cluster-drill/v1",
            "values": {"files": [str(Path(p).relative_to(helm.REPO_ROOT))
                                 if Path(p).is_absolute() else str(p)
                                 for p in self.values_files],
                       "set": list(self.set_values)},
            "hold_seconds": self.hold, "helm_major": self.helm_major,
            "tolerances": TOLERANCES,
            "figures": self.figures,
            "model": {fault: self.model.bounds(fault) for fault in FAULTS},
            "kubelet": {result.fault: result.as_json() for result in self.results},
            "rows": comparison_rows(self.model, {r.fault: r.as_json() for r in self.results},
                                    drill_report),
        }


TOLERANCES = {
    "status_seconds": STATUS_TOLERANCE,
    "restart_seconds": RESTART_TOLERANCE,
    "api_time_resolution_seconds": API_TIME_RESOLUTION,
    "note": "kubelet observations are the API watch's receive times (ms after the kubelet's "
            "status write); bounds are compared with status_seconds added (restart times with "
            "restart_seconds: PLEG's 1 s relist and the container's creation); "
            "lastTransitionTime-based figures (*_api) carry +-1 s",
}


# --- the comparison ---------------------------------------------------------------------------


def _drill_phase(drill_report: dict | None, fault: str) -> dict | None:
    if drill_report is None:
        return None
    return next((p for p in drill_report.get("phases", []) if p["name"] == fault), None)


def _drill_relaunch(drill_report: dict, phase: dict, service: str) -> float | None:
    for event in drill_report.get("timeline", []):
        if (event["kind"] == "launched" and event.get("service") == service
                and phase["started_at"] <= event["t"] <= phase["ended_at"]):
            return event["t"] - phase["started_at"]
    return None


def _worst(pods: dict[str, dict], key: str) -> float | None:
    values = [pod[key] for pod in pods.values() if pod.get(key) is not None]
    return max(values) if values else None


def comparison_rows(built: Model, kubelet: dict[str, dict],
                    drill_report: dict | None = None) -> list[dict]:
    """One row per fault, affected service and measure: the model's bound, the local drill's
    observation (if a report is given) and the kubelet's (the slowest pod of the service;
    restarts summed), with whether the kubelet kept within bound + tolerance."""
    rows: list[dict] = []
    for fault in FAULTS:
        if fault not in kubelet:
            continue
        phase = _drill_phase(drill_report, fault)
        for service, bound in built.bounds(fault).items():
            pods = kubelet[fault]["services"].get(service, {})
            local = (phase or {}).get("services", {}).get(service, {})

            def row(measure: str, model_bound: Any, drill: Any, seen: Any, *, ok: bool,
                    fault: str = fault, service: str = service) -> None:
                rows.append({"fault": fault, "service": service, "measure": measure,
                             "model_bound": model_bound, "drill_observed": drill,
                             "kubelet_observed": seen, "kubelet_within_bound": ok})

            seen = _worst(pods, "not_ready_after")
            row("to NotReady (s)", bound["not_ready_within"], local.get("not_ready_after"),
                seen, ok=seen is not None and seen <= bound["not_ready_within"] + STATUS_TOLERANCE)
            restarts = sum(pod["restarts"] for pod in pods.values())
            if fault == "hung-service":
                lower, upper = bound["restart_decided_between"]
                seen = _worst(pods, "restart_decided_after")
                row("restart decided (s)", [lower, upper], local.get("first_restart_after"),
                    seen, ok=seen is not None and lower - STATUS_TOLERANCE <= seen
                    <= upper + STATUS_TOLERANCE)
                limit = upper + bound["termination_within"]
                seen = _worst(pods, "restarted_after")
                drill = None if phase is None else _drill_relaunch(drill_report or {}, phase,
                                                                    service)
                row("new container (s)", limit, drill, seen,
                    ok=seen is not None and seen <= limit + RESTART_TOLERANCE)
            seen = _worst(pods, "ready_again_after")
            row("back to Ready (s)", bound["ready_again_within"],
                local.get("ready_again_after"), seen,
                ok=seen is not None and seen <= bound["ready_again_within"] + STATUS_TOLERANCE)
            row("restarts", bound["restarts"], local.get("restarts"), restarts,
                ok=restarts == bound["restarts"])
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "–".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| fault | service | measure | model bound | drill observed | kubelet observed |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        bound = row["model_bound"]
        bound_text = _cell(bound) if row["measure"] == "restarts" or isinstance(
            bound, list) else f"≤ {_cell(bound)}"
        mark = "" if row["kubelet_within_bound"] else " ✗"
        lines.append(f"| {row['fault']} | {row['service']} | {row['measure']} | {bound_text} "
                     f"| {_cell(row['drill_observed'])} | "
                     f"{_cell(row['kubelet_observed'])}{mark} |")
    return "\n".join(lines)


def write(report: dict, path: Path = ARTIFACT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


# --- CLI --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iot_tools.cluster.drill",
        description="The probe drill's faults on the real cluster, against the drill's model.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="install, play the faults, uninstall, write the "
                                          "comparison (the cluster must be up)")
    run.add_argument("--dir", type=Path, default=None, help="the cluster's state dir")
    run.add_argument("--namespace", default="drill")
    run.add_argument("--drill-report", type=Path, default=None,
                     help="a local drill's JSON report with the same values, for its column")
    run.add_argument("--out", type=Path, default=ARTIFACT)
    compare = commands.add_parser("compare", help="add a local drill's observations to a "
                                                  "comparison and print the table")
    compare.add_argument("--drill-report", type=Path, required=True)
    compare.add_argument("--comparison", type=Path, default=ARTIFACT)
    commands.add_parser("values", help="print the drill's --set arguments (for make demo)")
    args = parser.parse_args(argv)
    if args.command == "values":
        print(" ".join(f"--set {value}" for value in DRILL_SETS))
        return 0
    if args.command == "compare":
        report = json.loads(args.comparison.read_text())
        drill = json.loads(args.drill_report.read_text())
        built = model(tuple(helm.REPO_ROOT / p for p in report["values"]["files"]),
                      tuple(report["values"]["set"]))
        report["rows"] = comparison_rows(built, report["kubelet"], drill)
        report["drill_report"] = {"path": str(args.drill_report), "ok": drill.get("ok"),
                                  "time_scale": drill.get("time_scale"),
                                  "wall_seconds": drill.get("wall_seconds")}
        write(report, args.comparison)
        print(markdown_table(report["rows"]))
        return 0
    from iot_tools.cluster.layout import default_directory

    cluster = Cluster(args.dir or default_directory())
    drill = ClusterDrill(cluster, namespace=args.namespace)
    drill.run()
    local = json.loads(args.drill_report.read_text()) if args.drill_report else None
    report = drill.report(local)
    write(report, args.out)
    print(markdown_table(report["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
