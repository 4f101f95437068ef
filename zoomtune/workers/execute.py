"""Run one attempt of one trial: check the message, take the lease, run the objective while a
heartbeat renews the lease, and record a fenced result.

Nothing here trusts the message: it must decode exactly, name an objective from this worker's
allow-list that matches the study's, and carry params inside the study's space; otherwise it is
dropped and logged without running anything. The attempt starts only if the message's params
are the ones stored for its trial, and its result is recorded only if it still owns the trial
(see `zoomtune.common.store`).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from zoomtune.common.errors import BrokerError, MessageError, ObjectiveError, StoreError
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import MAX_ERROR_CHARS, TrialMessage, TrialResult, TrialStatus
from zoomtune.workers.context import TrialContext
from zoomtune.workers.registry import Objective, ObjectiveRegistry

log = logging.getLogger("zoomtune.worker")

SPEC_CACHE_SECONDS = 30.0
"""How long a worker reuses a study's spec before reading it again."""

RESULT_PATIENCE_SECONDS = 300.0
"""How long a finished trial keeps trying to record its result while Redis is unreachable (a
restart, a failover): the result is kept if the attempt still owns the trial when Redis is back,
which the coordinator allows for one lease after an outage."""


@dataclass
class WorkerRuntime:
    """What a worker process needs to run trials; made once when the worker starts."""

    settings: Settings
    registry: ObjectiveRegistry
    worker_name: str
    device: str = "cpu"
    host: str = field(default_factory=socket.gethostname)
    _client: redis.Redis | None = field(default=None, repr=False)
    _specs: dict[str, tuple[float, StudySpec]] = field(default_factory=dict, repr=False)
    _stores: dict[str, StudyStore] = field(default_factory=dict, repr=False)
    _heartbeat: tuple[int, Heartbeat] | None = field(default=None, repr=False)

    @property
    def client(self) -> redis.Redis:
        # redis-py notices a fork and reconnects, so one client per process is safe.
        if self._client is None:
            if self.settings.broker_url is None:
                raise BrokerError("the worker has no broker URL")
            self._client = connect(self.settings.broker_url)
        return self._client

    @property
    def heartbeat(self) -> Heartbeat:
        """This process's heartbeat thread (a forked pool process makes its own)."""
        if self._heartbeat is None or self._heartbeat[0] != os.getpid():
            self._heartbeat = (os.getpid(), Heartbeat())
        return self._heartbeat[1]

    def store(self, study: str) -> StudyStore:
        if study not in self._stores:
            self._stores[study] = StudyStore(self.client, self.settings.prefix, study)
        return self._stores[study]

    def spec(self, study: str) -> StudySpec:
        cached = self._specs.get(study)
        if cached is not None and time.monotonic() - cached[0] < SPEC_CACHE_SECONDS:
            return cached[1]
        spec = StudySpec.from_dict(self.store(study).spec(), source=f"study {study!r} in Redis")
        self._specs[study] = (time.monotonic(), spec)
        return spec


@dataclass
class _Beat:
    """The attempt a pool process runs now, and when its lease is next due for renewal."""

    store: StudyStore
    context: TrialContext
    token: str
    interval: float
    lease: float
    due: float


