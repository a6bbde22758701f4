"""Container images built here from the project's own files and the package registries'
wheels and Debian packages, never pulled (no registry is reachable): docker-archive tarballs
for `ctr images import`. `python -m iot_tools.images build [--only NAME] [--out DIR]`."""

from __future__ import annotations

from pathlib import Path

from iot_tools.images.common import Image, ImageBuildError
from iot_tools.images.pause import build_pause

__all__ = ["Image", "ImageBuildError", "build", "build_all", "build_pause", "names"]


def _builders() -> dict:
    from iot_tools.images.keycloak import build_keycloak
    from iot_tools.images.nats import build_nats
    from iot_tools.images.postgres import build_postgres
    from iot_tools.images.services import build_services

    return {"pause": build_pause, "services": build_services, "nats": build_nats,
            "postgresql": build_postgres, "keycloak": build_keycloak}


def names() -> list[str]:
    """Every image this package builds, in build order."""
    return list(_builders())


def build(name: str, out_dir: Path | None = None) -> Image:
    """One image by name (`names()`), built or from the cache."""
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown image {name!r}: one of {', '.join(builders)}")
    return builders[name](out_dir)


def build_all(out_dir: Path | None = None) -> list[Image]:
    """Every image, built or from the cache."""
    return [build(name, out_dir) for name in names()]
