"""JetStream stream limits and the services' stall/buffer knobs: values become the exact
environment variables the services read (bytes and seconds), and the chart refuses limits that do
not fit the JetStream file store, malformed quantities, and env entries that shadow them, under
Helm 3 and Helm 4. Guards of the templates themselves are exercised with --skip-schema-validation
(the schema stops most of these values first; see test_bad_values.py)."""

from __future__ import annotations

import pytest
from iot_tools import helm

MAJORS = (3, 4)
SERVICES = ("iot-ingest", "iot-evaluator", "iot-ui-iot", "iot-ops-worker", "iot-route-delivery")
STREAM_ENV = {
    "TELEMETRY_MAX_BYTES",
    "TELEMETRY_MAX_AGE_SECONDS",
    "ROUTES_MAX_BYTES",
    "ROUTES_MAX_AGE_SECONDS",
}
# Default file store: min(storageSize 10Gi, maxFileStore 8G = 8 000 000 000) -> 90 % = 7.2e9.
BUDGET = 7_200_000_000
ROUTES_DEFAULT = 1024**3


def _container(docs: list[dict], name: str) -> dict:
    (workload,) = [w for w in helm.workloads(docs) if w["metadata"]["name"] == name]
    return helm.main_container(workload)


def _env(docs: list[dict], name: str) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in _container(docs, name)["env"]}


def _deployment_env(workload: str, container: str, variable: str, *,
                    init: bool = False) -> tuple:
    containers = "initContainers" if init else "containers"
    path = ("Deployment", workload, "spec", "template", "spec", containers, container, "env")
    return (*path, variable, "value")


def _streams_env(variable: str) -> tuple[tuple, ...]:
    """The variable in the `streams` init container of both pods that use NATS: either pod may
    start first, so each one's creates both streams with every limit."""
    return tuple(_deployment_env(workload, "streams", variable, init=True)
                 for workload in ("iot-ingest", "iot-route-delivery"))


def _fails(*set_values: str, major: int = 3, skip_schema: bool = False) -> str:
    """Helm's stderr of a render that must fail."""
    extra = ("--skip-schema-validation",) if skip_schema else ()
    result = helm.template(major=major, set_values=set_values, extra_args=extra)
    assert result.returncode != 0, f"{set_values} rendered"
    assert "Error:" in result.stderr
    return result.stderr


@pytest.mark.parametrize("major", MAJORS)
def test_defaults_render_the_stream_limits_in_bytes_and_seconds(default_renders, major):
    ingest = _env(default_renders[major], "iot-ingest")
    assert {name: ingest[name] for name in STREAM_ENV} == {
        "TELEMETRY_MAX_BYTES": str(4 * 1024**3),
        "TELEMETRY_MAX_AGE_SECONDS": str(7 * 24 * 3600),
        "ROUTES_MAX_BYTES": str(1024**3),
        "ROUTES_MAX_AGE_SECONDS": str(24 * 3600),
    }
    delivery = _env(default_renders[major], "iot-route-delivery")
    assert {name: delivery.get(name) for name in STREAM_ENV} == {
        "TELEMETRY_MAX_BYTES": None,
        "TELEMETRY_MAX_AGE_SECONDS": None,
        "ROUTES_MAX_BYTES": str(1024**3),
        "ROUTES_MAX_AGE_SECONDS": str(24 * 3600),
    }


@pytest.mark.parametrize("major", MAJORS)
def test_services_without_streams_get_no_stream_limits(default_renders, major):
    for name in ("iot-evaluator", "iot-ui-iot", "iot-ops-worker"):
        assert not STREAM_ENV & _env(default_renders[major], name).keys()


@pytest.mark.parametrize("major", MAJORS)
def test_no_service_container_carries_a_variable_twice(default_renders, major):
    for name in SERVICES:
        names = [item["name"] for item in _container(default_renders[major], name)["env"]]
        assert len(names) == len(set(names)), name


def test_a_stream_override_changes_only_that_variable(base_docs, render, changes):
    # not the NATS pod either: stream limits are not in nats.conf, so no checksum roll
    after = render("nats.jetstream.streams.telemetry.maxBytes=2Gi")
    assert changes(base_docs, after) == {
        path: ("4294967296", "2147483648")
        for path in (_deployment_env("iot-ingest", "ingest", "TELEMETRY_MAX_BYTES"),
                     *_streams_env("TELEMETRY_MAX_BYTES"))
    }


