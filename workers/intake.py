"""What a worker lets in from its trial queues, decided from a message's headers alone.

Left to themselves, kombu and Celery act on a message before zoomtune sees it: kombu
decompresses a body that has a `compression` header as soon as it builds the message (a 100 KB
gzip of zeros becomes 100 MB in the worker's main process), the main process then decodes the
body, and Celery runs any task in its registry, its own canvas tasks included (`celery.group`,
`celery.chord`, `celery.map`, `celery.accumulate`, ...), which publish further messages. The
coordinator only ever sends `zoomtune.run_trial`, as uncompressed JSON of a few hundred bytes.

So on the task queues a worker refuses, before its body is decoded, every message that is
compressed, names another task (or none) or is larger than a trial message can be: the message
is acked and logged in one line, nothing else happens. The app's registry holds
`zoomtune.run_trial` alone as well (Celery's built-in tasks are removed), so even a message
that got past this check could run nothing else. Before any of this, the worker's transport
(`workers.transport`) drops queue entries that are not message envelopes at all.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from celery import Celery, bootsteps
from celery.worker.consumer.tasks import Tasks
from kombu.transport import virtual

from common.errors import ConfigError, MessageError
from common.settings import TASK_NAME
from common.trial import MAX_MESSAGE_BYTES
from workers.transport import trial_queue_transport

log = logging.getLogger("zoomtune.worker")

MAX_ENCODED_BODY = 2 * MAX_MESSAGE_BYTES
"""The longest body (base64 text, as kombu stores it in Redis) a trial message can have: the
message itself is at most MAX_MESSAGE_BYTES, base64 adds a third, Celery's wrapper a little."""


class MessageRefused(MessageError):
    """A message on a trial queue that the worker drops unread (see `refusal`)."""


def refusal(headers: object, encoded_body: object) -> str | None:
    """Why a message with these headers and this encoded body is refused; None to accept it.

    Only the headers and the body's length are looked at: nothing is decoded.
    """
    if not isinstance(headers, Mapping):
        return f"a message without headers: this worker runs only {TASK_NAME}"
    compression = headers.get("compression")
    if compression:
        return (
            f"a compressed message ({str(compression)[:64]!r}): the coordinator never "
            "compresses, so it is dropped without being decompressed"
        )
    task = headers.get("task")
    if task != TASK_NAME:
        shown = str(task)[:128] if isinstance(task, str) else task
        return f"a message for task {shown!r}: this worker runs only {TASK_NAME}"
    size = len(encoded_body) if isinstance(encoded_body, str | bytes) else 0
    if size > MAX_ENCODED_BODY:
        return (
            f"a message with a body of {size} bytes (encoded): a trial message is at most "
            f"{MAX_MESSAGE_BYTES} bytes"
        )
    return None


class TrialDelivery(virtual.Message):
    """A message from a trial queue, refused (with its body left out) when `refusal` says so.

    kombu's Message skips decompression when it already carries an error, and its consumer then
    hands the error to `on_decode_error` instead of to Celery's task handler."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        raw = payload if isinstance(payload, Mapping) else {}
        reason = refusal(raw.get("headers"), raw.get("body"))
        if reason is not None:
            try:
                raise MessageRefused(reason)
            except MessageRefused:
                self.errors = [sys.exc_info()]
            payload = {**raw, "body": "", "headers": {}}
        super().__init__(payload, channel=channel, **kwargs)  # type: ignore[no-untyped-call]


class GuardTrialQueues(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step that runs after Celery's task consumer starts (at every reconnection):
    its channel builds `TrialDelivery` messages, and refused ones are acked with one line."""

    requires = (Tasks,)

    def start(self, parent: Any) -> None:
        consumer = parent.task_consumer
        channel = consumer.channel
        if not isinstance(channel, virtual.Channel):
            raise ConfigError(
                f"the broker's transport {type(channel).__module__} is not supported: "
                "zoomtune workers run on Redis"
            )
        channel.Message = TrialDelivery
        decode_error = consumer.on_decode_error

        def on_decode_error(message: Any, exc: BaseException) -> None:
            if not isinstance(exc, MessageRefused):
                decode_error(message, exc)
                return
            queue = (message.delivery_info or {}).get("routing_key", "?")
            log.warning("refused %s (queue %s)", exc, queue)
            message.ack()

        consumer.on_decode_error = on_decode_error


def allow_only_trials(app: Celery) -> None:
    """Make `app`'s worker run `zoomtune.run_trial` and nothing else (register it first), on a
    transport that drops queue entries that are not message envelopes."""
    if TASK_NAME not in app.tasks:
        raise ConfigError(f"register {TASK_NAME} before limiting the worker to it")
    app.conf.broker_transport = trial_queue_transport(str(app.conf.broker_url))
    for name in [name for name in app.tasks if name != TASK_NAME]:
        app.tasks.unregister(name)
    app.steps["consumer"].add(GuardTrialQueues)


__all__ = [
    "MAX_ENCODED_BODY",
    "GuardTrialQueues",
    "MessageRefused",
    "TrialDelivery",
    "allow_only_trials",
    "refusal",
]
