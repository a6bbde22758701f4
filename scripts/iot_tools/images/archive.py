"""Writes docker-archive tarballs (the format `docker save` writes and `ctr images import`
reads): manifest.json, one config JSON and uncompressed layer tars, named by their digests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Creation time of every image: a fixed instant keeps the config (and so the image id) a
# function of the contents alone.
CREATED = "2024-01-01T00:00:00Z"
# Kernel filesystems and runtime state the runtime mounts over: their contents never belong
# in a layer (mmdebstrap leaves device nodes in /dev).
_EMPTY_DIRS = ("./dev", "./proc", "./sys", "./run", "./tmp")


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (what `docker inspect` shows under Config)."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    exposed_ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    def as_json(self) -> dict:
        config: dict = {"Env": self.env}
        if self.entrypoint is not None:
            config["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            config["Cmd"] = self.cmd
        if self.user:
            config["User"] = self.user
        if self.working_dir:
            config["WorkingDir"] = self.working_dir
        if self.exposed_ports:
            config["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.volumes:
            config["Volumes"] = {path: {} for path in self.volumes}
        if self.labels:
            config["Labels"] = dict(sorted(self.labels.items()))
        if self.stop_signal:
            config["StopSignal"] = self.stop_signal
        return config


@dataclass(frozen=True)
class Layer:
    """One layer tar on disk and what made it (the config's history entry)."""

    path: Path
    created_by: str


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def layer_from_tree(
    root: Path, out: Path, created_by: str, *, runtime_dirs_empty: bool = True,
) -> Layer:
    """A layer of everything under `root` (owners, modes, links, xattrs kept; the contents of
    /dev, /proc, /sys, /run and /tmp left out unless `runtime_dirs_empty` is false, the
    directories themselves kept). GNU tar: it
    is many times faster than tarfile on a Debian rootfs and keeps hard links as links."""
    excludes = [f"--exclude={directory}/*" for directory in _EMPTY_DIRS if runtime_dirs_empty]
    subprocess.run(
        ["tar", "--create", "--file", str(out), "--directory", str(root), "--numeric-owner",
         "--sort=name", "--xattrs", "--xattrs-include=security.capability", *excludes, "."],
        check=True, capture_output=True, timeout=600,
    )
    return Layer(out, created_by)


def layer_from_files(
    files: dict[str, tuple[Path | bytes, int]], directories: dict[str, int], out: Path,
    created_by: str, owner: tuple[int, int] = (0, 0),
) -> Layer:
    """A small layer from explicit entries: `files` maps an in-image path to (source file or
    bytes, mode), `directories` an in-image directory to its mode; every entry owned by
    `owner`. Parent directories not listed come from the layers below."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, mode in sorted(directories.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
            info.uid, info.gid = owner
            archive.addfile(info)
        for name, (source, mode) in sorted(files.items()):
            data = source.read_bytes() if isinstance(source, Path) else source
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid, info.gid = owner
            with tempfile.SpooledTemporaryFile() as buffer:
                buffer.write(data)
                buffer.seek(0)
                archive.addfile(info, buffer)
    return Layer(out, created_by)


def write_docker_archive(
    reference: str, layers: list[Layer], config: ImageConfig, out: Path,
) -> str:
    """Writes `out` (a docker-archive tar tagged `reference`) and returns the image id (the
    config's sha256). The layer files are left where they are (a shared base layer is reused)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".staging-") as staging_name:
        staging = Path(staging_name)
        diff_ids: list[str] = []
        layer_paths: list[str] = []
        for layer in layers:
            digest = _sha256_file(layer.path)
            diff_ids.append(f"sha256:{digest}")
            (staging / digest).mkdir(exist_ok=True)
            _place(layer.path, staging / digest / "layer.tar")
            layer_paths.append(f"{digest}/layer.tar")
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": config.as_json(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": layer.created_by} for layer in layers],
        }
        config_bytes = json.dumps(image_config, sort_keys=True, separators=(",", ":")).encode()
        image_id = hashlib.sha256(config_bytes).hexdigest()
        (staging / f"{image_id}.json").write_bytes(config_bytes)
        manifest = [{"Config": f"{image_id}.json", "RepoTags": [reference], "Layers": layer_paths}]
        (staging / "manifest.json").write_text(json.dumps(manifest))
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
            for entry in sorted(staging.iterdir()):
                archive.add(entry, arcname=entry.name, filter=_normalise)
        os.replace(partial, out)
    return image_id


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def read_docker_archive(path: Path) -> tuple[list[dict], dict]:
    """The manifest and the (first) image config of a docker-archive, for checks."""
    with tarfile.open(path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return manifest, config