def test_a_routes_override_reaches_both_services_that_use_routes(base_docs, render, changes):
    after = render("nats.jetstream.streams.routes.maxAgeSeconds=3600")
    assert changes(base_docs, after) == {
        path: ("86400", "3600")
        for path in (
            _deployment_env("iot-ingest", "ingest", "ROUTES_MAX_AGE_SECONDS"),
            _deployment_env("iot-route-delivery", "route-delivery", "ROUTES_MAX_AGE_SECONDS"),
            *_streams_env("ROUTES_MAX_AGE_SECONDS"),
        )
    }


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("123456", 123_456),
        ("100k", 100_000),
        ("1500M", 1_500_000_000),
        ("3G", 3_000_000_000),
        ("512Mi", 512 * 1024**2),
        ("5Gi", 5 * 1024**3),
        ("6126258176", BUDGET - ROUTES_DEFAULT),
    ],
)
def test_byte_quantities_convert_to_bytes(render, quantity, expected):
    docs = render(f"nats.jetstream.streams.telemetry.maxBytes={quantity}")
    assert _env(docs, "iot-ingest")["TELEMETRY_MAX_BYTES"] == str(expected)


def test_a_number_in_a_values_file_stays_a_whole_number(render, tmp_path):
    # values files hand Helm floats: 2147483648 must not come out as 2.147483648e+09
    values = tmp_path / "streams.yaml"
    values.write_text(
        "nats:\n  jetstream:\n    streams:\n      routes:\n"
        "        maxBytes: 2147483648\n        maxAgeSeconds: 172800\n"
    )
    env = _env(render(values_files=(values,)), "iot-route-delivery")
    assert (env["ROUTES_MAX_BYTES"], env["ROUTES_MAX_AGE_SECONDS"]) == ("2147483648", "172800")


@pytest.mark.parametrize("major", MAJORS)
def test_streams_over_the_file_store_fail_naming_the_values_and_numbers(major):
    stderr = _fails("nats.jetstream.streams.telemetry.maxBytes=7Gi", major=major)
    for text in (
        "the JetStream streams do not fit their file store",
        "nats.jetstream.streams.telemetry.maxBytes 7Gi = 7516192768",
        "nats.jetstream.streams.routes.maxBytes 1Gi = 1073741824",
        "together 8589934592 bytes, but at most 7200000000 bytes (90 % of the file store",
        "nats.jetstream.storageSize 10Gi = 10737418240",
        "nats.jetstream.maxFileStore 8G = 8000000000",
        "raise both nats.jetstream.storageSize and nats.jetstream.maxFileStore",
    ):
        assert text in stderr, f"{text!r} not in:\n{stderr}"


def test_the_budget_is_ninety_percent_inclusive(render):
    at_budget = BUDGET - ROUTES_DEFAULT
    docs = render(f"nats.jetstream.streams.telemetry.maxBytes={at_budget}")
    assert _env(docs, "iot-ingest")["TELEMETRY_MAX_BYTES"] == str(at_budget)
    stderr = _fails(f"nats.jetstream.streams.telemetry.maxBytes={at_budget + 1}")
    assert f"together {BUDGET + 1} bytes, but at most {BUDGET} bytes" in stderr


