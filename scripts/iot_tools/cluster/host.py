"""What the cluster changes on the machine, and how `down` takes every bit of it back: the pod
bridge, the two guards that keep every packet on the machine, kernel settings the kubelet
writes, iptables chains of kube-proxy/kubelet/CNI, mounts, cgroups, leftover processes.

Nothing here touches host networking beyond the bridge, one route for the service range and
rules of the cluster's own chains."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path

from iot_tools.cluster.layout import BRIDGE, GATEWAY, POD_CIDR, SERVICE_CIDR

# Our guard chain, jumped to from FORWARD (filter) in IPv4 and IPv6.
GUARD_CHAIN = "IOT-CLUSTER-GUARD"
# Chains that exist only because of the cluster: kube-proxy's and the kubelet's (KUBE-*),
# CNI plugins' (CNI-*) and ours.
CLUSTER_CHAIN_PREFIXES = ("KUBE-", "CNI-", "IOT-CLUSTER-")
# Kernel settings the kubelet sets at start (setupKernelTunables): saved before `up`,
# written back by `down`.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The kubelet's pod cgroups (cgroupfs driver): kubepods and its QoS children, in every
# hierarchy.
POD_CGROUP = "kubepods"
LEGACY_LOG_LINKS = Path("/var/log/containers")


class HostError(RuntimeError):
    pass


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), check=False, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise HostError(f"{shlex.join(command)} failed ({result.returncode}): "
                        f"{result.stderr.strip() or result.stdout.strip()}")
    return result


# --- bridge --------------------------------------------------------------------------------

def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def create_bridge() -> None:
    """The pod bridge with the gateway address, up before anything binds to that address;
    forwarding on for packets arriving on it only (pod -> ClusterIP -> other pod), never
    machine-wide."""
    prefix = POD_CIDR.split("/")[1]
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1\n")


def delete_bridge() -> None:
    if bridge_exists():
        run("ip", "link", "del", BRIDGE)


# --- guards: no packet leaves the machine ------------------------------------------------------

def add_guards() -> None:
    """A reject route for the service range (a ClusterIP kube-proxy has not programmed yet
    would otherwise follow the default route out; programmed ones are DNATed before
    routing), and FORWARD rejecting anything from the bridge toward another interface."""
    run("ip", "route", "replace", "unreachable", SERVICE_CIDR)
    for iptables in ("iptables", "ip6tables"):
        if run(iptables, "-w", "-n", "-L", GUARD_CHAIN, check=False).returncode != 0:
            run(iptables, "-w", "-N", GUARD_CHAIN)
        run(iptables, "-w", "-F", GUARD_CHAIN)
        # TCP gets a reset, everything else an ICMP error: a connect fails at once.
        run(iptables, "-w", "-A", GUARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-p", "tcp",
            "-j", "REJECT", "--reject-with", "tcp-reset")
        icmp = "icmp-admin-prohibited" if iptables == "iptables" else "icmp6-adm-prohibited"
        run(iptables, "-w", "-A", GUARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE,
            "-j", "REJECT", "--reject-with", icmp)
        if run(iptables, "-w", "-C", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode:
            run(iptables, "-w", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)


def guards_present() -> dict[str, bool]:
    route = run("ip", "route", "show", "type", "unreachable", SERVICE_CIDR, check=False)
    forward = run("iptables", "-w", "-C", "FORWARD", "-j", GUARD_CHAIN, check=False)
    return {"service-range reject route": SERVICE_CIDR in route.stdout,
            "FORWARD reject off the bridge": forward.returncode == 0}


def remove_route() -> None:
    if SERVICE_CIDR in run("ip", "route", "show", "type", "unreachable", SERVICE_CIDR,
                           check=False).stdout:
        run("ip", "route", "del", "unreachable", SERVICE_CIDR)


def cluster_chains() -> dict[tuple[str, str], list[str]]:
    """(iptables command, table) -> the cluster's chains in it."""
    found: dict[tuple[str, str], list[str]] = {}
    for iptables in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            saved = run(f"{iptables}-save", "-t", table, check=False).stdout
            chains = [line[1:].split()[0] for line in saved.splitlines()
                      if line.startswith(":") and line[1:].startswith(CLUSTER_CHAIN_PREFIXES)]
            if chains:
                found[iptables, table] = chains
    return found


def remove_chains() -> None:
    """Every rule jumping to a cluster chain, then the chains (kube-proxy's, the kubelet's,
    CNI's and the guard)."""
    for (iptables, table), chains in cluster_chains().items():
        saved = run(f"{iptables}-save", "-t", table).stdout
        for line in saved.splitlines():
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            if words[1] in chains:
                continue  # goes with its chain
            if "-j" in words and words[words.index("-j") + 1] in chains:
                run(iptables, "-w", "-t", table, "-D", *words[1:], check=False)
        for chain in chains:
            run(iptables, "-w", "-t", table, "-F", chain, check=False)
        for chain in chains:
            run(iptables, "-w", "-t", table, "-X", chain, check=False)
    left = cluster_chains()
    if left:
        raise HostError(f"iptables chains still present after removal: {left}")


# --- kernel settings ---------------------------------------------------------------------------

