"""The study store: the Redis record of a study, and the only source of truth about its trials.

Celery is only the transport (it delivers at least once, sometimes never, sometimes many times).
Every state change here is one Lua script (zoomtune/common/lua/, loaded by
`zoomtune.common.store_scripts`), so it is an atomic compare-and-set:

- a coordinator holds the study's *lock* (a key with a TTL it renews); every coordinator write
  checks it holds the lock (fencing), so a coordinator that lost it cannot write. The study's
  meta record names the last coordinator that took the lock, so a coordinator that was paused
  past its lock's TTL learns that another one ran the study meanwhile, even after that one
  finished and released the lock;
- a message starts an attempt only if what it says about the trial (its payload: the params)
  is what the coordinator stored for it; any other message is dropped and counted;
- a worker that starts an attempt takes a *lease* (a key with a TTL its heartbeat renews) and a
  random token; a result counts only if it comes with the current attempt and token while the
  trial is still RUNNING. Late, duplicate and forged results are dropped and counted;
- a lease that expired (on Redis's clock) sends the trial back to QUEUED as attempt + 1, up to
  the study's `max_attempts`, then FAILED. A finished trial never changes again, unless its
  round was written ahead of its reference trials (`provisional`, `[search] speculate`) and
  the coordinator revises it before it is final (`revise_round`);
- a cancelled study (`cancel`, from any process) stays cancelled: its QUEUED trials fail, no
  round, attempt or requeue of it starts again, and only running attempts may still finish.

The store is split by concept: key names in `zoomtune.common.store_keys`, the connection and its
retries in `zoomtune.common.redis_client`, the scripts in `zoomtune.common.store_scripts` (and
zoomtune/common/lua/), the records it hands back in `zoomtune.common.store_records`, its reads in
`zoomtune.common.store_reads`; this module is its writes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from zoomtune.common.errors import (
    LeaseLost,
    StoreError,
    StudyCancelled,
    StudyExists,
    StudyLocked,
    StudyNotFound,
    StudyWiped,
)
from zoomtune.common.redis_client import call_redis
from zoomtune.common.store_keys import Keys
from zoomtune.common.store_reads import StudyReader, milliseconds
from zoomtune.common.store_records import (
    Cancelled,
    CoordinatorLock,
    Reported,
    Requeued,
    Revision,
    RoundRecord,
    StartOutcome,
    canonical_json,
    is_dead_local,
    owner_id,
)
from zoomtune.common.store_scripts import Scripts
from zoomtune.common.trial import Rung, StudyState, TrialResult, Verdict, rungs_from_json

CANCEL_BATCH = 500
"""Trials one cancel_trials.lua call goes through: each call is short (about 6 ms, at most tens of
ms on a busy machine), so cancelling 100,000 queued trials never holds Redis for long (one
script for all of them took 1.4 to 4.3 s, stalling the heartbeats of every study on it)."""


class StudyStore(StudyReader):
    """The Redis record of one study: its reads (`StudyReader`) and every write, each one Lua
    script. Stateless apart from the client: safe to share."""

    def __init__(self, client: redis.Redis, prefix: str, study: str) -> None:
        super().__init__(client, prefix, study)
        self._scripts = Scripts.register(client)

    # -- coordinator: the lock ----------------------------------------------------------------

    def acquire(self, ttl: float, owner: str | None = None) -> CoordinatorLock:
        """Take the study's lock, or raise StudyLocked naming who holds it.

        A lock left by a dead coordinator on this same host is taken over at once; one held
        from another host is refused until it expires.
        """
        value = f"{secrets.token_hex(8)} {owner or owner_id()}"
        ttl_ms = str(max(1, int(ttl * 1000)))
        keys = [self.keys.lock, self.keys.meta]
        result = self._run(self._scripts.acquire_lock, keys, [value, ttl_ms, ""])
        if result[0] == "locked":
            holder, pttl = str(result[1]), int(result[2])
            if is_dead_local(holder.split(" ", 1)[-1]):
                result = self._run(self._scripts.acquire_lock, keys, [value, ttl_ms, holder])
            if result[0] == "locked":
                raise StudyLocked(
                    f"study {self.study!r} is locked by {holder.split(' ', 1)[-1]} (another "
                    f"coordinator is running it; its lock expires {pttl / 1000:.0f}s after "
                    "it stops)"
                )
        return CoordinatorLock(value=value, ttl=ttl)

    def renew(self, lock: CoordinatorLock, epoch: str = "") -> None:
        """Extend the lock, or take it again if it expired and nobody took it meanwhile; raise
        LeaseLost if another coordinator took it (even if it released it since), StudyWiped if
        the study's records are gone."""
        outcome = self._run(
            self._scripts.renew_lock,
            [self.keys.lock, self.keys.meta],
            [lock.value, milliseconds(lock.ttl), epoch],
        )
        self._check(outcome)

    def release(self, lock: CoordinatorLock) -> None:
        self._run(self._scripts.release_lock, [self.keys.lock], [lock.value])

    # -- coordinator: study, rounds, reaping ----------------------------------------------------

    def create(self, lock: CoordinatorLock, spec: Mapping[str, Any], max_attempts: int) -> str:
        """Store a new study, or check that the stored one has the same spec. Returns its epoch.

        The epoch is a random id of this study's records: if it changes or disappears, the
        records were wiped or replaced while the coordinator ran.
        """
        result = self._run(
            self._scripts.create_study,
            [self.keys.lock, self.keys.spec, self.keys.meta, Keys.studies(self.keys.prefix)],
            [lock.value, canonical_json(spec), secrets.token_hex(8), self.study, max_attempts],
        )
        status = str(result[0])
        if status == "different":
            raise StudyExists(
                f"a study named {self.study!r} with a different specification is already in "
                "this broker; give the study a new name, or delete the old one"
            )
        if status == "corrupt":
            raise StudyWiped(f"study {self.study!r} has a spec but no meta record in Redis")
        self._check(status)
        return str(result[1])

    def write_round(
        self,
        lock: CoordinatorLock,
        epoch: str,
        number: int,
        box: Mapping[str, Any],
        params: Sequence[Mapping[str, Any]],
        rungs: Sequence[Rung] = (),
        provisional: bool = False,
    ) -> RoundRecord:
        """Write round `number` and its QUEUED trials, once. A round already written is returned
        unchanged (the coordinator never re-samples a round; a `provisional` one, written ahead
        of its reference trials, is changed only by `revise_round`).

        Each trial's params are stored as canonical JSON, the encoding `start` compares a
        message's payload with.

        `rungs` (early stopping) are stored in every trial's hash as canonical JSON, as their
        messages carry them: [[step, threshold], ...]."""
        box_json = canonical_json(box)
        rungs_json = canonical_json([rung.to_list() for rung in rungs])
        args: list[Any] = [lock.value, epoch, number, box_json, self.keys.trial_prefix, rungs_json]
        args.append("1" if provisional else "0")
        args.extend(canonical_json(p) for p in params)
        result = self._run(
            self._scripts.write_round,
            [self.keys.lock, self.keys.meta, self.keys.round(number), self.keys.events],
            args,
        )
        status = str(result[0])
        self._check(status)
        if status == "exists":
            return self.round(number)
        # Not read back: after a Redis crash, a read may no longer see what was just written.
        return RoundRecord(
            number,
            json.loads(box_json),
            int(result[1]),
            len(params),
            float(result[2]),
            tuple(rungs),
            provisional,
            provisional,
        )

    def revise_round(
        self,
        lock: CoordinatorLock,
        epoch: str,
        number: int,
        box: Mapping[str, Any],
        params: Sequence[Mapping[str, Any]],
        rungs: Sequence[Rung] = (),
        provisional: bool = False,
    ) -> Revision:
        """Rewrite provisional round `number` with the params and rungs it gets now (see
        revise_round.lua): trials that came out the same are kept, the others are QUEUED again
        as their next attempt (to be sent again); trials whose rungs alone changed get them in
        place: queued ones start on them (`start`), started ones are to be judged against them
        once finished (`settle`). With `provisional` False the round is final. The call, run
        again by redis-py after its reply was lost, gets the first answer (answers.lua)."""
        args: list[Any] = [
            lock.value,
            epoch,
            canonical_json(box),
            canonical_json([rung.to_list() for rung in rungs]),
            "1" if provisional else "0",
            self.keys.trial_prefix,
            self.keys.lease_prefix,
            self.keys.reports_prefix,
        ]
        args.extend(canonical_json(p) for p in params)
        keys = [
            self.keys.lock,
            self.keys.meta,
            self.keys.round(number),
            self.keys.running,
            self.keys.counters,
            self.keys.answer(secrets.token_hex(8)),
        ]
        result = self._run(self._scripts.revise_round, keys, args)
        status = str(result[0])
        if status in ("missing", "final"):
            raise StoreError(f"round {number} is not a provisional round ({status})")
        self._check(status)
        again, judge = result[1], result[2]
        return Revision(tuple(int(n) for n in again), tuple(int(n) for n in judge))

    def settle(
        self,
        lock: CoordinatorLock,
        epoch: str,
        number: int,
        attempt: int,
        verdict: Verdict,
    ) -> bool:
        """Apply the verdict on a finished trial to judge (settle_trial.lua); False when it is
        not one (any more) at that attempt, or the study no longer runs: nothing was done."""
        keys = [
            self.keys.lock,
            self.keys.meta,
            self.keys.trial(number),
            self.keys.lease(number),
            self.keys.running,
            self.keys.reports(number),
            self.keys.counters,
            self.keys.answer(secrets.token_hex(8)),
        ]
        args = [lock.value, epoch, number, attempt, verdict.action]
        status = str(self._run(self._scripts.settle_trial, keys, args)[0])
        if status == "changed":
            return False
        self._check(status)
        return True

    def round(self, number: int) -> RoundRecord:
        row = self._call(self.client.hgetall, self.keys.round(number))
        if not row:
            raise StudyNotFound(f"study {self.study!r} has no round {number}")
        return RoundRecord.from_hash(row)

    def reap(self, lock: CoordinatorLock, epoch: str) -> list[Requeued]:
        """Send every RUNNING trial whose lease expired back to the queue (or fail it)."""
        result = self._run(
            self._scripts.reap_leases,
            [
                self.keys.lock,
                self.keys.meta,
                self.keys.running,
                self.keys.events,
                self.keys.counters,
            ],
            [lock.value, epoch, self.keys.trial_prefix, self.keys.lease_prefix],
        )
        self._check(str(result[0]))
        rest = result[1:]
        return [
            Requeued(trial=int(rest[i]), outcome=str(rest[i + 1]), attempt=int(rest[i + 2]))
            for i in range(0, len(rest), 3)
        ]

    def set_state(
        self, state: StudyState, message: str = "", lock: CoordinatorLock | None = None
    ) -> None:
        """Mark the study running, complete or failed (`cancel` cancels it)."""
        outcome = self._run(
            self._scripts.set_study_state,
            [self.keys.lock, self.keys.meta, self.keys.events],
            ["" if lock is None else lock.value, "", state, message],
        )
        self._check(str(outcome))

    def cancel(self, reason: str, batch: int = CANCEL_BATCH) -> Cancelled:
        """Cancel the study: no round or attempt of it starts any more.

        Its QUEUED trials become FAILED with `reason` (workers drop their messages), and so do
        RUNNING trials whose lease has already expired. Other RUNNING trials may finish and
        their results are recorded; a running trial handed back later fails instead of going
        back to the queue. The coordinator notices within a tick and stops. Calling it again
        on a cancelled study only cleans up trials whose lease expired since.

        One short script marks the study cancelled (from then on workers and the store refuse
        everything that could start a trial), then the trials are failed `batch` at a time,
        one short script each, so that Redis keeps answering other clients meanwhile. Each
        batch is a compare-and-set like every other write; a cancel cut short is finished by
        calling it again.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        result = self._run(self._scripts.cancel_study, [self.keys.meta, self.keys.events], [reason])
        status = str(result[0])
        if status == "unknown_study":
            raise StudyNotFound(f"no study named {self.study!r} in this broker")
        if status == "finished":
            raise StoreError(
                f"study {self.study!r} is already {result[1]}; there is nothing to cancel"
            )
        total, epoch = int(result[1]), str(result[2])
        cancelled = running = 0
        keys = [self.keys.meta, self.keys.events, self.keys.running]
        for first in range(0, total, batch):
            last = min(total, first + batch)
            args = [self.keys.trial_prefix, self.keys.lease_prefix, reason, epoch, first, last]
            done = self._run(self._scripts.cancel_trials, keys, args)
            if str(done[0]) != "ok":
                raise StudyNotFound(f"study {self.study!r} was deleted while it was cancelled")
            cancelled += int(done[1])
            running += int(done[2])
        return Cancelled(
            trials_cancelled=cancelled, trials_running=running, already=status == "again"
        )

    # -- worker: attempts ------------------------------------------------------------------------

    def start(
        self,
        trial: int,
        attempt: int,
        token: str,
        *,
        payload: Mapping[str, Any],
        worker: str,
        host: str,
        device: str,
        pid: int,
        lease: float,
    ) -> StartOutcome:
        """Claim attempt `attempt` of `trial` for this worker and take its lease.

        `payload` is what the message says about the trial (`TrialMessage.payload`: its params),
        by field of the trial's record. Each value must be the one stored, compared as canonical
        JSON, the encoding `write_round` stores; a message that differs is refused as "forged"
        and counted, and the trial is left as it was. The outcome carries the stored rungs,
        which the attempt uses whatever rungs its message carries (`revise_round` may have
        changed them in place since it was sent).
        """
        args: list[Any] = [trial, attempt, token, worker, host, device, pid, milliseconds(lease)]
        args += _payload_pairs(payload)
        result = self._run(self._scripts.start_attempt, self._trial_keys(trial), args)
        if result[0] == "ok":
            rungs = rungs_from_json(json.loads(str(result[2])))
            return StartOutcome(ok=True, reason="ok", started_at=float(result[1]), rungs=rungs)
        if result[0] == "forged":
            return StartOutcome(ok=False, reason="forged", mismatch=str(result[1]))
        return StartOutcome(ok=False, reason=str(result[0]))

    def heartbeat(self, trial: int, attempt: int, token: str, lease: float) -> bool:
        """Renew the lease; False when this attempt no longer owns the trial."""
        return bool(
            self._run(
                self._scripts.renew_lease,
                [self.keys.trial(trial), self.keys.lease(trial)],
                [attempt, token, milliseconds(lease)],
            )
        )

    def finish(
        self, trial: int, attempt: int, token: str, result: TrialResult, *, retry: bool = False
    ) -> str:
        """Record the attempt's result if it still owns the trial.

        Returns "ok", "requeued" (a failure retried as a new attempt), or why it was dropped:
        "stale", "finished", "forged", "unknown_trial" or "unknown_study" (nothing is written
        for a study that does not exist, e.g. after Redis lost it)."""
        score = "" if result.score is None else repr(float(result.score))
        return str(
            self._run(
                self._scripts.finish_attempt,
                self._trial_keys(trial),
                [
                    trial,
                    attempt,
                    token,
                    result.status.value,
                    score,
                    result.error or "",
                    "1" if retry else "0",
                    "" if result.last_step is None else str(result.last_step),
                    "" if result.last_value is None else repr(float(result.last_value)),
                ],
            )
        )

    def abandon(self, trial: int, attempt: int, host: str, pid: int, reason: str) -> str:
        """Hand an attempt back because its process died or its worker is shutting down cold.

        Only the attempt run by process `pid` on `host` is affected; the trial goes back to the
        queue as the next attempt, or fails when attempts ran out ("requeued", "failed",
        "ignored").
        """
        return str(
            self._run(
                self._scripts.abandon_attempt,
                self._trial_keys(trial),
                [trial, attempt, host, pid, reason],
            )
        )

    def fail_attempt(self, trial: int, attempt: int, host: str, pid: int, reason: str) -> str:
        """Fail an attempt that process `pid` on `host` was running (e.g. it hit its time
        limit), without retrying it."""
        keys = self._trial_keys(trial)[:4]
        return str(self._run(self._scripts.fail_attempt, keys, [trial, attempt, host, pid, reason]))

    def reject(
        self, trial: int, attempt: int, worker: str, reason: str, *, payload: Mapping[str, Any]
    ) -> str:
        """Say that `worker` cannot run attempt `attempt` of the QUEUED `trial`, and why (its
        objective is not registered there). The trial stays QUEUED with the reason as its
        `last_error`, and a "rejected" event tells the coordinator. Returns "ok"; "forged"
        (counted) when the message's `payload` is not the trial's, as `start` compares it (a
        forged message must not stop the study); "ignored" when the trial is no longer that
        queued attempt or the study is not running."""
        keys = [self.keys.trial(trial), self.keys.events, self.keys.meta, self.keys.counters]
        args = [trial, attempt, worker, reason, *_payload_pairs(payload)]
        return str(self._run(self._scripts.reject_attempt, keys, args))

    def report(self, trial: int, attempt: int, token: str, step: int, value: float) -> Reported:
        """Append an intermediate value, if this attempt still owns the trial (`owned`); with
        the trial's rungs when they changed since its message was sent (a round run ahead)."""
        entry = json.dumps([step, value])
        reply = self._run(
            self._scripts.append_report,
            [self.keys.trial(trial), self.keys.reports(trial)],
            [attempt, token, entry],
        )
        if isinstance(reply, str):
            return Reported(True, rungs_from_json(json.loads(reply)))
        return Reported(bool(reply))

    # -- helpers ---------------------------------------------------------------------------------

    def _trial_keys(self, trial: int) -> list[str]:
        k = self.keys
        return [k.trial(trial), k.lease(trial), k.running, k.events, k.meta, k.counters]

    def _check(self, status: str) -> None:
        if status in ("ok", "created", "exists"):
            return
        if status == StudyState.CANCELLED:
            reason = self.meta().get("message") or "no reason given"
            raise StudyCancelled(f"study {self.study!r} was cancelled: {reason}")
        if status == "wiped":
            raise StudyWiped(
                f"the records of study {self.study!r} vanished from Redis while it ran (was "
                "Redis restarted without persistence, or the study deleted?); stopping"
            )
        if status in ("lease_lost", "lost"):
            raise LeaseLost(
                f"this coordinator lost the lock on study {self.study!r} to another one; "
                "stopping without writing"
            )
        raise StoreError(f"unexpected answer from the study store: {status!r}")

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return call_redis(script, keys=keys, args=args)


def _payload_pairs(payload: Mapping[str, Any]) -> list[str]:
    """A message's payload as the scripts compare it with the trial (read_with_payload in
    payload.lua): field, canonical JSON, field, ... An empty one would compare nothing."""
    if not payload:
        raise StoreError("a message's payload is needed to compare it with the trial")
    return [item for name, value in payload.items() for item in (name, canonical_json(value))]
