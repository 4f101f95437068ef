"""The distributed round loop around `CoarseToFine`: store -> dispatch -> collect -> tell.

```
until every round is told:
    write every round the search can ask now (once: a round already written is reused) and
    send one Celery task per QUEUED trial; with `[search] lag` > 0 a round goes out while the
    last `lag` trials before it still run (rolling rounds), with lag 0 after the whole round
    before it (a barrier)
    wait on the store's event stream until some trial in flight finishes, meanwhile:
        re-send trials that were handed back or whose lease expired (the reaper)
        re-send QUEUED trials whose message was lost (publish failed, queue lost)
        renew the study lock (stop at once if another coordinator took it)
        stop at once if the study was cancelled (`coordinator cancel`)
    tell the search each finished trial's score (by trial number: the order does not matter)
```

Which results a round is narrowed from is a function of trial numbers, never of timing (see
`CoarseToFine.reference`), so rolling rounds keep the study a function of its seed.

The loop keeps no state that the store does not have: killed at any moment and started again,
it replays the finished rounds into a fresh `CoarseToFine`, re-attaches to the round in flight
and carries on. Because the search is a pure function of the seed and the scores, the study is
the same whether it ran with 1 worker or 40, in any finish order, with or without crashes.

It does the same without being killed whenever Redis restarted (its run_id changed) or was
unreachable: a Redis that crashed may come back from its AOF without its last second of writes
(a result, a round), so what the loop holds in memory may be ahead of the store. It throws its
state away and resumes from the store, which redoes whatever was lost: a lost round is written
again with the same trials, a lost result is run again. For one lease after such a resync the
reaper waits, so that workers whose trials ran through the outage can renew their leases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis
from celery import Celery

from common.celery_app import PUBLISH_RETRY_POLICY
from common.errors import (
    BrokerError,
    LeaseLost,
    StoreError,
    StudyCancelled,
    StudyWiped,
    TrialRejected,
    ZoomtuneError,
)
from common.redis_client import is_refused
from common.settings import QUEUES, TASK_NAME
from common.store import StudyStore
from common.store_records import CoordinatorLock, Event, RoundRecord
from common.study import StudySpec
from common.trial import Rung, StudyState, Trial, TrialMessage, TrialStatus
from coordinator.progress import StudyProgress
from coordinator.pruning import ReferenceCurve, rungs_for
from coordinator.search import CoarseToFine

log = logging.getLogger("zoomtune.coordinator")


SLOW_ANSWER_SECONDS = 2.0
"""A single Redis command that takes this much longer than asked means an outage or a pause."""

EVENT_BATCH_SECONDS = 0.02
"""After a read that found events, the loop lets this long pass before it reads again, so that
one read (and one re-read of the changed trials) takes in the news of many trials at once
rather than one read per trial; a result is noticed at most this much later."""

CANCEL_CHECK_SECONDS = 0.2
"""While it publishes many messages (a round of 100,000 trials takes minutes), the loop reads
the study's state this often, and stops at once when the study was cancelled: one read per
0.2 s, not one per message."""


class _Resync(Exception):
    """Redis restarted or was unreachable: what the loop holds may be ahead of the store."""


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


@dataclass(frozen=True)
class LoopSettings:
    """How often the loop does its housekeeping, and how long it tolerates trouble."""

    tick: float = 1.0
    """Seconds between reaping expired leases, renewing the lock and reconciling."""
    lock_ttl: float = 15.0
    """The study lock expires this long after the coordinator stops renewing it."""
    idle_warning: float = 60.0
    """Warn when trials wait and no worker has started one for this long."""
    outage_limit: float = 300.0
    """Give up when Redis stays unreachable this long."""


@dataclass(frozen=True)
class StudyOutcome:
    state: StudyState  # COMPLETE, FAILED or CANCELLED
    message: str
    best: tuple[Mapping[str, Any], float] | None


class RoundLoop:
    """Runs one study to the end on a study store and a dispatcher."""

    def __init__(
        self,
        spec: StudySpec,
        store: StudyStore,
        dispatcher: Dispatcher,
        progress: StudyProgress,
        settings: LoopSettings | None = None,
        on_round: Callable[[], None] | None = None,
        watch: Callable[[], None] | None = None,
    ) -> None:
        """`on_round` runs after every finished round; `watch` at every housekeeping tick, and
        stops the study by raising (the embedded default checks that its workers still run)."""
        self.spec = spec
        self.store = store
        self.dispatcher = dispatcher
        self.progress = progress
        self.settings = settings or LoopSettings()
        self.on_round = on_round or (lambda: None)
        self.watch = watch or (lambda: None)
        self.queue = QUEUES[spec.resources.queue]
        self._last_event = "0-0"
        self._run_id = ""
        self._outage_since: float | None = None
        self._last_start = time.monotonic()
        self._last_idle_note = time.monotonic()
        self._reap_after = 0.0
        self._sent_at: dict[tuple[int, int], float] = {}
        self._next_housekeeping = 0.0
        self._next_read = 0.0
        self._finished: dict[int, Trial] = {}
        """Finished trials by number: their curves set the early-stopping rungs."""
        self._curves: dict[int, ReferenceCurve] = {}
        """Reference curves already read (a finished trial's reports never change)."""
        self._search: CoarseToFine | None = None

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> StudyOutcome:
        lock = self.store.acquire(self.settings.lock_ttl)
        try:
            return self._run(lock)
        except StudyCancelled as exc:
            # The store already says "cancelled" and refuses every further write.
            best = self._search.best if self._search is not None else None
            return StudyOutcome(StudyState.CANCELLED, str(exc), best)
        finally:
            try:
                self.store.release(lock)
            except ZoomtuneError as exc:
                log.warning("could not release the study lock: %s", exc)

    def _run(self, lock: CoordinatorLock) -> StudyOutcome:
        epoch = self.store.create(lock, self.spec.to_dict(), self.spec.resources.max_attempts)
        meta = self.store.meta()
        if meta.get("state") == StudyState.CANCELLED:
            raise StudyCancelled(
                f"study {self.spec.name!r} was cancelled ({meta.get('message') or 'no reason'})"
                " and does not run again; delete it or give the study a new name"
            )
        self._run_id = self._redis_run_id()
        resync = False
        while True:
            try:
                return self._run_rounds(lock, epoch, resync)
            except _Resync as exc:
                self.progress.note(f"{exc}: re-reading the study from Redis")
            except (BrokerError, redis.ConnectionError, redis.TimeoutError) as exc:
                self._await_redis(exc)
                self.progress.note("Redis is back: re-reading the study from Redis")
            except StoreError as exc:
                # A record that vanished or does not match: a Redis that restarted without
                # its last writes, or a real inconsistency (then stop, naming it).
                fenced = isinstance(exc, LeaseLost | StudyWiped | StudyCancelled)
                if fenced or self._redis_run_id() == self._run_id:
                    raise
                self.progress.note(f"Redis restarted ({exc}): re-reading the study")
            resync = True
            self._run_id = self._redis_run_id()
            # Workers whose trials ran through the outage get one lease to renew them.
            self._reap_after = time.monotonic() + self.spec.resources.lease

    def _run_rounds(self, lock: CoordinatorLock, epoch: str, resync: bool) -> StudyOutcome:
        """Resume from the store and run the remaining rounds; `resync` after a Redis outage.

        Rolling rounds: a round is written and sent as soon as the search can ask it (the
        trials it narrows from are finished), while earlier rounds still run."""
        self.store.renew(lock, epoch)  # first of all: is the study still there, and still ours?
        self._last_event = self.store.last_event_id()
        search, unfinished, in_flight = self._resume()
        self._search = search
        if not resync:
            self.progress.study_started(
                self.spec.name,
                self.spec.search.rounds,
                self.spec.search.total_trials,
                resumed=search.rounds_asked > 0,
                best=None if search.best is None else search.best[1],
            )
        told = search.history
        empty = sorted({t.round for t in told} - {t.round for t in told if t.score is not None})
        empty = [r for r in empty if search.round_told(r)]
        if empty:  # started again after it failed: it stays failed (a new study is a new name)
            message = f"round {empty[0]}: 0 completed trials"
            self.store.set_state(StudyState.FAILED, message, lock=lock)
            return StudyOutcome(StudyState.FAILED, message, None)
        if search.done and not resync:
            self.progress.note(f"study {self.spec.name!r} has already finished all its rounds")
        for number, trials in unfinished.items():
            self._attach(number, trials)
        while not search.done:
            while search.can_ask():
                number = search.rounds_asked + 1
                reference = [self._finished[n] for n in search.reference(number)]
                rungs = round_rungs(self.spec, self.store, reference, self._curves)
                batch = search.ask_next()
                box = search.boxes[-1].to_dict(self.spec.space)
                record = self.store.write_round(lock, epoch, number, box, batch, rungs)
                self._send_round(record, batch, in_flight)
            if not in_flight:
                raise StoreError(
                    f"round {search.rounds_asked + 1} waits for trials that are not in flight"
                )
            for trial in self._wait(lock, epoch, in_flight):
                search.tell_trial(trial.number, _score(trial))
                self._finished[trial.number] = trial
                outcome = self._round_may_be_over(search, trial.round, lock)
                if outcome is not None:
                    return outcome
        self.store.set_state(StudyState.COMPLETE, lock=lock)
        return StudyOutcome(StudyState.COMPLETE, "all rounds finished", search.best)

    def _round_may_be_over(
        self, search: CoarseToFine, number: int, lock: CoordinatorLock
    ) -> StudyOutcome | None:
        """When round `number` just finished: show it; stop the study if none of it completed."""
        if not search.round_told(number):
            return None
        self.on_round()
        self.progress.round_finished(number, search.best)
        if all(t.score is None for t in search.history if t.round == number):
            # Nothing to narrow around: the study stops (docs/FAULTS.md S13).
            message = f"round {number}: 0 completed trials"
            self.store.set_state(StudyState.FAILED, message, lock=lock)
            return StudyOutcome(StudyState.FAILED, message, None)
        return None

    def _await_redis(self, exc: Exception) -> None:
        """Wait until Redis answers again; give up after `outage_limit` (BrokerError)."""
        since = self._outage_since or time.monotonic()
        self.progress.note(f"lost Redis, retrying: {exc}")
        while True:
            try:
                self.store.client.ping()
                self._outage_since = None
                return
            except (BrokerError, redis.ConnectionError, redis.TimeoutError) as error:
                if is_refused(error):  # credentials or certificate: waiting will not help
                    raise BrokerError(f"Redis refused this coordinator: {error}") from error
                exc = error
            if time.monotonic() - since > self.settings.outage_limit:
                raise BrokerError(
                    f"Redis unreachable for {time.monotonic() - since:.0f}s; giving up: {exc}"
                ) from exc
            time.sleep(min(1.0, self.settings.tick))

    def _resume(self) -> tuple[CoarseToFine, dict[int, list[Trial]], dict[int, Trial]]:
        """Replay every stored round into a fresh search, telling it each finished trial
        (kept in `self._finished` for early stopping); return the stored rounds not yet
        finished (by number, with all their trials) and the trials still in flight."""
        search = CoarseToFine(self.spec)
        self._finished = {}
        unfinished: dict[int, list[Trial]] = {}
        in_flight: dict[int, Trial] = {}
        for record in self.store.rounds():
            if record.number != search.rounds_asked + 1 or not search.can_ask():
                raise StoreError(
                    f"round {record.number} in the store was written before the trials it "
                    "narrows from were finished"
                )
            asked = search.ask_next()
            trials = self.store.trials(record.trial_numbers)
            if [dict(t.params) for t in trials] != asked:
                raise StoreError(
                    f"round {record.number} in the store does not match what this study "
                    "samples (was it written by another version of zoomtune?)"
                )
            for trial in trials:
                if trial.status.is_finished():
                    search.tell_trial(trial.number, _score(trial))
                    self._finished[trial.number] = trial
                else:
                    in_flight[trial.number] = trial
                    unfinished[record.number] = trials
        return search, unfinished, in_flight

    def _attach(self, number: int, trials: list[Trial]) -> None:
        """Show a stored round still in flight, and send its QUEUED trials again."""
        self.progress.round_started(number, trials)
        self._dispatch_all([t for t in trials if t.status is TrialStatus.QUEUED])

    def _send_round(
        self, record: RoundRecord, batch: list[dict[str, Any]], in_flight: dict[int, Trial]
    ) -> None:
        """Send the QUEUED trials of a round just written (or found already written).

        A round this loop has just written is not read back: its trials are what it wrote,
        all QUEUED (reading 600 of them back took 50 ms before the first could be sent)."""
        if record.queued_at is not None:
            trials = [
                Trial(
                    self.spec.name,
                    number,
                    record.number,
                    params,
                    queued_at=record.queued_at,
                    rungs=record.rungs,
                )
                for number, params in zip(record.trial_numbers, batch, strict=True)
            ]
        else:
            trials = self.store.trials(record.trial_numbers)
            if [dict(t.params) for t in trials] != batch:
                raise StoreError(
                    f"round {record.number} in the store does not match what this study "
                    "samples (was it written by another version of zoomtune?)"
                )
        self.progress.round_started(record.number, trials)
        for trial in trials:
            if not trial.status.is_finished():
                in_flight[trial.number] = trial
        self._dispatch_all([t for t in trials if t.status is TrialStatus.QUEUED])

    def _wait(self, lock: CoordinatorLock, epoch: str, in_flight: dict[int, Trial]) -> list[Trial]:
        """Follow the event stream until some trial in flight finishes; return those that did
        (removed from `in_flight`), in trial order."""
        next_housekeeping = self._next_housekeeping
        while True:
            now = time.monotonic()
            if now >= next_housekeeping:
                self._survive(self._housekeeping, lock, epoch, in_flight)
                next_housekeeping = now + self.settings.tick
                self._next_housekeeping = next_housekeeping
            time.sleep(max(0.0, self._next_read - time.monotonic()))
            block = max(0.01, min(self.settings.tick, next_housekeeping - time.monotonic()))
            events = self._survive(self._read_events, block)
            if events is None:
                time.sleep(min(1.0, self.settings.tick))
                continue
            if events:
                self._next_read = time.monotonic() + EVENT_BATCH_SECONDS
            changed: set[int] = set()
            for event in events:
                self._last_event = event.id
                if event.type == "study" and event.fields.get("state") == StudyState.CANCELLED:
                    reason = self.store.meta().get("message") or "no reason given"
                    raise StudyCancelled(f"study {self.spec.name!r} was cancelled: {reason}")
                if event.type == "rejected":
                    # It stops with no end state written: once the workers have the objective,
                    # the same `coordinator start` resumes the study.
                    raise TrialRejected(
                        f"trial {event.trial} was refused by worker "
                        f"{event.fields.get('worker', '?')}: {event.fields.get('reason', '?')}; "
                        "then run the same `coordinator start` again to resume the study"
                    )
                if event.trial is None or event.trial not in in_flight:
                    continue
                if event.type == "started":
                    # A start changes nothing the loop decides on: show it without a read.
                    self._last_start = time.monotonic()
                    self._show_started(in_flight, event)
                else:
                    changed.add(event.trial)
            if changed:
                finished = self._refresh(in_flight, changed)
                if finished:
                    return finished

    def _show_started(self, latest: dict[int, Trial], event: Event) -> None:
        trial = latest[event.trial or 0]
        if trial.status is not TrialStatus.QUEUED or event.attempt != trial.attempt:
            return
        started = replace(trial, status=TrialStatus.RUNNING, worker=event.fields.get("worker"))
        latest[trial.number] = started
        self.progress.trial_changed(started)

    def _refresh(self, in_flight: dict[int, Trial], numbers: set[int]) -> list[Trial]:
        """Re-read changed trials; send again those that went back to the queue; return the
        finished ones (no longer in flight)."""
        finished: list[Trial] = []
        for trial in self.store.trials(sorted(numbers)):
            before = in_flight[trial.number]
            in_flight[trial.number] = trial
            if trial.status is TrialStatus.QUEUED and (
                before.status is not TrialStatus.QUEUED or trial.attempt != before.attempt
            ):
                self.progress.note(
                    f"trial {trial.number} back in the queue as attempt {trial.attempt} "
                    f"({trial.last_error or 'handed back'})"
                )
                self._dispatch(trial)
            self.progress.trial_changed(trial)
            if trial.status.is_finished():
                del in_flight[trial.number]
                finished.append(trial)
        return finished

    # -- housekeeping ----------------------------------------------------------------------------

    def _read_events(self, block: float) -> list[Event]:
        started = time.monotonic()
        events = self.store.events(self._last_event, block)
        _check_answered_in_time(time.monotonic() - started, block)
        return events

    def _housekeeping(self, lock: CoordinatorLock, epoch: str, in_flight: dict[int, Trial]) -> None:
        self.watch()
        started = time.monotonic()
        self.store.renew(lock, epoch)
        _check_answered_in_time(time.monotonic() - started, 0.0)
        # Only now, with Redis answering: a restart since the last tick means lost writes may
        # have to be redone and leases renewed, so no reaping before the resync.
        if self._redis_run_id() != self._run_id:
            raise _Resync("Redis restarted")
        if time.monotonic() >= self._reap_after:
            for requeued in self.store.reap(lock, epoch):
                log.warning("trial %d: lease expired; %s", requeued.trial, requeued.outcome)
        queued = [t for _, t in sorted(in_flight.items()) if t.status is TrialStatus.QUEUED]
        if queued:
            self._resend_lost(queued)
        self._warn_if_idle(bool(queued))

    def _resend_lost(self, queued: list[Trial]) -> None:
        """Re-send QUEUED trials that waited longer than a lease while the queue is empty:
        their message was lost (a duplicate, should there be one, is dropped by the store).
        A trial is re-sent at most once per lease."""
        if self.dispatcher.queue_length(self.queue) > 0:
            return
        lease = self.spec.resources.lease
        seconds, micros = self.store.client.time()
        redis_now = float(seconds) + float(micros) / 1e6
        lost = []
        for trial in queued:
            waited = redis_now - (trial.queued_at or redis_now)
            sent = self._sent_at.get((trial.number, trial.attempt), 0.0)
            if waited > lease and time.monotonic() - sent > lease:
                log.warning(
                    "trial %d waited %.0fs with an empty queue; re-sending it", trial.number, waited
                )
                lost.append(trial)
        self._dispatch_all(lost)

    def _warn_if_idle(self, waiting: bool) -> None:
        now = time.monotonic()
        quiet = now - max(self._last_start, self._last_idle_note)
        if waiting and quiet > self.settings.idle_warning:
            self._last_idle_note = now
            hint = "--gpus all" if self.spec.resources.queue == "gpu" else "--queues cpu"
            self.progress.note(
                f"no worker has started a trial for {now - self._last_start:.0f}s: are workers "
                f"consuming the queue {self.queue!r}? (worker start {hint})"
            )

    def _survive(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run `action(*args)`; ride out a Redis outage up to `outage_limit`, then give up.
        When Redis answers again after an outage, the loop resyncs with the store."""
        try:
            result = action(*args)
        except (BrokerError, redis.ConnectionError, redis.TimeoutError) as exc:
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = now
                self.progress.note(f"lost Redis, retrying: {exc}")
            if now - self._outage_since > self.settings.outage_limit:
                raise BrokerError(
                    f"Redis unreachable for {now - self._outage_since:.0f}s; giving up: {exc}"
                ) from exc
            return None
        if self._outage_since is not None:
            self._outage_since = None
            raise _Resync("Redis is back")
        return result

    def _redis_run_id(self) -> str:
        try:
            return str(self.store.client.info("server").get("run_id", ""))
        except Exception:  # INFO may be forbidden by an ACL: restarts are then found by waiting
            return self._run_id

    def _dispatch_all(self, trials: Sequence[Trial]) -> None:
        """Send `trials`; every `CANCEL_CHECK_SECONDS` meanwhile, stop (StudyCancelled) if the
        study was cancelled, rather than publishing messages that workers would only drop."""
        next_check = time.monotonic() + CANCEL_CHECK_SECONDS
        for trial in trials:
            if time.monotonic() >= next_check:
                self._stop_if_cancelled()
                next_check = time.monotonic() + CANCEL_CHECK_SECONDS
            self._dispatch(trial)

    def _stop_if_cancelled(self) -> None:
        meta = self.store.meta()
        if meta.get("state") == StudyState.CANCELLED:
            reason = meta.get("message") or "no reason given"
            raise StudyCancelled(f"study {self.spec.name!r} was cancelled: {reason}")

    def _dispatch(self, trial: Trial) -> None:
        message = TrialMessage(
            study=self.spec.name,
            trial=trial.number,
            attempt=trial.attempt,
            objective=self.spec.objective.name,
            params=dict(trial.params),
            rungs=trial.rungs,
        )
        self._sent_at[(trial.number, trial.attempt)] = time.monotonic()
        try:
            self.dispatcher.send(message, self.queue, self.spec.resources.timeout)
        except Exception as exc:  # kombu raises its own errors; the trial stays QUEUED
            log.warning("could not send trial %d (it will be re-sent): %s", trial.number, exc)


def round_rungs(
    spec: StudySpec,
    store: StudyStore,
    reference: Sequence[Trial],
    curves: dict[int, ReferenceCurve],
) -> tuple[Rung, ...]:
    """Early stopping: the rungs of the round about to be written (`coordinator.pruning`).

    `reference` are the trials whose curves set the thresholds: the round's reference trials
    (`CoarseToFine.reference`), the same ones that narrow its box. They must all be terminal,
    so that the rungs are a function of the seed. Their reported values are read with one
    pipelined call; `curves` keeps the ones already read.
    """
    if not spec.early_stopping.enabled:
        return ()
    unfinished = [t.number for t in reference if not t.status.is_finished()]
    if unfinished:
        raise StoreError(f"rungs from unfinished trials {unfinished[:5]} would depend on timing")
    usable = [t for t in reference if t.status in (TrialStatus.COMPLETE, TrialStatus.PRUNED)]
    missing = [t for t in usable if t.number not in curves]
    reports = store.all_reports(t.number for t in missing)
    for trial in missing:
        curves[trial.number] = ReferenceCurve.of(trial, reports.get(trial.number, []))
    return rungs_for(spec.early_stopping, [curves[t.number] for t in usable], spec.maximize)


def _check_answered_in_time(took: float, asked: float) -> None:
    """Resync when one Redis command took much longer than asked: Redis was unreachable
    meanwhile (the client retried until it answered), or this process was paused."""
    if took > asked + SLOW_ANSWER_SECONDS:
        raise _Resync(f"Redis did not answer for {took:.0f}s")


def _score(trial: Trial) -> float | None:
    return trial.score if trial.status is TrialStatus.COMPLETE else None
