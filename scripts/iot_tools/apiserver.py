"""A real kube-apiserver (with its etcd) on loopback, for the chart's live tests.

The binaries are the pinned ones `make tools` builds (scripts/bootstrap-kube.sh). Nothing else
of a cluster runs: no controller-manager, scheduler or kubelet, so objects are stored and
validated exactly as on a cluster but no pod ever starts. That is what install and upgrade
semantics need (Helm's `lookup`, immutable fields, admission, server-side dry-run).

Everything listens on 127.0.0.1 on free ports; state lives in a directory of the caller's;
`stop()` ends both processes (only those it started) and waits for them.

The pieces (binaries, commands, credentials, kubeconfig, API calls) also serve the
single-node cluster of `make cluster` (iot_tools.cluster), which runs the same two processes
with the rest of Kubernetes around them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.helm import REPO_ROOT, pinned_versions
from iot_tools.servers import free_port

# The Service ClusterIP range the API server allocates from (no packet ever uses it here).
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"


class ApiServerError(RuntimeError):
    pass


# Each binary scripts/bootstrap-kube.sh builds -> the tool-versions.env key of its version.
BINARY_VERSIONS = {
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubelet": "KUBERNETES_VERSION",
    "kube-proxy": "KUBERNETES_VERSION",
    "etcd": "ETCD_VERSION",
    "coredns": "COREDNS_VERSION",
}


def binary(name: str) -> Path:
    """A bootstrapped binary (a key of BINARY_VERSIONS) at its pinned version."""
    tools = Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools"))
    path = tools / f"{name}-{pinned_versions()[BINARY_VERSIONS[name]]}" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ApiServerError(f"{name} not found at {path}: run `make tools`")
    return path


def etcd_command(name: str, data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    """A one-member etcd on the given loopback URLs."""
    return [
        str(binary("etcd")),
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"{name}={peer_url}",
        # Throwaway data: no fsync makes every write (each Helm release revision) cheap.
        "--unsafe-no-fsync", "--log-level", "warn",
    ]


def apiserver_command(
    directory: Path, etcd_url: str, address: str, port: int, signing_key: Path, *,
    extra: list[str] | None = None,
) -> list[str]:
    """kube-apiserver on `address`:`port` with static token auth (tokens.csv in `directory`,
    see write_tokens) and a self-signed serving certificate for `address` (certs/)."""
    return [
        str(binary("kube-apiserver")),
        "--bind-address", address, "--advertise-address", address,
        "--secure-port", str(port),
        # Self-signed serving certificate (with `address` in it) written to --cert-dir.
        "--cert-dir", str(directory / "certs"),
        "--etcd-servers", etcd_url,
        "--token-auth-file", str(directory / "tokens.csv"),
        "--authorization-mode", "RBAC",
        "--service-account-issuer", "https://kubernetes.default.svc",
        "--service-account-key-file", str(signing_key.with_suffix(".pub")),
        "--service-account-signing-key-file", str(signing_key),
        "--service-cluster-ip-range", SERVICE_CLUSTER_IP_RANGE,
        *(extra or []),
    ]


def write_tokens(directory: Path, users: dict[str, str]) -> dict[str, str]:
    """tokens.csv for --token-auth-file: a fresh token per user name, each in system:masters
    (a throwaway cluster on one machine: no component needs narrower rights to be tested).
    Returns user -> token."""
    tokens = {user: secrets.token_hex(24) for user in users}
    path = directory / "tokens.csv"
    path.write_text("".join(
        f'{tokens[user]},{user},{user},"{groups}"\n' for user, groups in users.items()))
    path.chmod(0o600)
    return tokens


def service_account_key(directory: Path) -> Path:
    """A fresh RSA key (sa.key) for signing service-account tokens, and its public half."""
    key = directory / "sa.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
    )
    subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(key.with_suffix(".pub"))],
        check=True, capture_output=True,
    )
    return key


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, name: str) -> None:
    """A kubeconfig with one cluster, user and context, readable by the owner only."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
        "current-context": name,
    }
    # JSON is YAML: no YAML writer needed.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


