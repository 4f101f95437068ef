"""The one Celery task, `zoomtune.run_trial`: a thin shell around `execute`.

The task runs in a pool process. What the pool process cannot report itself is reported by the
worker's main process, which watches it:

- the process died (OOM killer, segfault, `os.kill(os.getpid(), 9)`): the attempt is handed back
  at once, as the next attempt, or FAILED as "worker lost (signal 9)" when attempts ran out;
- the hard time limit killed it: the trial is FAILED as a timeout;
- a cold shutdown (SIGQUIT, preemption) ends it: the attempt is handed back at once.

Each of these is fenced by host and pid in the store, so it can only touch the attempt that this
very process was running.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, Task, signals
from celery.worker.request import Request

from zoomtune.common.errors import MessageError, ZoomtuneError
from zoomtune.common.settings import TASK_NAME
from zoomtune.common.trial import TrialMessage
from zoomtune.workers.execute import WorkerRuntime, execute
from zoomtune.workers.intake import allow_only_trials

log = logging.getLogger("zoomtune.worker")

POOL_WATCH_INTERVAL = 1.0
"""Seconds between the main process's checks for dead pool processes. Celery notices a dead
pool process through its exit pipe, which does not always fire, and otherwise only on a 5 s
timer; checking every second hands a killed trial back within about a second."""


def lost_reason(exc: BaseException) -> str:
    """'worker lost (signal 9)' from billiard's 'Worker exited prematurely: signal 9 (SIGKILL)'."""
    text = str(exc)
    signal_match = re.search(r"signal (\d+)", text)
    if signal_match:
        return f"worker lost (signal {signal_match.group(1)})"
    code_match = re.search(r"exitcode (\d+)", text)
    if code_match:
        return f"worker lost (exit code {code_match.group(1)})"
    return f"worker lost ({text})"


def _message(request: Request) -> TrialMessage | None:
    args = request.args
    try:
        return TrialMessage.from_dict(args[0] if args else None)
    except MessageError:
        return None


def make_request_class(runtime: WorkerRuntime) -> type[Request]:
    """A Request that reports, from the main process, what the pool process could not."""

    class TrialRequest(Request):  # type: ignore[misc]
        def on_timeout(self, soft: bool, timeout: float) -> None:
            super().on_timeout(soft, timeout)
            message = _message(self)
            if soft or message is None or self.worker_pid is None:
                return
            reason = f"timeout: killed at the {timeout:g}s hard time limit"
            _report(
                lambda: runtime.store(message.study).fail_attempt(
                    message.trial, message.attempt, runtime.host, self.worker_pid, reason
                )
            )

        def on_failure(
            self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
        ) -> None:
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
            exc = getattr(exc_info, "exception", None)
            exc = getattr(exc, "exc", exc)  # unwrap ExceptionWithTraceback
            message = _message(self)
            if not isinstance(exc, WorkerLostError) or message is None or self.worker_pid is None:
                return
            reason = lost_reason(exc)
            log.warning("trial %d attempt %d: %s", message.trial, message.attempt, reason)
            _report(
                lambda: runtime.store(message.study).abandon(
                    message.trial, message.attempt, runtime.host, self.worker_pid, reason
                )
            )

        def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
            # Celery cancels the running requests on a cold shutdown (SIGQUIT, or SIGTERM with
            # REMAP_SIGTERM=SIGQUIT) before it tells anyone: hand the attempt back first, then
            # let Celery terminate its process.
            message = _message(self)
            if message is not None and self.worker_pid is not None:
                log.warning(
                    "cold shutdown: handing back trial %d attempt %d",
                    message.trial,
                    message.attempt,
                )
                _report(
                    lambda: runtime.store(message.study).abandon(
                        message.trial,
                        message.attempt,
                        runtime.host,
                        self.worker_pid,
                        "worker shut down (cold)",
                    )
                )
            super().cancel(pool, signal=signal, emit_retry=emit_retry)

    return TrialRequest


def _report(call: Any) -> None:
    try:
        outcome = call()
        log.info("store answered %s", outcome)
    except ZoomtuneError as exc:
        log.error("could not report to the study store: %s", exc)


def register_tasks(app: Celery, runtime: WorkerRuntime) -> Task:
    """Register `zoomtune.run_trial` on `app`, bound to this worker's runtime, as the only task
    its worker runs (see `zoomtune.workers.intake`)."""

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        bind=True,
        Request=make_request_class(runtime),
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def run_trial(self: Task, message: object) -> str:
        return execute(message, runtime)

    def watch_pool(sender: Any = None, **_: Any) -> None:
        hub = getattr(sender, "hub", None)
        maintain_pool = getattr(getattr(sender, "pool", None), "maintain_pool", None)
        if hub is not None and callable(maintain_pool):
            hub.call_repeatedly(POOL_WATCH_INTERVAL, maintain_pool)

    signals.worker_ready.connect(watch_pool, weak=False)
    allow_only_trials(app)
    return run_trial
