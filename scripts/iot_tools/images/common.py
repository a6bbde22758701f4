"""What every image builder shares: the Image result and the cached build around a builder."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iot_tools.images.cache import cache_dir


@dataclass(frozen=True)
class Image:
    """A built image: its reference (what the chart and containerd call it) and its
    docker-archive tarball; `cache_hit` says whether this call found it already built."""

    name: str
    reference: str
    archive: Path
    cache_hit: bool = False
    build_seconds: float = 0.0


class ImageBuildError(RuntimeError):
    pass


def cached_build(
    name: str, reference: str, key: str, builder: Callable[[Path], None],
    out_dir: Path | None = None,
) -> Image:
    """The archive of `name` for input hash `key`: from the cache, else `builder(path)` writes
    it there. A lock per image name keeps two processes (a test and `make cluster`) from
    building the same image at once; older archives of the same name are removed once a new
    one exists (a rootfs image is ~100 MB)."""
    folder = cache_dir()
    target = folder / f"{name}-{key}.tar"
    started = time.monotonic()
    with (folder / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hit = target.is_file()
        if not hit:
            builder(target)
            if not target.is_file():
                raise ImageBuildError(f"the {name} builder wrote no archive at {target}")
            for stale in folder.glob(f"{name}-*.tar"):
                if stale != target:
                    stale.unlink(missing_ok=True)
    archive = target
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        archive = out_dir / f"{name}.tar"
        archive.unlink(missing_ok=True)
        try:
            os.link(target, archive)
        except OSError:  # another filesystem
            shutil.copyfile(target, archive)
    return Image(name, reference, archive, hit, time.monotonic() - started)