def save_sysctls() -> dict[str, str]:
    """The kernel settings the kubelet and `up` change, as they are now."""
    values = {}
    for key in (*KUBELET_SYSCTLS, BRIDGE_NETFILTER):
        with contextlib.suppress(OSError):
            values[key] = Path("/proc/sys", key).read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = Path("/proc/sys", key)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


BRIDGE_NETFILTER = "net/bridge/bridge-nf-call-iptables"


def require_bridge_netfilter() -> None:
    """kube-proxy's ClusterIPs between pods on one bridge need bridged packets to pass
    iptables: the kernel must offer the setting (br_netfilter built in or loadable)."""
    path = Path("/proc/sys", BRIDGE_NETFILTER)
    if not path.exists():
        with contextlib.suppress(OSError):  # no modprobe: the check below names the problem
            run("modprobe", "br_netfilter", check=False)
    if not path.exists():
        raise HostError(
            "net.bridge.bridge-nf-call-iptables does not exist (no br_netfilter in this "
            "kernel, and `modprobe br_netfilter` failed): ClusterIPs would not work between "
            "pods on the bridge")


def enable_bridge_netfilter() -> None:
    """Sets net.bridge.bridge-nf-call-iptables to 1 for the cluster's life; the caller saved
    the previous value (SAVED_SYSCTLS) and `down` puts it back."""
    path = Path("/proc/sys", BRIDGE_NETFILTER)
    if path.read_text().strip() != "1":
        path.write_text("1\n")


# --- processes, mounts, cgroups, files ---------------------------------------------------------

def pod_cgroup_pids() -> set[int]:
    pids: set[int] = set()
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        top = hierarchy / POD_CGROUP
        # os.walk, not rglob: the kubelet and containerd remove pod cgroups while we look,
        # and a folder gone mid-walk is skipped (rglob raises FileNotFoundError).
        for folder, _subfolders, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(pid) for pid in
                                Path(folder, "cgroup.procs").read_text().split())
    return pids


def _kill_until_gone(find: Callable[[], Collection[int]], what: str, timeout: float) -> None:
    """SIGKILL whatever `find` names until it names nothing (new ones may appear while a
    runtime is dying), or raise naming `what` is still alive."""
    deadline = time.monotonic() + timeout
    while (pids := find()) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    if pids:
        raise HostError(f"{what} still alive after SIGKILL: {sorted(pids)}")


def kill_pods(timeout: float = 20) -> None:
    """SIGKILL every process in the kubelet's pod cgroups (containers and their pause)."""
    _kill_until_gone(pod_cgroup_pids, "pod processes", timeout)


# What the cluster runs: only such processes are ever killed by what their command line
# names (an editor or `tail -f` of a log in the state dir is left alone).
CLUSTER_EXECUTABLES = frozenset({
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
    "kube-proxy", "coredns", "containerd", "containerd-shim-runc-v2", "runc",
})
PROVISIONER_MODULE = "iot_tools.cluster.provisioner"


def processes_mentioning(text: str) -> list[int]:
    """Pids of the cluster's kind of process whose command line contains `text`
    (containerd shims name our socket; every component names the state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                command = " ".join(words)
                ours = (Path(words[0]).name in CLUSTER_EXECUTABLES
                        or PROVISIONER_MODULE in command)
                if ours and text in command:
                    found.append(int(entry.name))
    return found


def kill_mentioning(text: str, timeout: float = 10) -> None:
    _kill_until_gone(lambda: processes_mentioning(text), f"processes naming {text}", timeout)


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        # mountinfo escapes space, tab, newline and backslash as octal.
        point = point.encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def unmount_under(directory: Path) -> None:
    """Every mount at or below `directory`, deepest first (overlay rootfs, shm, netns,
    kubelet's volumes); lazily when a mount is busy."""
    for _ in range(5):
        points = sorted(set(mounts_under(directory)), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)
    left = mounts_under(directory)
    if left:
        raise HostError(f"mounts still present under {directory}: {left}")


def remove_pod_cgroups() -> None:
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        top = hierarchy / POD_CGROUP
        if not top.is_dir():
            continue
        # Deepest first: a cgroup directory goes only when it has no children.
        for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                           key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def pod_cgroups_left() -> list[str]:
    if not CGROUP_ROOT.is_dir():
        return []
    return [str(h / POD_CGROUP) for h in CGROUP_ROOT.iterdir() if (h / POD_CGROUP).is_dir()]


def remove_log_links(directory: Path) -> None:
    """The kubelet's /var/log/containers symlinks that point into our state directory."""
    if not LEGACY_LOG_LINKS.is_dir():
        return
    for link in LEGACY_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(directory) + "/"):
                link.unlink()


def remove_shim_sockets(address: Path, namespace: str, containers: list[str]) -> None:
    """containerd 1.6 puts each shim's socket at /run/containerd/s/<sha256 of
    address/namespace/id>, whatever its own state directory; a killed shim leaves it."""
    for container in containers:
        digest = hashlib.sha256(f"{address}/{namespace}/{container}".encode()).hexdigest()
        Path("/run/containerd/s", digest).unlink(missing_ok=True)
