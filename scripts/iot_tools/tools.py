"""Finds the pinned chart tools besides Helm (helm-docs, kube-score, checkov) that
scripts/bootstrap-tools.sh installs into the tools folder, and runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from iot_tools.helm import REPO_ROOT, pinned_versions

# tool name -> (environment variable overriding its path, tool-versions.env key of its version)
TOOLS = {
    "helm-docs": ("HELM_DOCS", "HELM_DOCS_VERSION"),
    "kube-score": ("KUBE_SCORE", "KUBE_SCORE_VERSION"),
    "checkov": ("CHECKOV", "CHECKOV_VERSION"),
}
# Where a tool sits inside its folder <tools>/<name>-<version> (checkov: a venv).
RELATIVE_PATHS = {"checkov": "bin/checkov"}


class ToolNotFound(RuntimeError):  # noqa: N818 (parallel to helm.HelmNotFound)
    pass


def tool_binary(name: str) -> Path:
    """The binary of a pinned tool: $<OVERRIDE>, else the bootstrapped one."""
    variable, version_key = TOOLS[name]
    override = os.environ.get(variable)
    if override:
        path = Path(override)
    else:
        tools = Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools"))
        folder = tools / f"{name}-{pinned_versions()[version_key]}"
        path = folder / RELATIVE_PATHS.get(name, name)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolNotFound(f"{name} not found at {path}: run `make tools` (or set {variable})")
    return path


def run_tool(
    name: str, *args: str, cwd: Path | None = None, stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Runs a pinned tool; the caller checks the exit code (kube-score exits 1 on findings)."""
    return subprocess.run(
        [str(tool_binary(name)), *args], input=stdin, capture_output=True, text=True,
        cwd=cwd, timeout=timeout, check=False,
    )
