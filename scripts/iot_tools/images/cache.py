"""The archive cache: a built image is kept under <tools>/images keyed by a hash of its inputs,
so a rebuild with unchanged inputs is a file lookup and a changed input builds anew."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from iot_tools.helm import REPO_ROOT


def cache_dir() -> Path:
    """<tools>/images ($TOOLS_DIR like every bootstrapped tool, else .tools: git-ignored)."""
    folder = Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools")) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class InputHash:
    """A sha256 over named inputs (strings, bytes, files, trees of files); the name of each
    input is hashed too, so moving content between inputs changes the key."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def _part(self, name: str, data: bytes) -> None:
        self._digest.update(f"{name}\0{len(data)}\0".encode())
        self._digest.update(data)

    def text(self, name: str, value: str) -> InputHash:
        self._part(name, value.encode())
        return self

    def file(self, name: str, path: Path) -> InputHash:
        self._part(name, path.read_bytes())
        return self

    def tree(self, name: str, root: Path, skip: tuple[str, ...] = ()) -> InputHash:
        """Every regular file under `root` (path, executable bit, contents), in path order;
        directories named in `skip` (e.g. __pycache__, tests) are left out."""
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if any(part in skip for part in relative.parts) or not path.is_file():
                continue
            executable = "x" if os.access(path, os.X_OK) else "-"
            self._part(f"{name}/{relative.as_posix()}:{executable}", path.read_bytes())
        return self

    def code(self, builder_file: str) -> InputHash:
        """The builder's own source and the archive writer's: changing how an image is made
        rebuilds it."""
        here = Path(__file__).parent
        for path in sorted({Path(builder_file), here / "archive.py", here / "common.py"}):
            self.file(f"code:{path.name}", path)
        return self

    def hexdigest(self, length: int = 16) -> str:
        return self._digest.hexdigest()[:length]
