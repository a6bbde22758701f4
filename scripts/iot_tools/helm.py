"""Finds the pinned Helm binaries and renders the chart with them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "chart"
VERSIONS_FILE = REPO_ROOT / "scripts" / "tool-versions.env"


class HelmNotFound(RuntimeError):
    pass


def pinned_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
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
) -> HelmResult:
    """`helm template` of the chart with the given values files and --set flags."""
    args = ["template", release, str(chart), "--namespace", namespace]
    for values_file in values_files:
        args += ["--values", str(values_file)]
    for assignment in set_values:
        args += ["--set", assignment]
    return run_helm(major, *args, *extra_args)
