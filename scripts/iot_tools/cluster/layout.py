"""Where everything of one cluster lives: the state directory's paths, the fixed network
names and ranges, and the ports chosen at `up` (kept in state.json for `down` and `status`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iot_tools.apiserver import SERVICE_CLUSTER_IP_RANGE
from iot_tools.helm import REPO_ROOT

# One cluster per machine: the bridge, its addresses and the guards are machine-wide.
BRIDGE = "iotbr0"
POD_CIDR = "10.244.0.0/24"
# The bridge's own address: the node IP (reachable from the API server and from pods), the
# API server's and CoreDNS's bind address, the kubelet's address for logs and exec.
GATEWAY = "10.244.0.1"
SERVICE_CIDR = SERVICE_CLUSTER_IP_RANGE
NODE_NAME = "iot-node"
CNI_NETWORK = "iot-cluster"
CLUSTER_DOMAIN = "cluster.local"
# The owner marker: which state directory the machine's cluster belongs to.
OWNER_FILE = Path("/run/iot-platform-cluster")


def default_directory() -> Path:
    """$CLUSTER_DIR, else .cluster/ at the repository root (git-ignored)."""
    return Path(os.environ.get("CLUSTER_DIR") or REPO_ROOT / ".cluster").resolve()


@dataclass
class Ports:
    """Ports chosen at `up` (iot_tools.servers.free_port), all on loopback except the API
    server's and the kubelet's (on the bridge address)."""

    etcd: int = 0
    etcd_peer: int = 0
    apiserver: int = 0
    controller_manager: int = 0
    scheduler: int = 0
    kubelet: int = 0
    kubelet_healthz: int = 0
    proxy_healthz: int = 0
    proxy_metrics: int = 0
    coredns_health: int = 0
    coredns_ready: int = 0


@dataclass
class Layout:
    directory: Path
    ports: Ports = field(default_factory=Ports)

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def run(self) -> Path:
        """One <component>.json per started process (pid and start time)."""
        return self.directory / "run"

    @property
    def config(self) -> Path:
        return self.directory / "config"

    @property
    def certs(self) -> Path:
        return self.directory / "certs"

    @property
    def ca_file(self) -> Path:
        return self.certs / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (Helm, kubectl, tests)."""
        return self.directory / "kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    @property
    def volumes(self) -> Path:
        """hostPath PersistentVolumes' directories (iot_tools.cluster.provisioner)."""
        return self.directory / "volumes"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def api_url(self) -> str:
        return f"https://{GATEWAY}:{self.ports.apiserver}"

    def save(self, extra: dict) -> None:
        self.state_file.write_text(json.dumps({"ports": asdict(self.ports), **extra}, indent=2))

    def load(self) -> dict:
        """state.json of the last `up` (ports restored); {} when there is none."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        self.ports = Ports(**state.get("ports", {}))
        return state
