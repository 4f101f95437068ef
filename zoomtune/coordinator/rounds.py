# Over 400 lines: one class shares the loop's state; its decisions are in decide.py.
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

It does the same without being killed whenever Redis restarted or was unreachable
(`zoomtune.coordinator.outage`). What it decides (what the events mean, what to send again, when a
round failed) are pure functions in `zoomtune.coordinator.decide`; this module is the I/O around
them, kept in one class because the loop's state (trials in flight, the event position) is shared by
all of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from zoomtune.common.errors import (
    LeaseLost,
    StoreError,
    StudyCancelled,
    StudyWiped,
    TrialRejected,
    ZoomtuneError,
)
from zoomtune.common.settings import QUEUES
from zoomtune.common.store import StudyStore
from zoomtune.common.store_records import CoordinatorLock, Event, RoundRecord
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Rung, StudyState, Trial, TrialStatus
from zoomtune.coordinator.decide import (
    empty_round,
    idle_too_long,
    lost_messages,
    must_resend,
    read_news,
)
from zoomtune.coordinator.dispatcher import Dispatcher, TrialSender
from zoomtune.coordinator.outage import REDIS_DOWN, RedisWatch, Resync, check_answered_in_time
from zoomtune.coordinator.progress import StudyProgress
from zoomtune.coordinator.pruning import ReferenceCurve, rungs_for
from zoomtune.coordinator.search import CoarseToFine
from zoomtune.coordinator.speculation import Speculation

log = logging.getLogger("zoomtune.coordinator")