class Heartbeat:
    """One daemon thread per pool process that renews the lease of the attempt it runs.

    The thread lives as long as the process, so a trial pays neither a thread start nor a join
    (on a busy machine those cost milliseconds per trial). It stops renewing an attempt that no
    longer owns its trial. It also watches the worker daemon that forked this process: if the
    daemon dies (SIGKILL, machine loss), nobody would ack the message, so the process exits and
    the trial goes back to the queue when its lease expires.
    """

    PARENT_CHECK = 1.0
    """Seconds between checks that the worker daemon is alive while no trial runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._beat: _Beat | None = None
        self._sleeping_until = 0.0
        self._parent = os.getppid()
        self._thread = self._start_thread()

    def _start_thread(self) -> threading.Thread:
        self._stopped.clear()
        thread = threading.Thread(target=self._run, name="zoomtune-heartbeat", daemon=True)
        thread.start()
        return thread

    @contextmanager
    def keep(
        self, store: StudyStore, context: TrialContext, token: str, interval: float, lease: float
    ) -> Iterator[None]:
        """Renew the attempt's lease every `interval` seconds until the block ends."""
        if not self._thread.is_alive():
            self._thread = self._start_thread()
        beat = _Beat(store, context, token, interval, lease, time.monotonic() + interval)
        with self._lock:
            self._beat = beat
            # Waking the thread costs a switch of the GIL; only do it when it would sleep past
            # the first renewal.
            late = self._sleeping_until > beat.due
        if late:
            self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._beat = None

    def stop(self) -> None:
        """End the thread (the next `keep` starts a new one); tests use it to fake a death."""
        self._stopped.set()
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                beat = self._beat
                now = time.monotonic()
                wait = self.PARENT_CHECK if beat is None else beat.due - now
                wait = max(0.0, min(wait, self.PARENT_CHECK))
                self._sleeping_until = now + wait
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopped.is_set():
                return
            if os.getppid() != self._parent:
                log.error("the worker daemon died; this trial process exits")
                os._exit(70)
            with self._lock:
                beat = self._beat
            if beat is None or beat.context.lost or time.monotonic() < beat.due:
                continue
            beat.due = time.monotonic() + beat.interval
            self._renew(beat)

    @staticmethod
    def _renew(beat: _Beat) -> None:
        context = beat.context
        try:
            alive = beat.store.heartbeat(context.number, context.attempt, beat.token, beat.lease)
        except (BrokerError, redis.RedisError) as exc:
            log.warning("trial %d: heartbeat failed, will retry: %s", context.number, exc)
            return
        if not alive:
            log.warning(
                "trial %d attempt %d no longer owns the trial; its result will be dropped",
                context.number,
                context.attempt,
            )
            context.lost = True


def execute(raw: object, runtime: WorkerRuntime) -> str:
    """Run one delivered message; returns what happened ("ok", or why it was dropped)."""
    try:
        message = TrialMessage.from_dict(raw)
    except MessageError as exc:
        log.warning("dropped a malformed trial message: %s", exc)
        return "malformed"
    where = f"study {message.study!r} trial {message.trial} attempt {message.attempt}"
    if message.objective not in runtime.registry:
        log.warning(
            "dropped %s: objective %r is not registered on this worker", where, message.objective
        )
        reject_unknown_objective(runtime, message)
        return "unknown_objective"
    try:
        spec = runtime.spec(message.study)
    except StoreError as exc:
        log.warning("dropped %s: %s", where, exc)
        return "unknown_study"
    if spec.objective.name != message.objective:
        log.warning(
            "dropped %s: objective %r is not the study's %r",
            where,
            message.objective,
            spec.objective.name,
        )
        return "wrong_objective"
    problems = spec.space.problems(message.params)
    if problems:
        log.warning("dropped %s: params outside the study's space: %s", where, "; ".join(problems))
        return "bad_params"

    store = runtime.store(message.study)
    token = secrets.token_hex(16)
    resources = spec.resources
    started = store.start(
        message.trial,
        message.attempt,
        token,
        payload=message.payload(),
        worker=runtime.worker_name,
        host=runtime.host,
        device=runtime.device,
        pid=os.getpid(),
        lease=resources.lease,
    )
    if started.reason == "forged":
        log.warning(
            "dropped %s: its %s are not the trial's (a forged message); nothing ran",
            where,
            started.mismatch,
        )
        return started.reason
    if not started.ok:
        log.info("dropped a delivery of %s: %s", where, started.reason)
        return started.reason

    log.info("started %s on %s", where, runtime.device)
    context = TrialContext(
        study=message.study,
        number=message.trial,
        attempt=message.attempt,
        params=dict(message.params),
        options=dict(spec.objective.options),
        device=runtime.device,
        rungs=started.rungs,
        maximize=spec.maximize,
        _store=store,
        _token=token,
    )
    with runtime.heartbeat.keep(store, context, token, resources.heartbeat, resources.lease):
        result = run_objective(runtime, message.objective, context)
    if context.pruned:
        # However the objective ended after `should_prune()` said True, the trial was pruned
        # (an attempt that lost its trial also lands here: the store drops its result).
        result = TrialResult.pruned(context.last_report)
    retry = resources.retry_failed and result.status is TrialStatus.FAILED
    verdict = record_result(store, message, token, result, retry)
    if verdict in ("ok", "requeued"):
        log.info("finished %s: %s", where, _describe(result))
    else:
        log.warning("result of %s dropped (%s): %s", where, verdict, _describe(result))
    return verdict


