"""Settings from the environment, and the Celery configuration built from them."""

from __future__ import annotations

import pytest

from zoomtune.common.celery_app import check_visibility_timeout, make_celery
from zoomtune.common.errors import ConfigError
from zoomtune.common.settings import Settings, redact_url


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ZOOMTUNE_BROKER_URL": "redis://h:1/0",
            "ZOOMTUNE_PREFIX": "zt:",
            "ZOOMTUNE_VISIBILITY_TIMEOUT": "7200",
        }
    )
    assert (settings.broker_url, settings.prefix, settings.visibility_timeout) == (
        "redis://h:1/0",
        "zt:",
        7200.0,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ZOOMTUNE_PREFIX": "no colon"}, "ZOOMTUNE_PREFIX"),
        ({"ZOOMTUNE_VISIBILITY_TIMEOUT": "soon"}, "bad number"),
        ({"ZOOMTUNE_VISIBILITY_TIMEOUT": "-1"}, "positive"),
        ({"ZOOMTUNE_BROKER_URL": "amqp://user:secret@h/"}, "redis://"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env(env)
    assert "secret" not in str(caught.value)


def test_passwords_never_appear_in_printed_urls() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:**@host:6379/0"
    assert redact_url("rediss://user:s3cret@host/0") == "rediss://user:**@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_celery_is_configured_for_at_least_once_delivery_of_data_only() -> None:
    app = make_celery(Settings(broker_url="redis://localhost:1/0", visibility_timeout=7200))
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.result_accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 7200
    assert options["global_keyprefix"] == "zoomtune:"


def test_a_trial_time_limit_longer_than_the_visibility_timeout_is_refused() -> None:
    settings = Settings(broker_url="redis://h/0", visibility_timeout=600)
    check_visibility_timeout(settings, trial_timeout=60)
    with pytest.raises(ConfigError, match="visibility timeout is 600s"):
        check_visibility_timeout(settings, trial_timeout=3600)


def test_a_key_prefix_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match="ZOOMTUNE_PREFIX"):
        Settings.from_env({"ZOOMTUNE_PREFIX": "zt:\n"})
