"""How the round loop sends trial messages: a `Dispatcher`, and the Celery one it uses.

The loop never talks to Celery directly; tests give it a dispatcher of their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from celery import Celery

from zoomtune.common.celery_app import PUBLISH_RETRY_POLICY
from zoomtune.common.errors import StudyCancelled
from zoomtune.common.settings import TASK_NAME
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import StudyState, Trial, TrialMessage

log = logging.getLogger("zoomtune.coordinator")

CANCEL_CHECK_SECONDS = 0.2
"""While it publishes many messages (a round of 100,000 trials takes minutes), the loop reads
the study's state this often, and stops at once when the study was cancelled: one read per
0.2 s, not one per message."""


class Dispatcher(Protocol):
    """Sends trial messages to workers; the loop never talks to Celery directly."""

    def send(self, message: TrialMessage, queue: str, timeout: float) -> None: ...

    def queue_length(self, queue: str) -> int: ...


ARGS_REPR_CHARS = 1024
"""Celery's own cap on the argument text it shows (Flower, task events)."""


class CeleryDispatcher:
    """Publishes `zoomtune.run_trial` tasks by name (the coordinator never imports workers)."""

    def __init__(self, app: Celery, store: StudyStore, prefix: str) -> None:
        self._app = app
        self._client = store.client
        self._prefix = prefix
        self._producer: Any = None

    def send(self, message: TrialMessage, queue: str, timeout: float) -> None:
        # The soft limit raises inside the objective (a clean FAILED "timeout"); the hard limit,
        # a little later, kills a trial that ignores it.
        if self._producer is None:
            # One producer for the whole study: acquiring one per message doubles its cost.
            self._producer = self._app.producer_pool.acquire(block=True)
        args = [message.to_dict()]
        self._app.send_task(
            TASK_NAME,
            producer=self._producer,
            args=args,
            # What Flower shows of the arguments. Celery would build it with its own saferepr,
            # a tenth of the coordinator's CPU per trial (measured: 0.3 of 2.7 ms); a message is
            # a few scalars (at most 64 KiB), so a plain repr is safe and shows the same.
            argsrepr=repr(args)[:ARGS_REPR_CHARS],
            kwargsrepr="{}",
            queue=queue,
            soft_time_limit=timeout,
            time_limit=timeout + max(5.0, 0.05 * timeout),
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )

    def queue_length(self, queue: str) -> int:
        return int(self._client.llen(f"{self._prefix}{queue}"))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.release()
            self._producer = None


class TrialSender:
    """Sends trials of one study as messages, and remembers when it sent each attempt (which
    `zoomtune.coordinator.decide.lost_messages` needs)."""

    def __init__(self, spec: StudySpec, store: StudyStore, dispatcher: Dispatcher, queue: str):
        self.spec = spec
        self.store = store
        self.dispatcher = dispatcher
        self.queue = queue
        self.sent_at: dict[tuple[int, int], float] = {}
        """Monotonic time of the last send, by (trial, attempt)."""

    def send_all(self, trials: Sequence[Trial]) -> None:
        """Send `trials`; every `CANCEL_CHECK_SECONDS` meanwhile, stop (StudyCancelled) if the
        study was cancelled, rather than publishing messages that workers would only drop."""
        next_check = time.monotonic() + CANCEL_CHECK_SECONDS
        for trial in trials:
            if time.monotonic() >= next_check:
                self._stop_if_cancelled()
                next_check = time.monotonic() + CANCEL_CHECK_SECONDS
            self.send(trial)

    def _stop_if_cancelled(self) -> None:
        meta = self.store.meta()
        if meta.get("state") == StudyState.CANCELLED:
            reason = meta.get("message") or "no reason given"
            raise StudyCancelled(f"study {self.spec.name!r} was cancelled: {reason}")

    def send(self, trial: Trial) -> None:
        """Send `trial`'s current attempt; a failed publish is logged, and the trial, still
        QUEUED, is sent again when the loop finds its message lost."""
        message = TrialMessage(
            study=self.spec.name,
            trial=trial.number,
            attempt=trial.attempt,
            objective=self.spec.objective.name,
            params=dict(trial.params),
            rungs=trial.rungs,
        )
        self.sent_at[(trial.number, trial.attempt)] = time.monotonic()
        try:
            self.dispatcher.send(message, self.queue, self.spec.resources.timeout)
        except Exception as exc:  # kombu raises its own errors; the trial stays QUEUED
            log.warning("could not send trial %d (it will be re-sent): %s", trial.number, exc)
