"""values-schema.json is the one schema: chart/values.schema.json is a symlink to it, `helm
package` ships it byte-identical, and a packaged chart still rejects bad values."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from iot_tools import helm

ROOT_SCHEMA = helm.REPO_ROOT / "values-schema.json"
CHART_SCHEMA = helm.CHART_DIR / "values.schema.json"


def test_chart_schema_is_a_symlink_to_the_root_schema():
    assert CHART_SCHEMA.is_symlink()
    assert CHART_SCHEMA.resolve() == ROOT_SCHEMA.resolve()


def test_schema_is_draft_07():
    import json

    assert (
        json.loads(ROOT_SCHEMA.read_text())["$schema"] == "http://json-schema.org/draft-07/schema#"
    )


@pytest.fixture(scope="module", params=[3, 4])
def packaged(request, tmp_path_factory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp(f"package-helm{request.param}")
    result = helm.run_helm(request.param, "package", str(helm.CHART_DIR), "--destination", str(out))
    assert result.returncode == 0, result.stderr
    (archive,) = out.glob("iot-platform-*.tgz")
    return request.param, archive


def test_package_ships_the_schema_byte_identical(packaged):
    _, archive = packaged
    with tarfile.open(archive) as tar:
        member = tar.extractfile("iot-platform/values.schema.json")
        assert member is not None
        assert member.read() == ROOT_SCHEMA.read_bytes()


def test_packaged_chart_rejects_bad_values(packaged):
    major, archive = packaged
    bad = helm.template(major=major, chart=archive, set_values=("probes.readiness.periodSecond=5",))
    assert bad.returncode != 0
    assert "'periodSecond' not allowed" in bad.stderr
    good = helm.template(major=major, chart=archive)
    assert good.returncode == 0, good.stderr
