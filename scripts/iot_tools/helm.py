"""Finds the pinned Helm binaries and renders the chart with them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "chart"
VERSIONS_FILE = REPO_ROOT / "scripts" / "tool-versions.env"
# The Kubernetes version every render claims (`--kube-version`): the oldest the chart supports
# (Chart.yaml kubeVersion). Without it Helm 3 assumes 1.20 and refuses the chart.
KUBE_VERSION = "1.30.0"


class HelmNotFound(RuntimeError):  # noqa: N818 (name kept: callers catch it)
    pass


def pinned_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def helm_binary(major: int) -> Path:
    """The Helm binary of one major version: $HELM<major>, else the bootstrapped one."""
    override = os.environ.get(f"HELM{major}")
    if override:
        path = Path(override)
    else:
        version = pinned_versions()[f"HELM{major}_VERSION"]
        tools = Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools"))
        path = tools / f"helm-{version}" / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise HelmNotFound(
            f"Helm {major} not found at {path}: run `make tools` "
            f"(or set HELM{major} to a Helm {major}.x binary)"
        )
    return path


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


def run_helm(
    major: int, *args: str, cwd: Path | None = None, timeout: float = 120
) -> HelmResult:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/iot-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/iot-helm/config", "HELM_DATA_HOME": "/tmp/iot-helm/data"}
    proc = subprocess.run(
        [str(helm_binary(major)), *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False,
    )
    return HelmResult(proc.returncode, proc.stdout, proc.stderr)


def template(
    *,
    major: int = 3,
    release: str = "iot",
    namespace: str = "iot",
    values_files: tuple[str | Path, ...] = (),
    set_values: tuple[str, ...] = (),
    extra_args: tuple[str, ...] = (),
    chart: Path = CHART_DIR,
    kube_version: str = KUBE_VERSION,
) -> HelmResult:
    """`helm template` of the chart with the given values files and --set flags, as for a
    cluster of `kube_version`."""
    args = ["template", release, str(chart), "--namespace", namespace,
            "--kube-version", kube_version]
    for values_file in values_files:
        args += ["--values", str(values_file)]
    for assignment in set_values:
        args += ["--set", assignment]
    return run_helm(major, *args, *extra_args)


class HelmRenderError(RuntimeError):
    """A Helm command that exited non-zero; the message carries its stderr."""

    def __init__(self, args: tuple[str, ...], result: HelmResult) -> None:
        super().__init__(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        self.result = result


def render(
    *,
    major: int = 3,
    values_files: tuple[str | Path, ...] = (),
    set_values: tuple[str, ...] = (),
    extra_args: tuple[str, ...] = (),
    kube_version: str = KUBE_VERSION,
) -> list[dict]:
    """`helm template` of the chart, parsed: its non-empty YAML documents, in order.

    Raises HelmRenderError (with Helm's stderr) if the render fails.
    """
    import yaml

    result = template(
        major=major, values_files=values_files, set_values=set_values, extra_args=extra_args,
        kube_version=kube_version,
    )
    if result.returncode != 0:
        raise HelmRenderError((*set_values, *map(str, values_files)), result)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# `helm template` never prints NOTES.txt, and Helm 3's `install --dry-run` needs a cluster: the
# notes are rendered by `helm template` from a copy of the chart where this extra template wraps
# the real NOTES.txt (moved where .Files can read it) into a ConfigMap.
_NOTES_PROBE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-under-test
data:
  NOTES.txt: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}
"""


def notes(
    *,
    major: int = 3,
    release: str = "iot",
    namespace: str = "iot",
    set_values: tuple[str, ...] = (),
    kube_version: str = KUBE_VERSION,
) -> str:
    """The chart's NOTES.txt as `helm install` would print it, rendered with `helm template`
    (works the same under Helm 3 and 4, without a cluster).

    Raises HelmRenderError (with Helm's stderr) if the render fails.
    """
    import shutil
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="iot-notes-") as tmp:
        chart = Path(tmp) / CHART_DIR.name
        shutil.copytree(CHART_DIR, chart)  # follows the schema symlink: a self-contained copy
        (chart / "templates" / "NOTES.txt").rename(chart / "notes-under-test.txt")
        probe = chart / "templates" / "notes-under-test.yaml"
        probe.write_text(_NOTES_PROBE)
        result = template(
            major=major, release=release, namespace=namespace, set_values=set_values,
            chart=chart, kube_version=kube_version,
            extra_args=("--show-only", "templates/notes-under-test.yaml"),
        )
    if result.returncode != 0:
        raise HelmRenderError(set_values, result)
    return yaml.safe_load(result.stdout)["data"]["NOTES.txt"]


def by_kind_and_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    """Rendered documents keyed by (kind, metadata.name)."""
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def workloads(docs: list[dict]) -> list[dict]:
    """The documents that run pods."""
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict) -> dict:
    """The pod spec of a workload (CronJobs nest it one level deeper)."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def main_container(workload: dict) -> dict:
    """The first (main) container of a workload."""
    return pod_spec(workload)["containers"][0]


def env_by_name(container: dict) -> dict[str, dict]:
    """A container's env entries keyed by name."""
    return {item["name"]: item for item in container.get("env", [])}