def test_the_smaller_of_volume_and_max_file_store_bounds_the_streams(render):
    # 7Gi + 1Gi = 8Gi: fits 90 % of a 10Gi volume once NATS may use it all (maxFileStore 20G) ...
    fits = (
        "nats.jetstream.streams.telemetry.maxBytes=7Gi",
        "nats.jetstream.maxFileStore=20G",
    )
    docs = render(*fits)
    assert _env(docs, "iot-ingest")["TELEMETRY_MAX_BYTES"] == str(7 * 1024**3)
    # ... but not when the volume itself is only 8Gi, whatever NATS's own cap says
    stderr = _fails(*fits, "nats.jetstream.storageSize=8Gi")
    assert "8589934592 bytes = the smaller of nats.jetstream.storageSize 8Gi = 8589934592" in stderr


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        (
            "nats.jetstream.streams.telemetry.maxBytes=4GB",
            'nats.jetstream.streams.telemetry.maxBytes "4GB" is not a byte quantity',
        ),
        (
            "nats.jetstream.streams.routes.maxBytes=1.5.Gi",
            'nats.jetstream.streams.routes.maxBytes "1.5.Gi" is not a byte quantity',
        ),
        (
            "nats.jetstream.streams.telemetry.maxBytes=0",
            "nats.jetstream.streams.telemetry.maxBytes is 0: a stream needs room, set it above 0",
        ),
        (
            "nats.jetstream.streams.routes.maxBytes=-1Gi",
            "nats.jetstream.streams.routes.maxBytes is -1Gi: a stream needs room",
        ),
        (
            "nats.jetstream.streams.routes.maxAgeSeconds=59",
            "nats.jetstream.streams.routes.maxAgeSeconds is 59 but must be at least 60",
        ),
        (
            "nats.jetstream.streams.telemetry.maxAgeSeconds=7d",
            'nats.jetstream.streams.telemetry.maxAgeSeconds "7d" is not a whole number of seconds',
        ),
    ],
)
def test_template_guards_name_the_field_without_the_schema(assignment, expected, major):
    stderr = _fails(assignment, major=major, skip_schema=True)
    assert expected in stderr, stderr


@pytest.mark.parametrize("major", MAJORS)
def test_worker_stall_seconds_reaches_all_five_services(render, major):
    docs = render("services.workerStallSeconds=300", major=major)
    assert {name: _env(docs, name)["WORKER_STALL_SECONDS"] for name in SERVICES} == dict.fromkeys(
        SERVICES, "300"
    )


@pytest.mark.parametrize(
    ("assignment", "source"),
    [
        ("ingest.env.TELEMETRY_MAX_BYTES=1", "nats.jetstream.streams.telemetry.maxBytes"),
        (
            "routeDelivery.env.ROUTES_MAX_AGE_SECONDS=60",
            "nats.jetstream.streams.routes.maxAgeSeconds",
        ),
        ("opsWorker.env.WORKER_STALL_SECONDS=5", "services.workerStallSeconds"),
        ("uiIot.env.HEALTH_PORT=9000", "nothing (the chart derives it)"),
    ],
)
def test_env_may_not_shadow_what_the_chart_sets(assignment, source):
    dotted = assignment.split("=")[0]
    key = dotted.split(".")[0]
    stderr = _fails(assignment)
    assert f"{dotted} is set by the chart itself: remove it from {key}.env and set {source}" in (
        stderr
    ), stderr


def test_ingest_buffer_may_take_half_the_memory_limit(render):
    # 64Mi / 2 = 33554432 = the default buffer: allowed; 63Mi is not
    docs = render("ingest.resources.limits.memory=64Mi")
    assert _env(docs, "iot-ingest")["MAX_BUFFERED_BYTES"] == "33554432"
    stderr = _fails("ingest.resources.limits.memory=63Mi")
    assert (
        "ingest.env.MAX_BUFFERED_BYTES (33554432) exceeds half of ingest.resources.limits.memory"
        " (63Mi = 66060288 bytes, half = 33030144)"
    ) in stderr
    assert "lower ingest.env.MAX_BUFFERED_BYTES or raise ingest.resources.limits.memory" in stderr


def test_ingest_buffer_guard_counts_the_code_default_when_unset(render):
    # with the key removed the service falls back to 33554432, and so does the guard
    stderr = _fails("ingest.env.MAX_BUFFERED_BYTES=null", "ingest.resources.limits.memory=48Mi")
    assert "ingest.env.MAX_BUFFERED_BYTES (33554432) exceeds half" in stderr


@pytest.mark.parametrize(
    ("memory", "limit"),
    [("0.1e9", 100_000_000), ("1.5Gi", 1_610_612_736), ("134217728", 134_217_728)],
)
def test_ingest_buffer_guard_reads_any_memory_limit_form_the_schema_allows(memory, limit):
    stderr = _fails(
        f"ingest.resources.limits.memory={memory}",
        f"ingest.env.MAX_BUFFERED_BYTES={limit // 2 + 1}",
    )
    assert f"({memory} = {limit} bytes, half = {limit // 2})" in stderr


def test_ingest_buffer_must_be_a_whole_number_of_bytes():
    stderr = _fails("ingest.env.MAX_BUFFERED_BYTES=32Mi")
    assert 'ingest.env.MAX_BUFFERED_BYTES "32Mi" must be a whole number of bytes' in stderr