EVENT_BATCH_SECONDS = 0.02
"""After a read that found events, the loop lets this long pass before it reads again, so that
one read (and one re-read of the changed trials) takes in the news of many trials at once
rather than one read per trial; a result is noticed at most this much later."""


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
        on_start: Callable[[], None] | None = None,
    ) -> None:
        """`on_start` runs once the first rounds are sent, `on_round` after every finished round
        (both write the run folder); `watch` at every housekeeping tick, and stops the study by
        raising (the embedded default checks that its workers still run, and `coordinator
        start` that no signal came)."""
        self.spec = spec
        self.store = store
        self.dispatcher = dispatcher
        self.progress = progress
        self.settings = settings or LoopSettings()
        self.on_round = on_round or (lambda: None)
        self.on_start = on_start or (lambda: None)
        self.watch = watch or (lambda: None)
        self.queue = QUEUES[spec.resources.queue]
        self._sender = TrialSender(spec, store, dispatcher, self.queue)
        self._last_event = "0-0"
        self._redis = RedisWatch(store, progress, self.settings.outage_limit, self.settings.tick)
        self._last_start = time.monotonic()
        self._last_idle_note = time.monotonic()
        self._reap_after = 0.0
        self._next_housekeeping = 0.0
        self._next_read = 0.0
        self._finished: dict[int, Trial] = {}
        """Finished trials by number: their curves set the early-stopping rungs."""
        self._curves: dict[int, ReferenceCurve] = {}
        """Reference curves already read (a finished trial's reports never change)."""
        self._search: CoarseToFine | None = None
        self._speculation = Speculation(
            spec,
            store,
            self._sender,
            progress,
            lambda reference, assumed: round_rungs(spec, store, reference, self._curves, assumed),
        )

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
        self._redis.run_id = self._redis.current_run_id()
        resync = False
        while True:
            try:
                return self._run_rounds(lock, epoch, resync)
            except Resync as exc:
                self.progress.note(f"{exc}: re-reading the study from Redis")
            except REDIS_DOWN as exc:
                self._redis.wait_until_back(exc)
                self.progress.note("Redis is back: re-reading the study from Redis")
            except StoreError as exc:
                # A record that vanished or does not match: a Redis that restarted without
                # its last writes, or a real inconsistency (then stop, naming it).
                fenced = isinstance(exc, LeaseLost | StudyWiped | StudyCancelled)
                if fenced or not self._redis.restarted():
                    raise
                self.progress.note(f"Redis restarted ({exc}): re-reading the study")
            resync = True
            self._redis.run_id = self._redis.current_run_id()
            # Workers whose trials ran through the outage get one lease to renew them.
            self._reap_after = time.monotonic() + self.spec.resources.lease

    def _run_rounds(self, lock: CoordinatorLock, epoch: str, resync: bool) -> StudyOutcome:
        """Resume from the store and run the remaining rounds; `resync` after a Redis outage.

        Rolling rounds: a round is written and sent as soon as the search can ask it (the
        trials it narrows from are finished), while earlier rounds still run."""
        self.store.renew(lock, epoch)  # first of all: is the study still there, and still ours?
        self._last_event = self.store.last_event_id()
        search, unfinished, in_flight = self._resume(lock, epoch)
        self._search = search
        if not resync:
            self.progress.study_started(
                self.spec.name,
                self.spec.search.rounds,
                self.spec.search.total_trials,
                resumed=search.rounds_asked > 0,
                best=None if search.best is None else search.best[1],
            )
        empty = empty_round(search, {t.round for t in search.history})
        if empty is not None:  # started again after it failed: it stays failed (a new name runs)
            message = f"round {empty}: 0 completed trials"
            self.store.set_state(StudyState.FAILED, message, lock=lock)
            return StudyOutcome(StudyState.FAILED, message, None)
        if search.done and not resync:
            self.progress.note(f"study {self.spec.name!r} has already finished all its rounds")
        for number, trials in unfinished.items():
            self._attach(number, trials)
        self._speculation.send_queued(in_flight)  # shown once its round is final
        news = True  # a result read since the last `advance`
        started = False  # `on_start` ran
        while not search.done:
            while search.can_ask():
                number = search.rounds_asked + 1
                reference = [self._finished[n] for n in search.reference(number)]
                rungs = round_rungs(self.spec, self.store, reference, self._curves)
                batch = search.ask_next()
                box = search.boxes[-1].to_dict(self.spec.space)
                if self._speculation.written_ahead(number):
                    held = self._speculation.make_final(
                        lock, epoch, number, box, batch, rungs, in_flight
                    )
                else:
                    record = self.store.write_round(lock, epoch, number, box, batch, rungs)
                    self._send_round(record, batch, in_flight)
                    held = []
                for trial in held:
                    outcome = self._tell(search, trial, lock)
                    if outcome is not None:
                        return outcome
            if not started:
                self.on_start()
                started = True
            if search.done:  # the last round was made final with all its trials finished
                break
            self._speculation.advance(
                search, lock, epoch, in_flight, self._finished, self._curves, news
            )
            if not in_flight:
                raise StoreError(
                    f"round {search.rounds_asked + 1} waits for trials that are not in flight"
                )
            finished_now = self._wait(lock, epoch, in_flight)
            news = bool(finished_now)
            for trial in finished_now:
                if self._speculation.is_ahead(trial):  # told once its round is final
                    self._speculation.held[trial.number] = trial
                    continue
                if trial.number in self._speculation.judging:
                    settled = self._speculation.settle_finished(lock, epoch, trial, in_flight)
                    if settled is None:
                        continue
                    trial = settled
                outcome = self._tell(search, trial, lock)
                if outcome is not None:
                    return outcome
        self.store.set_state(StudyState.COMPLETE, lock=lock)
        return StudyOutcome(StudyState.COMPLETE, "all rounds finished", search.best)

    def _tell(
        self, search: CoarseToFine, trial: Trial, lock: CoordinatorLock
    ) -> StudyOutcome | None:
        _tell_search(search, trial)
        self._finished[trial.number] = trial
        return self._round_may_be_over(search, trial.round, lock)

    def _round_may_be_over(
        self, search: CoarseToFine, number: int, lock: CoordinatorLock
    ) -> StudyOutcome | None:
        """When round `number` just finished: show it; stop the study if none of it completed."""
        if not search.round_told(number):
            return None
        self.on_round()
        self.progress.round_finished(number, search.best)
        if empty_round(search, [number]) is not None:
            message = f"round {number}: 0 completed trials"
            self.store.set_state(StudyState.FAILED, message, lock=lock)
            return StudyOutcome(StudyState.FAILED, message, None)
        return None

    def _resume(
        self, lock: CoordinatorLock, epoch: str
    ) -> tuple[CoarseToFine, dict[int, list[Trial]], dict[int, Trial]]:
        """Replay every stored round into a fresh search, telling it each finished trial
        (kept in `self._finished` for early stopping); return the stored rounds not yet
        finished (by number, with all their trials) and the trials still in flight."""
        search = CoarseToFine(self.spec)
        self._finished = {}
        unfinished: dict[int, list[Trial]] = {}
        in_flight: dict[int, Trial] = {}
        self._speculation.reset()
        for record in self.store.rounds():
            ahead = self._speculation.ahead
            if record.provisional and record.number == search.rounds_asked + 1 + len(ahead):
                # Written ahead: the loop revises it or makes it final, as it would have.
                self._speculation.resume(record, self.store.trials(record.trial_numbers), in_flight)
                continue
            if ahead:
                raise StoreError(
                    f"round {record.number} in the store is final after round "
                    f"{ahead[-1].round}, which is provisional"
                )
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
            if record.written_ahead:
                trials = self._speculation.resume_final(lock, epoch, trials)
            for trial in trials:
                if trial.status.is_finished():
                    _tell_search(search, trial)
                    self._finished[trial.number] = trial
                else:
                    in_flight[trial.number] = trial
                    unfinished[record.number] = trials
        return search, unfinished, in_flight

    def _attach(self, number: int, trials: list[Trial]) -> None:
        """Show a stored round still in flight, and send its QUEUED trials again."""
        self.progress.round_started(number, trials)
        self._sender.send_all([t for t in trials if t.status is TrialStatus.QUEUED])

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
        self._sender.send_all([t for t in trials if t.status is TrialStatus.QUEUED])

    def _wait(self, lock: CoordinatorLock, epoch: str, in_flight: dict[int, Trial]) -> list[Trial]:
        """Follow the event stream until some trial in flight finishes; return those that did
        (removed from `in_flight`), in trial order; [] when a trial started and a round may be
        run ahead (`Speculation.may_start`), or when the rounds run ahead are due to be sampled
        again (`Speculation.resample_at`)."""
        next_housekeeping = self._next_housekeeping
        read = False  # at least one read of the event stream before returning for a resample
        while True:
            now = time.monotonic()
            if now >= next_housekeeping:
                self._redis.survive(self._housekeeping, lock, epoch, in_flight)
                next_housekeeping = now + self.settings.tick
                self._next_housekeeping = next_housekeeping
            time.sleep(max(0.0, self._next_read - time.monotonic()))
            resample_at = self._speculation.resample_at()
            if read and resample_at is not None and time.monotonic() >= resample_at:
                return []
            block = max(0.01, min(self.settings.tick, next_housekeeping - time.monotonic()))
            if resample_at is not None:
                block = max(0.01, min(block, resample_at - time.monotonic()))
            events = self._redis.survive(self._read_events, block)
            if events is None:
                time.sleep(min(1.0, self.settings.tick))
                continue
            read = True
            if not events:
                continue
            self._next_read = time.monotonic() + EVENT_BATCH_SECONDS
            self._last_event = events[-1].id
            news = read_news(events, in_flight)
            if news.cancelled:
                reason = self.store.meta().get("message") or "no reason given"
                raise StudyCancelled(f"study {self.spec.name!r} was cancelled: {reason}")
            if news.rejected is not None:
                # It stops with no end state written: once the workers have the objective, the
                # same `coordinator start` resumes the study.
                event = news.rejected
                raise TrialRejected(
                    f"trial {event.trial} was refused by worker "
                    f"{event.fields.get('worker', '?')}: {event.fields.get('reason', '?')}; "
                    "then run the same `coordinator start` again to resume the study"
                )
            # Finishes first, then starts: a slot's next trial is not shown running beside the
            # one it replaced (more trials running than there are slots).
            finished = self._refresh(in_flight, set(news.changed)) if news.changed else []
            for event in news.started:
                # A start changes nothing the loop decides on: show it without a read.
                self._last_start = time.monotonic()
                self._show_started(in_flight, event)
            if finished:
                return finished
            search = self._search
            if news.started and search is not None and self._speculation.may_start(search):
                return []  # a worker took a message: the queue may be empty, run a round ahead

    def _show_started(self, latest: dict[int, Trial], event: Event) -> None:
        trial = latest.get(event.trial or 0)  # gone: it finished in the same batch
        if trial is None or trial.status is not TrialStatus.QUEUED:
            return
        if event.attempt != trial.attempt:
            return
        started = replace(trial, status=TrialStatus.RUNNING, worker=event.fields.get("worker"))
        latest[trial.number] = started
        if not self._speculation.is_ahead(started):
            self.progress.trial_changed(started)

    def _refresh(self, in_flight: dict[int, Trial], numbers: set[int]) -> list[Trial]:
        """Re-read changed trials; send again those that went back to the queue; return the
        finished ones (no longer in flight)."""
        finished: list[Trial] = []
        for trial in self.store.trials(sorted(numbers)):
            before = in_flight[trial.number]
            in_flight[trial.number] = trial
            if must_resend(before, trial):
                self.progress.note(
                    f"trial {trial.number} back in the queue as attempt {trial.attempt} "
                    f"({trial.last_error or 'handed back'})"
                )
                self._sender.send(trial)
            if not self._speculation.is_ahead(trial):
                self.progress.trial_changed(trial)
            if trial.status.is_finished():
                del in_flight[trial.number]
                finished.append(trial)
        return finished

    # -- housekeeping ----------------------------------------------------------------------------

    def _read_events(self, block: float) -> list[Event]:
        started = time.monotonic()
        events = self.store.events(self._last_event, block)
        check_answered_in_time(time.monotonic() - started, block)
        return events

    def _housekeeping(self, lock: CoordinatorLock, epoch: str, in_flight: dict[int, Trial]) -> None:
        self.watch()
        started = time.monotonic()
        self.store.renew(lock, epoch)
        check_answered_in_time(time.monotonic() - started, 0.0)
        # Only now, with Redis answering: a restart since the last tick means lost writes may
        # have to be redone and leases renewed, so no reaping before the resync.
        if self._redis.restarted():
            raise Resync("Redis restarted")
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
        redis_now = self.store.server_time()
        lost = lost_messages(queued, redis_now, lease, self._sender.sent_at, time.monotonic())
        for trial in lost:
            waited = redis_now - (trial.queued_at or redis_now)
            log.warning(
                "trial %d waited %.0fs with an empty queue; re-sending it", trial.number, waited
            )
        self._sender.send_all(lost)

    def _warn_if_idle(self, waiting: bool) -> None:
        now = time.monotonic()
        limit = self.settings.idle_warning
        if idle_too_long(waiting, now, self._last_start, self._last_idle_note, limit):
            self._last_idle_note = now
            hint = "--gpus all" if self.spec.resources.queue == "gpu" else "--queues cpu"
            self.progress.note(
                f"no worker has started a trial for {now - self._last_start:.0f}s: are workers "
                f"consuming the queue {self.queue!r}? (worker start {hint})"
            )


def round_rungs(
    spec: StudySpec,
    store: StudyStore,
    reference: Sequence[Trial],
    curves: dict[int, ReferenceCurve],
    assumed: Sequence[ReferenceCurve] = (),
) -> tuple[Rung, ...]:
    """Early stopping: the rungs of the round about to be written (`zoomtune.coordinator.pruning`).

    `reference` are the trials whose curves set the thresholds: the round's reference trials
    (`CoarseToFine.reference`), the same ones that narrow its box. They must all be terminal,
    so that the rungs are a function of the seed. Their reported values are read with one
    pipelined call; `curves` keeps the ones already read. `assumed`: only for a round run
    ahead (`Speculation`), the curves so far of reference trials still running, taken as
    complete with a guessed score.
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
    known = [curves[t.number] for t in usable]
    return rungs_for(spec.early_stopping, [*known, *assumed], spec.maximize)


def _tell_search(search: CoarseToFine, trial: Trial) -> None:
    """Tell the search a finished trial: its score when COMPLETE; None when failed or pruned."""
    search.tell_trial(
        trial.number, trial.completed_score, pruned=trial.status is TrialStatus.PRUNED
    )
