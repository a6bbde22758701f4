"""The pod sandbox image: one static binary (pause.c) that holds the pod's namespaces."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from iot_tools.images.archive import ImageConfig, layer_from_files, write_docker_archive
from iot_tools.images.cache import InputHash
from iot_tools.images.common import Image, cached_build

REFERENCE = "localhost/iot-platform/pause:1"
SOURCE = Path(__file__).with_name("pause.c")
# Upstream's pause image runs as nobody too; the pod's own securityContext may override it.
USER = "65535:65535"


def _compiler_version() -> str:
    return subprocess.run(
        ["gcc", "--version"], capture_output=True, text=True, check=True, timeout=30,
    ).stdout.splitlines()[0]


def _build(target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pause-") as work_name:
        work = Path(work_name)
        binary = work / "pause"
        subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
             str(SOURCE)],
            check=True, capture_output=True, timeout=120,
        )
        layer = layer_from_files(
            {"pause": (binary, 0o755)}, {}, work / "layer.tar",
            created_by="gcc -static pause.c (scripts/iot_tools/images/pause.c)",
        )
        config = ImageConfig(
            entrypoint=["/pause"], user=USER,
            labels={"org.opencontainers.image.title": "pause (iot-platform local build)"},
        )
        write_docker_archive(REFERENCE, [layer], config, target)


def build_pause(out_dir: Path | None = None) -> Image:
    """The pause image (`localhost/iot-platform/pause:1`), built or from the cache."""
    key = (InputHash().file("pause.c", SOURCE).text("gcc", _compiler_version())
           .code(__file__).hexdigest())
    return cached_build("pause", REFERENCE, key, _build, out_dir)
