"""zoomtune's Celery settings as a config module, for Celery's own tools: Flower, `celery
events`, `celery inspect`.

    ZOOMTUNE_BROKER_URL=redis://HOST:6379/0 celery --config common.celeryconfig flower

zoomtune puts every Celery key and pub/sub channel under its prefix (`zoomtune:`), including the
event channel that Flower listens on and the channel remote control answers on. A Celery tool
started with only `--broker URL` listens on the unprefixed channels and sees no workers and no
tasks. This module gives it the broker URL and transport options that `make_celery` gives the
coordinator and the workers, read once from the same environment (ZOOMTUNE_BROKER_URL,
ZOOMTUNE_PREFIX). It is module-level data because that is what a Celery config module is; the
coordinator and the workers never import it.
"""

from __future__ import annotations

from common.celery_app import transport_options
from common.settings import Settings

_settings = Settings.from_env()

if _settings.broker_url is not None:
    broker_url = _settings.broker_url
broker_transport_options = transport_options(_settings)
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"
