"""The services image: what services/Dockerfile builds (the project installed into a venv at
/opt/venv, bytecode compiled, uid/gid 10001 `iot`, the same env, CMD and port), on the shared
Debian base instead of python:3.11-slim. The wheels are fetched on the host (`pip wheel`, the
venv's versions as constraints) and installed in the rootfs with `--no-index`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from iot_tools.helm import REPO_ROOT
from iot_tools.images.archive import ImageConfig, Layer, write_docker_archive
from iot_tools.images.cache import InputHash
from iot_tools.images.common import Image, ImageBuildError, cached_build
from iot_tools.images.rootfs import BaseRootfs, base_rootfs, chroot

REPOSITORY = "ghcr.io/iot-platform/iot-services"
UID = GID = 10001
# services/Dockerfile's CMD: the chart always names the service with its own command.
CMD = ["python", "-c", "print('usage: python -m services.<ingest_iot|evaluator_iot|ui_iot|"
       "ops_worker|route_delivery|migrate>')"]
ENV = [
    "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
    "LANG=C.UTF-8",
]
# Left out of the build context and the cache key: caches, and services/tests (the package
# excludes services.tests*, so the image does not change with them).
_SKIP = ("__pycache__", ".pytest_cache", ".ruff_cache", "tests")
# Files the layer takes from the rootfs after the install: the venv and the new user.
_LAYER_PATHS = ("./opt", "./etc/passwd", "./etc/group", "./etc/shadow", "./etc/gshadow")


def reference() -> str:
    """The tag the chart uses by default: services.image registry/repository and, with an
    empty tag, the chart's appVersion."""
    import yaml

    app_version = yaml.safe_load((REPO_ROOT / "chart" / "Chart.yaml").read_text())["appVersion"]
    return f"{REPOSITORY}:{app_version}"


def _constraints() -> str:
    """The versions the project's tests run against (the venv's), so the image holds the same
    (pip ignores constraints on packages it does not install)."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable",
         "--disable-pip-version-check"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    lines = [line for line in frozen.splitlines() if "==" in line and not line.startswith("-")]
    return "\n".join(sorted(lines)) + "\n"


def _stage_project(target: Path) -> None:
    """The Dockerfile's build context: pyproject.toml, README.md and services/, and an empty
    scripts/ (the project's tooling stays out of the image)."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(REPO_ROOT / "services", target / "services",
                    ignore=shutil.ignore_patterns(*_SKIP))
    (target / "scripts").mkdir()


def _fetch_wheels(project: Path, constraints: str, wheels: Path) -> None:
    constraints_file = wheels.parent / "constraints.txt"
    constraints_file.write_text(constraints)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--wheel-dir", str(wheels), "--constraint", str(constraints_file), str(project)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if result.returncode != 0:
        raise ImageBuildError(f"pip wheel of the project exited {result.returncode}:\n"
                              f"{result.stderr[-3000:]}")


def _build(base: BaseRootfs, constraints: str, image_reference: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".services-") as work_name:
        work = Path(work_name)
        _stage_project(work / "project")
        wheels = work / "wheels"
        wheels.mkdir()
        _fetch_wheels(work / "project", constraints, wheels)
        root = base.copy_to(work / "rootfs")
        shutil.copytree(wheels, root / "tmp" / "wheels")
        pip_env = {"PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        chroot(root, "python3", "-m", "venv", "/opt/venv")
        chroot(root, "/opt/venv/bin/pip", "install", "--quiet", "--no-index", "--find-links",
               "/tmp/wheels", "iot-platform", env=pip_env)
        chroot(root, "/opt/venv/bin/python", "-m", "compileall", "-q", "/opt/venv")
        chroot(root, "groupadd", "--gid", str(GID), "iot")
        chroot(root, "useradd", "--uid", str(UID), "--gid", str(GID), "--no-create-home",
               "--shell", "/usr/sbin/nologin", "iot")
        layer_tar = work / "venv.tar"
        subprocess.run(
            ["tar", "--create", "--file", str(layer_tar), "--directory", str(root),
             "--numeric-owner", "--sort=name", *_LAYER_PATHS],
            check=True, capture_output=True, timeout=300,
        )
        config = ImageConfig(
            cmd=CMD, env=ENV, user=f"{UID}:{GID}", exposed_ports=["8080/tcp"],
            labels={"org.opencontainers.image.title": "iot-platform services",
                    "org.opencontainers.image.source": "services/Dockerfile (built by "
                    "iot_tools.images on Debian bookworm)"},
        )
        layers = [
            Layer(base.layer_tar, "mmdebstrap --variant=minbase bookworm (python3, python3-venv)"),
            Layer(layer_tar, "python3 -m venv /opt/venv && pip install --no-index iot-platform "
                  "&& compileall && useradd --uid 10001 iot"),
        ]
        write_docker_archive(image_reference, layers, config, target)


def source_hash(root: Path) -> InputHash:
    """The project's part of the services image's key: what the Dockerfile copies (README.md
    too: it is the package's long description), without caches and services/tests."""
    return (InputHash().file("pyproject.toml", root / "pyproject.toml")
            .file("README.md", root / "README.md")
            .tree("services", root / "services", skip=_SKIP))


def build_services(out_dir: Path | None = None) -> Image:
    """The services image, tagged as the chart references it by default."""
    base = base_rootfs()
    constraints = _constraints()
    image_reference = reference()
    key = (
        source_hash(REPO_ROOT).text("base", base.key).text("reference", image_reference)
        .text("constraints", constraints).code(__file__).hexdigest()
    )
    return cached_build(
        "services", image_reference, key,
        lambda target: _build(base, constraints, image_reference, target), out_dir,
    )
