"""The Debian base every rootfs image shares: `mmdebstrap --variant=minbase bookworm` with
python3 and python3-venv from the mirror the host uses, built once, kept as a directory (to
derive images from) and as one layer tar (one digest, so containerd stores it once for all the
images on it)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iot_tools.images.archive import layer_from_tree
from iot_tools.images.cache import InputHash, cache_dir
from iot_tools.images.common import ImageBuildError

SUITE = "bookworm"
# The host's sources (/etc/apt/sources.list.d/debian.sources): the release, its updates and
# its security fixes, main only.
SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PACKAGES = ("python3", "python3-venv")
# Documentation, manual pages and translations are a third of a minbase rootfs and nothing
# in a container reads them; licences (copyright files) stay.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
MMDEBSTRAP_TIMEOUT = 900


@dataclass(frozen=True)
class BaseRootfs:
    key: str
    root: Path
    layer_tar: Path

    def copy_to(self, target: Path) -> Path:
        """A private copy of the rootfs to build an image's layer in (owners, modes, links and
        device nodes kept)."""
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.root), str(target)],
                       check=True, capture_output=True, timeout=300)
        return target


def base_key() -> str:
    digest = InputHash().text("suite", SUITE).text("sources", "\n".join(SOURCES))
    digest.text("packages", " ".join(PACKAGES)).text("dpkg", "\n".join(DPKG_OPTIONS))
    # Not the module's code: editing a helper here must not cost a new mmdebstrap; bump
    # "format" when the mmdebstrap call itself changes.
    return digest.text("format", "1").hexdigest()


def base_rootfs() -> BaseRootfs:
    """The base rootfs and its layer, from the cache or built now (~25-70 s: mmdebstrap)."""
    folder = cache_dir()
    key = base_key()
    home = folder / f"base-{key}"
    result = BaseRootfs(key, home / "rootfs", home / "layer.tar")
    with (folder / ".base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.layer_tar.is_file():
            return result
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        _mmdebstrap(result.root)
        with tempfile.TemporaryDirectory(dir=home) as work:
            partial = Path(work) / "layer.tar"
            layer_from_tree(result.root, partial, "mmdebstrap")
            partial.rename(result.layer_tar)
        for stale in folder.glob("base-*"):
            if stale != home and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    return result


def _mmdebstrap(root: Path) -> None:
    command = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
        f"--include={','.join(PACKAGES)}",
        "--aptopt=Acquire::Retries \"3\"",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        # apt's package lists and the downloaded .debs are not part of the image.
        "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin",
        SUITE, str(root), *SOURCES,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=MMDEBSTRAP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as error:
        raise ImageBuildError(
            f"mmdebstrap did not finish within {MMDEBSTRAP_TIMEOUT} s (mirror unreachable?)"
        ) from error
    if result.returncode != 0:
        raise ImageBuildError(
            f"mmdebstrap exited {result.returncode} (needs root and deb.debian.org):\n"
            f"{result.stderr[-3000:]}"
        )


def chroot(root: Path, *command: str, env: dict[str, str] | None = None,
           timeout: float = 600) -> None:
    """Runs a command inside a rootfs (as root, no mounts: python, pip and useradd need none)."""
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
    result = subprocess.run(["chroot", str(root), *command], capture_output=True, text=True,
                            env=environment, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ImageBuildError(
            f"`{' '.join(command)}` in the image rootfs exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