class ApiAccess:
    """API calls as an admin: needs `url`, `token` and `ca_file` attributes."""

    url: str
    token: str
    ca_file: Path

    def request(
        self, method: str, path: str, body: dict | None = None, timeout: float = 30,
        content_type: str = "application/json",
    ) -> tuple[int, dict]:
        """One API call as the admin: (HTTP status, decoded JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return status, {"raw": raw.decode(errors="replace")}

    def get(self, path: str, timeout: float = 30) -> dict:
        """A GET that must answer 200: the decoded body; ApiServerError naming the path and
        the answer otherwise."""
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ApiServerError(f"GET {path}: {status} {body}")
        return body

    def get_text(self, path: str, timeout: float = 30) -> tuple[int, str]:
        """A GET whose answer is text, not JSON (a pod's log): (HTTP status, text)."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def resource_path(self, api_version: str, kind: str, namespace: str) -> str:
        """The collection path of a kind (from the server's discovery), namespaced or not."""
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        status, discovery = self.request("GET", base)
        if status != 200:
            raise ApiServerError(f"GET {base}: {status} {discovery}")
        for resource in discovery["resources"]:
            if resource["kind"] == kind and "/" not in resource["name"]:
                if resource["namespaced"]:
                    return f"{base}/namespaces/{namespace}/{resource['name']}"
                return f"{base}/{resource['name']}"
        raise ApiServerError(f"the API server serves no {kind} in {api_version}")

    def dry_run_create(self, obj: dict, namespace: str) -> tuple[int, dict]:
        """Server-side dry-run of creating `obj` (admission and validation run, nothing is
        stored): (HTTP status, the API's answer). Unknown and duplicate fields fail."""
        path = self.resource_path(obj["apiVersion"], obj["kind"], namespace)
        return self.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)

    def readyz(self, timeout: float = 5) -> tuple[int, dict]:
        """GET /readyz: (200, …) once the API server serves; raises OSError/SSLError before
        it listens or before its certificate exists."""
        if not self.ca_file.exists():
            raise OSError(f"{self.ca_file} not written yet")
        return self.request("GET", "/readyz", timeout=timeout)


@dataclass
class ApiServer(ApiAccess):
    """A running etcd + kube-apiserver pair. `kubeconfig` is for Helm (--kubeconfig)."""

    directory: Path
    url: str = ""
    token: str = ""
    kubeconfig: Path = field(init=False)
    ca_file: Path = field(init=False)
    started_seconds: float = 0.0
    _processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kubeconfig = self.directory / "kubeconfig"
        self.ca_file = self.directory / "certs" / "apiserver.crt"

    @property
    def pids(self) -> list[int]:
        """Process ids of etcd and the API server while they run."""
        return [process.pid for process in self._processes]

    def start(self, timeout: float = 180) -> ApiServer:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", etcd_command(
            "live-tests", self.directory / "etcd", etcd_url, peer_url))
        self.token = write_tokens(
            self.directory, {"live-tests-admin": "system:masters"})["live-tests-admin"]
        signing_key = service_account_key(self.directory)
        self._spawn("kube-apiserver", apiserver_command(
            self.directory, etcd_url, "127.0.0.1", api_port, signing_key,
            # No kubelet or controller-manager: nothing would reconcile the endpoints of the
            # `kubernetes` Service, and the only address is loopback.
            extra=["--endpoint-reconciler-type", "none"],
        ))
        self.url = f"https://127.0.0.1:{api_port}"
        self._wait_ready(started + timeout)
        write_kubeconfig(self.kubeconfig, self.url, self.ca_file, self.token, "live")
        self.started_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the API server, then etcd; SIGKILL whatever is left after `timeout`."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
        self._processes.clear()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        with log:
            # Own session: a Ctrl-C of the test run reaches pytest, which stops them in order.
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.directory, start_new_session=True,
            )
        self._processes.append(process)

    def _wait_ready(self, deadline: float) -> None:
        last = "not started"
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    self.stop()
                    raise ApiServerError(
                        f"{Path(process.args[0]).name} exited with {process.returncode}:\n"
                        + self._log_tail(Path(process.args[0]).name)
                    )
            with contextlib.suppress(OSError, ssl.SSLError):
                status, body = self.readyz()
                if status == 200:
                    return
                last = f"/readyz {status}: {body}"
            time.sleep(0.25)
        self.stop()
        raise ApiServerError(f"kube-apiserver not ready in time ({last}):\n"
                             + self._log_tail("kube-apiserver"))

    def _log_tail(self, name: str, lines: int = 30) -> str:
        path = self.directory / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
