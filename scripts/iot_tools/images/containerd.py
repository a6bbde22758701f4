"""A private containerd (its own root, state, socket and namespace in one folder, no CRI, no
registry) to import and run the images built here with `ctr` and runc: the image tests use it;
the cluster's containerd is iot_tools.cluster's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NAMESPACE = "iot-images"
_CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


class ContainerdError(RuntimeError):
    pass


@dataclass
class Container:
    """A container run by `ctr run --rm` in the foreground: ctr's exit code is the task's."""

    id: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class PrivateContainerd:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="iot-ctd-")))
    process: subprocess.Popen | None = None
    containers: dict[str, Container] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def start(self, timeout: float = 30) -> PrivateContainerd:
        config = self.workdir / "config.toml"
        config.write_text(_CONFIG.format(root=self.workdir))
        log = (self.workdir / "containerd.log").open("wb")
        self.process = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ContainerdError(f"containerd exited {self.process.returncode}:\n"
                                      f"{self._log_tail()}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise ContainerdError(f"containerd did not answer on {self.socket} within {timeout} s")

    def _log_tail(self) -> str:
        path = self.workdir / "containerd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def ctr(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} exited {result.returncode}:\n"
                                  f"{result.stderr}")
        return result

    def import_archive(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive), timeout=600)

    def run(
        self, reference: str, container_id: str, *command: str,
        env: dict[str, str] | None = None, mounts: tuple[tuple[Path, str, bool], ...] = (),
        read_only: bool = False, memory_limit: int | None = None,
    ) -> Container:
        """Starts `reference` on the host network; `mounts` are (host path, container path,
        read-only) bind mounts. A non-empty `command` replaces the image's whole process (ctr
        does not keep the entrypoint), so callers name it."""
        args = ["run", "--rm", "--net-host"]
        if read_only:
            args.append("--read-only")
        if memory_limit is not None:
            # Bytes, as a pod's resources.limits.memory; shown to the container as the CRI
            # does (cgroup fs read-only at /sys/fs/cgroup: ctr mounts none), so a JVM sizes its
            # heap from the limit instead of from the host's memory.
            args += ["--memory-limit", str(memory_limit), "--mount",
                     "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev"]
        for name, value in (env or {}).items():
            args += ["--env", f"{name}={value}"]
        for source, target, readonly in mounts:
            options = "rbind:ro" if readonly else "rbind:rw"
            args += ["--mount", f"type=bind,src={source},dst={target},options={options}"]
        log = self.workdir / f"{container_id}.log"
        process = subprocess.Popen(
            ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args, reference,
             container_id, *command],
            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        container = Container(container_id, process, log)
        self.containers[container_id] = container
        return container

    def task_pid(self, container_id: str, timeout: float = 30) -> int:
        """The host pid of a running task (waits for the task to be RUNNING)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]:
                task, pid, status = [*line.split(), "", "", ""][:3]
                if task == container_id and status == "RUNNING":
                    return int(pid)
            container = self.containers.get(container_id)
            if container and container.process.poll() is not None:
                raise ContainerdError(f"{container_id} exited {container.process.returncode}:\n"
                                      f"{container.output()[-3000:]}")
            time.sleep(0.2)
        raise ContainerdError(f"task {container_id} not RUNNING within {timeout} s")

    def kill(self, container_id: str, signal_name: str = "SIGTERM") -> None:
        self.ctr("tasks", "kill", "--signal", signal_name, container_id, check=False)

    def exec(self, container_id: str, *command: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        return self.ctr("tasks", "exec", "--exec-id", f"exec-{time.monotonic_ns()}",
                        container_id, *command, check=False, timeout=timeout)

    def remove(self, container_id: str, timeout: float = 30) -> None:
        """SIGKILL the task, wait for `ctr run --rm` to remove the container."""
        container = self.containers.pop(container_id, None)
        if container is None:
            return
        if container.process.poll() is None:
            self.kill(container_id, "SIGKILL")
            try:
                container.process.wait(timeout)
            except subprocess.TimeoutExpired:
                container.process.kill()
                container.process.wait(10)
        # A ctr killed before its --rm ran leaves the container behind.
        self.ctr("tasks", "delete", "--force", container_id, check=False)
        self.ctr("containers", "delete", container_id, check=False)

    def stop(self) -> None:
        """Removes every container, stops containerd, unmounts whatever is left under the
        folder (snapshots, rootfs mounts) and deletes it."""
        for container_id in list(self.containers):
            self.remove(container_id)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        for mount_point in sorted(self._mounts(), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mount_point], capture_output=True, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _mounts(self) -> list[str]:
        prefix = str(self.workdir.resolve()) + os.sep
        with open("/proc/self/mountinfo") as mountinfo:
            points = [line.split()[4] for line in mountinfo]
        return [point for point in points if point.startswith(prefix)]

    def mounts(self) -> list[str]:
        """Mount points under the folder (none after stop)."""
        return self._mounts()


def process_ids(pid: int) -> tuple[int, int]:
    """Real uid and gid of a host process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])
