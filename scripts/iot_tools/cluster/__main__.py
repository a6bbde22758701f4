"""`python -m iot_tools.cluster up|down|status [--dir DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iot_tools.cluster import Cluster, ClusterError, default_directory


def _images(only: list[str] | None) -> list[object]:
    # Images are iot_tools.images' business (built here, cached); we only import them.
    from iot_tools import images

    return [images.build(name) for name in (only or images.names())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=None,
                        help="state directory (default: $CLUSTER_DIR or <repo>/.cluster)")
    parser.add_argument("--image", action="append", metavar="NAME",
                        help="up: import only this image of iot_tools.images (repeatable; "
                        "default: every image it builds)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="up: seconds until the node must be Ready")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir or default_directory())
    try:
        if args.command == "up":
            only = args.image
            if only and "pause" not in only:
                only = ["pause", *only]
            cluster.up(_images(only), timeout=args.timeout)
            return 0
        if args.command == "down":
            return 1 if cluster.down() else 0
        healthy, report = cluster.status()
        print(report)
        return 0 if healthy else 1
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
