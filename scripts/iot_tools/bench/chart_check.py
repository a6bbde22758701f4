"""One render of the chart plus its full offline validation, in a fresh process, as a user or
CI would run it: `helm template` (which also checks the values schema), YAML parsing, then
every object strictly against each Kubernetes version the chart supports.

`python -m iot_tools.bench.chart_check --helm 3` prints one JSON line of timings (s)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import yaml

from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS, kube_errors


def check(major: int) -> dict[str, float | int]:
    began = time.monotonic()
    result = helm.template(major=major)
    rendered = time.monotonic()
    if result.returncode != 0:
        raise SystemExit(f"helm template failed:\n{result.stderr}")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    parsed = time.monotonic()
    errors = [error for version in KUBE_VERSIONS for doc in docs
              for error in kube_errors(doc, version)]
    validated = time.monotonic()
    if errors:
        raise SystemExit("validation failed:\n" + "\n".join(errors))
    return {"template_s": rendered - began, "parse_s": parsed - rendered,
            "validate_s": validated - parsed, "objects": len(docs),
            "kube_versions": len(KUBE_VERSIONS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.bench.chart_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--helm", type=int, choices=(3, 4), default=3)
    json.dump(check(parser.parse_args(argv).helm), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
