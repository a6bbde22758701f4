"""A real single-node Kubernetes on this machine, as local processes (`make cluster`).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
(iptables), CoreDNS (on the host, bound to the pod bridge's gateway) and containerd, built
from the package registries (scripts/bootstrap-kube.sh, scripts/bootstrap-cluster-packages.sh),
with their state, configuration and logs in one directory (default .cluster/, or $CLUSTER_DIR
or --dir). Pods get the bridge CNI on 10.244.0.0/24; claims of the default StorageClass get
hostPath volumes from our provisioner (iot_tools.cluster.provisioner). No packet leaves the
machine: a reject route for the service range and a FORWARD rule rejecting traffic from the
bridge to any other interface are in place before the first pod, and containerd has no
registry (a missing image fails).

`python -m iot_tools.cluster up|down|status [--dir DIR]`.
"""

from __future__ import annotations

from iot_tools.cluster.layout import default_directory
from iot_tools.cluster.runtime import Cluster, ClusterError

__all__ = ["Cluster", "ClusterError", "default_directory"]
