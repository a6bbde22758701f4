"""Offline, strict validation of Kubernetes objects against the OpenAPI schemas that
kubernetes-validate bundles (no cluster, no network). Used by the chart tests and by the
benchmark that times a render plus its validation."""

from __future__ import annotations

import functools
import re

# Kubernetes versions the rendered objects must validate against: oldest supported and newest
# that kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", "1.37.0")


@functools.cache
def _definitions(version: str) -> dict:
    from kubernetes_validate import utils

    return utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )


@functools.cache
def _validator(version: str, kind: str, api_version: str):
    """A strict validator of one kind from the bundled schemas (loaded once per process)."""
    import jsonschema
    import referencing
    from kubernetes_validate import utils

    directory = f"kubernetes-json-schema/v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", version)
    definitions = _definitions(version)
    registry = referencing.Registry().with_resources(
        [
            (schema.get("$id", ""), referencing.Resource.from_contents(schema)),
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def kube_errors(doc: dict, version: str) -> list[str]:
    """Strict-mode schema errors of one object against one Kubernetes version (unknown fields
    are errors)."""
    validator = _validator(version, doc["kind"], doc["apiVersion"])
    return [
        f"{doc['kind']}/{doc['metadata']['name']} at {'.'.join(map(str, error.path))}: "
        f"{error.message}"
        for error in validator.iter_errors(doc)
    ]
