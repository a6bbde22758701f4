"""PersistentVolumes for the cluster's claims: a small provisioner of our own.

A bare cluster has none, and StatefulSets' claims would stay Pending. The cluster has a
default StorageClass `local-path` naming this provisioner; every Pending claim of that class
gets a hostPath PersistentVolume of exactly the requested size, bound to it (claimRef), with
its directory under <state>/volumes. A Released volume of ours (its claim deleted) is deleted
with its directory, as reclaimPolicy Delete says. Polling once a second is plenty for one
node and needs no watch machinery.

`python -m iot_tools.cluster.provisioner --dir STATE_DIR` (started by `up`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import ssl
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from iot_tools.apiserver import ApiAccess
from iot_tools.cluster.layout import Layout

STORAGE_CLASS = "local-path"
PROVISIONER = "iot-platform.local/hostpath"
ANNOTATION = "pv.kubernetes.io/provisioned-by"


def storage_class() -> dict:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


@dataclass
class Provisioner(ApiAccess):
    url: str
    token: str
    ca_file: Path
    volumes: Path

    def once(self) -> None:
        status, claims = self.request("GET", "/api/v1/persistentvolumeclaims")
        if status != 200:
            raise RuntimeError(f"listing claims: {status} {claims}")
        for claim in claims["items"]:
            if (claim.get("status", {}).get("phase") == "Pending"
                    and claim["spec"].get("storageClassName") == STORAGE_CLASS
                    and not claim["spec"].get("volumeName")):
                self._provision(claim)
        status, volumes = self.request("GET", "/api/v1/persistentvolumes")
        if status != 200:
            raise RuntimeError(f"listing volumes: {status} {volumes}")
        for volume in volumes["items"]:
            ours = volume["metadata"].get("annotations", {}).get(ANNOTATION) == PROVISIONER
            if ours and volume.get("status", {}).get("phase") in {"Released", "Failed"}:
                self._delete(volume)

    def _provision(self, claim: dict) -> None:
        meta = claim["metadata"]
        name = f"pvc-{meta['uid']}"
        directory = self.volumes / f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        # Any pod user may write (the chart's pods run as non-root users of their own).
        directory.chmod(0o777)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {ANNOTATION: PROVISIONER}},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"].get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": claim["spec"].get("volumeMode", "Filesystem"),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta["namespace"], "name": meta["name"],
                             "uid": meta["uid"]},
            },
        }
        status, answer = self.request("POST", "/api/v1/persistentvolumes", volume)
        if status not in {201, 409}:
            print(f"provisioner: creating {name} for {meta['namespace']}/{meta['name']}: "
                  f"{status} {answer.get('message', answer)}", flush=True)
        elif status == 201:
            print(f"provisioner: {name} ({volume['spec']['capacity']['storage']}) at "
                  f"{directory} for {meta['namespace']}/{meta['name']}", flush=True)

    def _delete(self, volume: dict) -> None:
        name = volume["metadata"]["name"]
        status, answer = self.request("DELETE", f"/api/v1/persistentvolumes/{name}")
        if status in {200, 202, 404}:
            path = Path(volume["spec"].get("hostPath", {}).get("path", ""))
            if path.parent == self.volumes:
                shutil.rmtree(path, ignore_errors=True)
            print(f"provisioner: deleted released {name}", flush=True)
        else:
            print(f"provisioner: deleting {name}: {status} {answer}", flush=True)

    def run(self, interval: float = 1.0) -> None:
        while True:
            # A restarting API server is no reason to stop: try again next round.
            with contextlib.suppress(OSError, ssl.SSLError, urllib.error.URLError,
                                     RuntimeError):
                self.once()
            time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.cluster.provisioner")
    parser.add_argument("--dir", type=Path, required=True, help="the cluster's state dir")
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve())
    layout.load()
    token = json.loads((layout.directory / "credentials.json").read_text())["provisioner"]
    Provisioner(layout.api_url, token, layout.ca_file, layout.volumes).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