def reject_unknown_objective(runtime: WorkerRuntime, message: TrialMessage) -> None:
    """Record on the trial that this worker lacks the study's objective, so that the coordinator
    stops instead of re-sending the trial forever. Only for the study's own objective: a message
    naming another one is not the coordinator's, and is only dropped."""
    try:
        spec = runtime.spec(message.study)
        if spec.objective.name != message.objective:
            return
        reason = (
            f"objective {message.objective!r} is not registered on worker "
            f"{runtime.worker_name} (it has {runtime.registry.names()}); register it there "
            f"(worker start --objective {message.objective}=module:function, or an entry point "
            "of the zoomtune.objectives group)"
        )
        outcome = runtime.store(message.study).reject(
            message.trial,
            message.attempt,
            runtime.worker_name,
            reason[:MAX_ERROR_CHARS],
            payload=message.payload(),
        )
        if outcome == "forged":
            log.warning(
                "trial %d attempt %d: its params are not the trial's (a forged message); "
                "the rejection was not recorded",
                message.trial,
                message.attempt,
            )
    except (StoreError, BrokerError) as exc:
        log.warning("could not record the rejection of trial %d: %s", message.trial, exc)


def record_result(
    store: StudyStore, message: TrialMessage, token: str, result: TrialResult, retry: bool
) -> str:
    """`store.finish`, retried while Redis is unreachable for up to RESULT_PATIENCE_SECONDS."""
    deadline = time.monotonic() + RESULT_PATIENCE_SECONDS
    while True:
        try:
            return store.finish(message.trial, message.attempt, token, result, retry=retry)
        except BrokerError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("trial %d: cannot record its result yet, retrying: %s", message.trial, exc)
            time.sleep(1.0)


def run_objective(runtime: WorkerRuntime, name: str, context: TrialContext) -> TrialResult:
    """Call the objective and turn whatever it does into a TrialResult; never raises."""
    try:
        objective: Objective = runtime.registry.get(name)
    except ObjectiveError as exc:
        return TrialResult.failed(f"objective not available: {exc}")
    try:
        value = objective(dict(context.params), context)
    except Exception as exc:  # any failure of user code is the trial's, not the worker's
        if type(exc).__name__ == "SoftTimeLimitExceeded":
            return TrialResult.failed("timeout: the trial ran past its time limit")
        return TrialResult.failed(_exception_reason(exc))
    return score_result(value)


def score_result(value: object) -> TrialResult:
    """A COMPLETE result for a finite number, else FAILED naming what came back."""
    if isinstance(value, Mapping):
        if "score" not in value:
            keys = sorted(map(str, value))[:10]
            return TrialResult.failed(
                f"objective returned a mapping without a 'score' key (keys: {keys})"
            )
        value = value["score"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:80] + f"... ({len(shown)} chars)"
        return TrialResult.failed(
            f"objective returned {type(value).__name__} {shown}, expected a number"
        )
    score = float(value)
    if math.isnan(score):
        return TrialResult.failed("objective returned NaN")
    if math.isinf(score):
        return TrialResult.failed(f"objective returned {score}")
    return TrialResult.complete(score)


def _exception_reason(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    location = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{location}"[:MAX_ERROR_CHARS]


def _describe(result: TrialResult) -> str:
    if result.status is TrialStatus.COMPLETE:
        return f"score {result.score:.6g}"
    if result.status is TrialStatus.PRUNED:
        if result.last_step is None:
            return "pruned before its first report"
        return f"pruned at step {result.last_step} (value {result.last_value:.6g})"
    return f"{result.status.value}: {result.error}"


__all__ = [
    "Heartbeat",
    "WorkerRuntime",
    "execute",
    "record_result",
    "reject_unknown_objective",
    "run_objective",
    "score_result",
]
