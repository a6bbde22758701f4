"""Configuration parsing: bad settings name their variable; in-process, no network."""

import pytest

from services.common.config import ConfigError, Env, RuntimeSettings, load
from services.common.logs import redact_url
from services.ingest_iot.config import IngestConfig

BASE = {"DATABASE_URL": "postgresql://iot@db:5432/iot", "NATS_URL": "nats://nats:4222"}


def test_defaults_apply_when_only_required_settings_are_given():
    config = IngestConfig.from_env(Env(BASE))
    assert (config.batch_size, config.flush_interval, config.max_payload_bytes) == (
        500, 0.2, 65_536)
    assert config.runtime.health_port == 8080
    assert config.runtime.drain_delay == 5.0


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"NATS_URL": None}, "NATS_URL"),
        ({"DATABASE_URL": "mysql://db/iot"}, "DATABASE_URL"),
        ({"NATS_URL": "http://nats:4222"}, "NATS_URL"),
        ({"NATS_URL": "nats://"}, "NATS_URL"),
        ({"DATABASE_URL": "postgresql://db:notaport/iot"}, "DATABASE_URL"),
        ({"BATCH_SIZE": "abc"}, "BATCH_SIZE"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
        ({"FLUSH_INTERVAL_MS": "-5"}, "FLUSH_INTERVAL_MS"),
        ({"HEALTH_PORT": "70000"}, "HEALTH_PORT"),
        ({"DRAIN_DELAY_SECONDS": "soon"}, "DRAIN_DELAY_SECONDS"),
        ({"DRAIN_DELAY_SECONDS": "nan"}, "DRAIN_DELAY_SECONDS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"IOT_TEST_HOOKS": "maybe"}, "IOT_TEST_HOOKS"),
        ({"MAX_ACK_PENDING": "10"}, "MAX_ACK_PENDING"),  # below BATCH_SIZE
    ],
)
def test_bad_setting_raises_an_error_naming_the_variable(changes, variable):
    environ = {**BASE, **changes}
    environ = {key: value for key, value in environ.items() if value is not None}
    with pytest.raises(ConfigError) as raised:
        IngestConfig.from_env(Env(environ))
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: ")


def test_url_errors_never_echo_the_url():
    secret_url = "mysql://iot:hunter2@db/iot"
    with pytest.raises(ConfigError) as raised:
        IngestConfig.from_env(Env({**BASE, "DATABASE_URL": secret_url}))
    assert "hunter2" not in str(raised.value)


def test_load_exits_with_status_2_and_one_line_naming_the_variable(capsys):
    with pytest.raises(SystemExit) as exited:
        load("ingest_iot", IngestConfig.from_env, {**BASE, "BATCH_SIZE": "lots"})
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["ingest_iot: configuration error: BATCH_SIZE: must be a whole number, "
                     "got 'lots'"]


def test_log_level_is_case_insensitive():
    assert RuntimeSettings.from_env(Env({"LOG_LEVEL": "debug"})).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://iot:s3cret@db:5432/iot", "postgresql://iot:***@db:5432/iot"),
        ("postgresql://iot@db/iot", "postgresql://iot@db/iot"),
        ("nats://:tok@nats:4222", "nats://***@nats:4222"),
    ],
)
def test_redact_url_hides_only_the_password(url, redacted):
    assert redact_url(url) == redacted
