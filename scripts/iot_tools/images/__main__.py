"""`python -m iot_tools.images build [--only NAME] [--out DIR]`: builds the images (or finds
them in the cache) and prints reference, archive, size and time of each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iot_tools.images import build, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.images")
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build the images (cached)")
    build_command.add_argument(
        "--only", action="append", choices=names(), metavar="NAME",
        help=f"build only this image (repeatable): {', '.join(names())}",
    )
    build_command.add_argument(
        "--out", type=Path, help="also place each archive here as <name>.tar")
    args = parser.parse_args(argv)
    for name in args.only or names():
        image = build(name, args.out)
        size = image.archive.stat().st_size / 1e6
        source = "cached" if image.cache_hit else "built"
        print(f"{image.reference}\t{image.archive}\t{size:.1f} MB\t{source} in "
              f"{image.build_seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
