"""The configuration files of containerd, CNI, the kubelet, kube-proxy and CoreDNS, written
into the state directory at `up` (JSON where the component reads YAML: JSON is YAML)."""

from __future__ import annotations

import json
from pathlib import Path

from iot_tools.cluster.layout import (
    BRIDGE,
    CLUSTER_DOMAIN,
    CNI_NETWORK,
    GATEWAY,
    NODE_NAME,
    POD_CIDR,
    Layout,
)

SANDBOX_IMAGE = "localhost/iot-platform/pause:1"
CNI_BIN_DIR = "/usr/lib/cni"


def containerd(layout: Layout) -> Path:
    """containerd with its own root, state and sockets; the pod sandbox is our pause image;
    no registry configuration at all (and the process gets a dead proxy, see cluster), so a
    missing image fails instead of reaching for the network."""
    base = layout.directory / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{layout.containerd_socket}"
[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  # This machine refuses negative oom_score_adj: without it every sandbox fails with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state in ours, not in the machine's /run/containerd/runc.
        Root = "{base}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.config / "cni"}"
    max_conf_num = 1
"""
    path = layout.config / "containerd.toml"
    path.write_text(text)
    return path


def cni(layout: Layout) -> Path:
    """Bridge CNI on the pre-created bridge, host-local IPAM with its data in the state dir;
    no masquerade (nothing leaves the machine), hairpin for a pod reaching itself."""
    directory = layout.config / "cni"
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(layout.directory / "cni" / "ipam"),
            },
        }],
    }
    path = directory / "10-iot-cluster.conflist"
    path.write_text(json.dumps(config, indent=2))
    return path


def kubelet(layout: Layout) -> Path:
    root = layout.directory / "kubelet"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": GATEWAY,
        "port": layout.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.ports.kubelet_healthz,
        "clusterDNS": [GATEWAY],
        "clusterDomain": CLUSTER_DOMAIN,
        # No host resolvers in pods: every name is the cluster's (CoreDNS) or unknown.
        "resolvConf": "",
        # The API server reaches the kubelet (logs, exec) without a client certificate; the
        # kubelet listens on the bridge address only.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(layout.directory / "pod-logs"),
        "volumePluginDir": str(root / "volume-plugins"),
        "serializeImagePulls": False,
        "registerNode": True,
        # A shared developer machine: evict only when the disk is really full.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 98,
        "imageGCLowThresholdPercent": 97,
        "shutdownGracePeriod": "0s",
        "protectKernelDefaults": False,
    }
    path = layout.config / "kubelet.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def kube_proxy(layout: Layout, kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": GATEWAY,
        "healthzBindAddress": f"127.0.0.1:{layout.ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{layout.ports.proxy_metrics}",
        # Zeros: kube-proxy leaves the machine's conntrack settings alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        # No route_localnet change: NodePorts answer on the bridge address only.
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": [POD_CIDR],
    }
    path = layout.config / "kube-proxy.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def corefile(layout: Layout, kubeconfig: Path) -> Path:
    """cluster.local from the API (kubernetes plugin); every other name NXDOMAIN at once,
    never forwarded (no packet leaves the machine)."""
    text = f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {GATEWAY}
    errors
    health 127.0.0.1:{layout.ports.coredns_health}
    ready 127.0.0.1:{layout.ports.coredns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
.:53 {{
    bind {GATEWAY}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""
    path = layout.config / "Corefile"
    path.write_text(text)
    return path
