"""The single-node cluster: `up`, `down`, `status` (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.apiserver import (
    ApiAccess,
    apiserver_command,
    binary,
    etcd_command,
    service_account_key,
    write_kubeconfig,
    write_tokens,
)
from iot_tools.cluster import configs, host, processes
from iot_tools.cluster.layout import (
    BRIDGE,
    CNI_NETWORK,
    GATEWAY,
    NODE_NAME,
    OWNER_FILE,
    POD_CIDR,
    SERVICE_CIDR,
    Layout,
    Ports,
)
from iot_tools.cluster.provisioner import storage_class
from iot_tools.servers import free_port

# Start order; `down` stops in the reverse order of this list, except that pods are killed
# (through their cgroups) before containerd and the API server stop.
COMPONENTS = (
    "etcd", "kube-apiserver", "containerd", "kube-controller-manager", "kube-scheduler",
    "kubelet", "kube-proxy", "coredns", "provisioner",
)
# Identities in the API server's token file: user -> groups.
USERS = {
    "admin": "system:masters",
    "kube-controller-manager": "system:masters",
    "kube-scheduler": "system:masters",
    f"system:node:{NODE_NAME}": "system:nodes,system:masters",
    "kube-proxy": "system:masters",
    "coredns": "system:masters",
    "provisioner": "system:masters",
}
# containerd's pulls go to a proxy that is not there: a missing image fails at once with
# "connection refused" instead of reaching for a registry (nothing is configured either).
DEAD_PROXY = "http://127.0.0.1:9"
CNI_CACHE = Path("/var/lib/cni/results")
HOST_COMMANDS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables",
                 "ip6tables", "iptables-save", "mount", "umount", "openssl")


class ClusterError(RuntimeError):
    pass


def _now() -> float:
    return time.monotonic()


@dataclass
class Cluster(ApiAccess):
    """A cluster whose state lives in `directory`. `up()` starts it (or finds it running),
    `down()` removes everything it made, `status()` reports. As an ApiAccess it makes API
    calls as the admin (`request`, `dry_run_create`, `readyz`)."""

    directory: Path
    layout: Layout = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    out: object = field(default=sys.stdout, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.layout = Layout(self.directory)
        self.layout.load()

    # ApiAccess needs these three.
    @property
    def url(self) -> str:
        return self.layout.api_url

    @property
    def token(self) -> str:
        return self._credentials().get("admin", "")

    @property
    def ca_file(self) -> Path:
        return self.layout.ca_file

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def _say(self, text: str) -> None:
        print(f"cluster: {text}", file=self.out, flush=True)  # type: ignore[arg-type]

    def _credentials(self) -> dict[str, str]:
        try:
            return json.loads((self.directory / "credentials.json").read_text())
        except (OSError, ValueError):
            return {}

    # --- up ------------------------------------------------------------------------------------

    def running(self) -> dict[str, processes.Process]:
        return {name: p for name, p in processes.recorded(self.layout.run).items() if p.alive}

    def up(self, images: Sequence[object] = (), timeout: float = 300) -> Cluster:
        """Start every component (idempotent: a running cluster is left as it is, its images
        imported again). `images`: objects with `.reference` and `.archive` (iot_tools.images)
        imported into containerd; the pause image must be among them on a first start."""
        running = self.running()
        if running and set(running) == set(COMPONENTS):
            self._say(f"already running (state {self.directory}); nothing started")
            self.import_images(images)
            return self
        if running:
            raise ClusterError(
                f"partly running ({', '.join(sorted(running))} alive, "
                f"{', '.join(sorted(set(COMPONENTS) - set(running)))} not): run down first")
        self._preflight()
        started = _now()
        try:
            self._start(images, started + timeout)
        except BaseException:
            self._say("start failed: taking down what was started (logs kept in "
                      f"{self.layout.logs})")
            self.down()
            raise
        self.timings["up_to_node_ready_seconds"] = round(_now() - started, 1)
        self._say(f"node {NODE_NAME} Ready {self.timings['up_to_node_ready_seconds']} s "
                  "after start")
        self._say("\n" + self.describe())
        return self

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError("the cluster needs root (bridge, iptables, mounts, containerd)")
        missing = [c for c in HOST_COMMANDS if shutil.which(c, path=_path()) is None]
        if missing:
            raise ClusterError(f"missing host commands {missing}: run "
                               "scripts/bootstrap-cluster-packages.sh (make cluster does)")
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                     "kubelet", "kube-proxy", "coredns"):
            binary(name)  # raises naming the missing one
        if OWNER_FILE.exists():
            owner = OWNER_FILE.read_text().strip()
            if owner != str(self.directory):
                raise ClusterError(f"another cluster runs on this machine (state {owner}): "
                                   f"stop it with `python -m iot_tools.cluster down --dir "
                                   f"{owner}` first")
        if host.bridge_exists() and not OWNER_FILE.exists():
            raise ClusterError(f"interface {BRIDGE} exists but no cluster owns it: delete it "
                               f"(ip link del {BRIDGE}) or run down with its state dir")
        host.require_bridge_netfilter()

    def _start(self, images: Sequence[object], deadline: float) -> None:
        layout = self.layout
        for directory in (layout.logs, layout.run, layout.config, layout.certs, layout.volumes,
                          layout.directory / "containerd"):
            directory.mkdir(parents=True, exist_ok=True)
        layout.ports = Ports(**{name: free_port() for name in Ports.__dataclass_fields__})
        OWNER_FILE.write_text(f"{self.directory}\n")
        layout.save({"sysctls": host.save_sysctls()})
        host.enable_bridge_netfilter()

        # The network first: the bridge holds the node address everything binds to, and the
        # guards are in place before any pod exists.
        if not host.bridge_exists():
            host.create_bridge()
        host.add_guards()

        signing_key = service_account_key(self.directory)
        credentials = write_tokens(self.directory, USERS)
        path = self.directory / "credentials.json"
        path.write_text(json.dumps(
            {"admin": credentials["admin"], "provisioner": credentials["provisioner"]}))
        path.chmod(0o600)
        kubeconfigs = {}
        for user, token in credentials.items():
            name = "kubelet" if user.startswith("system:node:") else user
            target = layout.kubeconfig if user == "admin" else layout.config / f"{name}.kubeconfig"
            write_kubeconfig(target, layout.api_url, layout.ca_file, token, "iot-cluster")
            kubeconfigs[name] = target

        ports = layout.ports
        etcd_url = f"http://127.0.0.1:{ports.etcd}"
        self._spawn("etcd", etcd_command(
            "iot-cluster", self.directory / "etcd", etcd_url,
            f"http://127.0.0.1:{ports.etcd_peer}"))
        self._spawn("kube-apiserver", apiserver_command(
            self.directory, etcd_url, GATEWAY, ports.apiserver, signing_key,
            extra=["--allow-privileged=true", "--profiling=false",
                   "--kubelet-preferred-address-types=InternalIP"]))
        self._wait("kube-apiserver /readyz", deadline, self._api_ready)

        self._spawn("containerd", ["containerd", "--config", str(configs.containerd(layout))],
                    env=_env(HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, NO_PROXY=""))
        configs.cni(layout)
        self._wait("containerd socket", deadline, self._containerd_ready)
        self.import_images(images)

        common = [f"--kubeconfig={kubeconfigs['kube-controller-manager']}"]
        self._spawn("kube-controller-manager", [
            str(binary("kube-controller-manager")), *common,
            f"--authentication-kubeconfig={kubeconfigs['kube-controller-manager']}",
            f"--authorization-kubeconfig={kubeconfigs['kube-controller-manager']}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
            f"--service-account-private-key-file={signing_key}",
            f"--root-ca-file={layout.ca_file}", "--use-service-account-credentials=true",
            f"--cluster-cidr={POD_CIDR}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--profiling=false",
        ])
        scheduler = kubeconfigs["kube-scheduler"]
        self._spawn("kube-scheduler", [
            str(binary("kube-scheduler")), f"--kubeconfig={scheduler}",
            f"--authentication-kubeconfig={scheduler}", f"--authorization-kubeconfig={scheduler}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}",
            "--leader-elect=false", "--profiling=false",
        ])
        self._spawn("kubelet", [
            str(binary("kubelet")), f"--config={configs.kubelet(layout)}",
            f"--kubeconfig={kubeconfigs['kubelet']}",
            f"--root-dir={self.directory / 'kubelet'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY}",
        ])
        self._spawn("kube-proxy", [
            str(binary("kube-proxy")),
            f"--config={configs.kube_proxy(layout, kubeconfigs['kube-proxy'])}",
        ])
        self._spawn("coredns", [
            str(binary("coredns")), "-conf", str(configs.corefile(layout, kubeconfigs["coredns"])),
        ])
        self._spawn("provisioner", [
            sys.executable, "-m", "iot_tools.cluster.provisioner", "--dir", str(self.directory),
        ], env=_env(PYTHONPATH=str(Path(__file__).resolve().parents[2])))
        status, answer = self.request("POST", "/apis/storage.k8s.io/v1/storageclasses",
                                      storage_class())
        if status not in {201, 409}:
            raise ClusterError(f"creating the default StorageClass: {status} {answer}")

        self._wait(f"node {NODE_NAME} Ready", deadline, self._node_ready)
        self._wait("CoreDNS ready", deadline, lambda: _http_ok(
            f"http://127.0.0.1:{ports.coredns_ready}/ready"))
        self._wait("kube-proxy healthz", deadline, lambda: _http_ok(
            f"http://127.0.0.1:{ports.proxy_healthz}/healthz"))

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        processes.start(name, command, self.layout.run, self.layout.logs,
                        env=env or _env(), cwd=self.directory)

    def _wait(self, what: str, deadline: float, check: object) -> None:
        last: object = "never checked"
        while _now() < deadline:
            dead = [p for p in processes.recorded(self.layout.run).values() if not p.alive]
            if dead:
                raise ClusterError(
                    f"waiting for {what}: {dead[0].name} exited; last log lines:\n"
                    + processes.log_tail(dead[0]))
            try:
                result = check()  # type: ignore[operator]
            except (OSError, ssl.SSLError, urllib.error.URLError, subprocess.SubprocessError,
                    ValueError, KeyError) as error:
                result = error
            if result is True:
                return
            last = result
            time.sleep(0.5)
        raise ClusterError(f"{what} did not happen in time (last check: {last}); logs in "
                           f"{self.layout.logs}")

    def _api_ready(self) -> bool | str:
        status, body = self.readyz()
        return True if status == 200 else f"{status} {body}"

    def _containerd_ready(self) -> bool | str:
        result = self._ctr("version", check=False)
        return True if result.returncode == 0 else result.stderr.strip()

    def _node_ready(self) -> bool | str:
        status, node = self.request("GET", f"/api/v1/nodes/{NODE_NAME}", timeout=10)
        if status != 200:
            return f"GET node: {status}"
        for condition in node.get("status", {}).get("conditions", []):
            if condition["type"] == "Ready":
                return True if condition["status"] == "True" else (
                    f"Ready={condition['status']}: {condition.get('message', '')}")
        return "no Ready condition yet"

    def _ctr(self, *args: str, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", "--address", str(self.layout.containerd_socket), "--namespace", "k8s.io",
             *args], check=False, capture_output=True, text=True, timeout=timeout, env=_env())
        if check and result.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result

    def import_images(self, images: Sequence[object]) -> None:
        """Import docker-archive images (objects with `.reference` and `.archive`)."""
        for image in images:
            began = _now()
            self._ctr("images", "import", "--snapshotter", "overlayfs",
                      str(image.archive))  # type: ignore[attr-defined]
            listed = self._ctr("images", "ls", "-q").stdout.split()
            reference = image.reference  # type: ignore[attr-defined]
            if reference not in listed:
                raise ClusterError(f"imported {image.archive} but containerd lists no "  # type: ignore[attr-defined]
                                   f"{reference} (it has: {listed})")
            self._say(f"image {reference} imported in {_now() - began:.1f} s")

    def image_references(self) -> list[str]:
        return self._ctr("images", "ls", "-q").stdout.split()

    # --- down ----------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop everything, undo every change to the machine; returns what is left (empty
        when all went). Logs stay in logs/."""
        started = _now()
        state = self.layout.load()
        recorded = processes.recorded(self.layout.run)
        for name in ("provisioner", "coredns", "kube-scheduler", "kube-controller-manager",
                     "kubelet", "kube-proxy"):
            if name in recorded:
                processes.stop(recorded[name], self.layout.run)
        # Pods: every process in the kubelet's cgroups, then containerd and its shims (whose
        # sockets, in containerd's fixed /run/containerd/s, are named by a hash of the
        # containerd address and the container's id).
        containers = []
        if "containerd" in recorded and recorded["containerd"].alive:
            with contextlib.suppress(ClusterError, subprocess.SubprocessError):
                containers = self._ctr("containers", "ls", "-q", timeout=30).stdout.split()
        host.kill_pods()
        if "containerd" in recorded:
            processes.stop(recorded["containerd"], self.layout.run)
        host.kill_mentioning(str(self.layout.containerd_socket))
        host.remove_shim_sockets(self.layout.containerd_socket, "k8s.io", containers)
        for name in ("kube-apiserver", "etcd"):
            if name in recorded:
                processes.stop(recorded[name], self.layout.run)
        # Anything else still naming our directory (a process left by an earlier crash).
        host.kill_mentioning(str(self.directory) + "/")
        host.unmount_under(self.directory)
        host.delete_bridge()
        host.remove_route()
        host.remove_chains()
        host.restore_sysctls(state.get("sysctls", {}))
        host.remove_log_links(self.directory)
        host.remove_pod_cgroups()
        if CNI_CACHE.is_dir():
            for cached in CNI_CACHE.glob(f"{CNI_NETWORK}-*"):
                cached.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if OWNER_FILE.read_text().strip() == str(self.directory):
                OWNER_FILE.unlink()
        if self.directory.is_dir():
            for entry in self.directory.iterdir():
                if entry.name != "logs":
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        self.timings["down_seconds"] = round(_now() - started, 1)
        left = self.leftovers()
        self._say(f"down in {self.timings['down_seconds']} s"
                  + (f"; LEFT BEHIND: {left}" if left else "; nothing left behind"))
        return left

    def leftovers(self) -> list[str]:
        """Whatever of the cluster is still on the machine."""
        left = [f"process {p.name} ({p.pid})" for p in self.running().values()]
        left += [f"process {pid} naming {self.directory}"
                 for pid in host.processes_mentioning(str(self.directory) + "/")]
        left += [f"mount {point}" for point in host.mounts_under(self.directory)]
        if host.bridge_exists():
            left.append(f"interface {BRIDGE}")
        left += [f"guard: {name}" for name, on in host.guards_present().items() if on]
        left += [f"iptables {cmd} -t {table}: {chains}"
                 for (cmd, table), chains in host.cluster_chains().items()]
        left += [f"cgroup {path}" for path in host.pod_cgroups_left()]
        return left

    # --- status --------------------------------------------------------------------------------

    def status(self) -> tuple[bool, str]:
        """(healthy, report): processes, API /readyz, node Ready, guards, pods."""
        lines, healthy = [], True
        recorded = processes.recorded(self.layout.run)
        if not recorded:
            return False, f"no cluster in {self.directory} (run up)"
        for name in COMPONENTS:
            process = recorded.get(name)
            alive = bool(process and process.alive)
            healthy &= alive
            lines.append(f"  {name:24} {'running' if alive else 'NOT RUNNING':12} "
                         f"pid {process.pid if process else '-'}")
        try:
            ready = self._api_ready()
        except (OSError, ssl.SSLError) as error:
            ready = str(error)
        healthy &= ready is True
        lines.append(f"  API /readyz               {'ok' if ready is True else ready}")
        node = self._node_ready() if ready is True else "API not ready"
        healthy &= node is True
        lines.append(f"  node {NODE_NAME:20} {'Ready' if node is True else node}")
        for name, present in host.guards_present().items():
            healthy &= present
            lines.append(f"  guard {name:30} {'in place' if present else 'MISSING'}")
        if ready is True:
            status, pods = self.request("GET", "/api/v1/pods")
            items = pods.get("items", []) if status == 200 else []
            lines.append(f"  pods: {len(items)}")
            for pod in items:
                meta, phase = pod["metadata"], pod.get("status", {}).get("phase", "?")
                lines.append(f"    {meta['namespace']}/{meta['name']}: {phase}")
        return healthy, "\n".join(lines)

    def describe(self) -> str:
        """What runs where (after up)."""
        ports = self.layout.ports
        where = {
            "etcd": f"127.0.0.1:{ports.etcd}",
            "kube-apiserver": self.layout.api_url,
            "containerd": str(self.layout.containerd_socket),
            "kube-controller-manager": f"127.0.0.1:{ports.controller_manager}",
            "kube-scheduler": f"127.0.0.1:{ports.scheduler}",
            "kubelet": f"{GATEWAY}:{ports.kubelet} (node {NODE_NAME})",
            "kube-proxy": f"iptables mode, healthz 127.0.0.1:{ports.proxy_healthz}",
            "coredns": f"{GATEWAY}:53 (cluster.local)",
            "provisioner": "hostPath volumes for StorageClass local-path",
        }
        recorded = processes.recorded(self.layout.run)
        lines = [f"  {name:24} pid {recorded[name].pid if name in recorded else '-':>7}  "
                 f"{where[name]}" for name in COMPONENTS]
        lines += [
            f"  pods: bridge {BRIDGE} {POD_CIDR} (gateway {GATEWAY}); services {SERVICE_CIDR}",
            f"  guards: unreachable route {SERVICE_CIDR}; FORWARD rejects {BRIDGE} -> elsewhere",
            f"  kubeconfig: {self.layout.kubeconfig}",
            f"  logs: {self.layout.logs}",
        ]
        return "\n".join(lines)


def _path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin",
                            "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}}
    env["PATH"] = _path()
    env.update(extra)
    return env


def _http_ok(url: str) -> bool | str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return True if response.status == 200 else f"{response.status}"
