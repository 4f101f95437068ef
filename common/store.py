"""The study store: the Redis record of a study, and the only source of truth about its trials.

Celery is only the transport (it delivers at least once, sometimes never, sometimes many times).
Every state change here is one Lua script, so it is an atomic compare-and-set:

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
  the study's `max_attempts`, then FAILED. A finished trial never changes again;
- a cancelled study (`cancel`, from any process) stays cancelled: its QUEUED trials fail, no
  round, attempt or requeue of it starts again, and only running attempts may still finish.

Every key zoomtune writes for a study (`Keys`), under the configurable prefix; `{study}` is a
Redis Cluster hash tag, so one study's keys live on one node and a script may touch several:

    {prefix}studies                 set     names of all studies
    {prefix}{study}:spec            string  the study file as canonical JSON
    {prefix}{study}:meta            hash    state, epoch, coordinator, max_attempts, rounds, ...
    {prefix}{study}:lock            string  "<token> <host:pid>" of the coordinator, with a TTL
    {prefix}{study}:round:<r>       hash    round number, box, rungs, first trial, trial count
    {prefix}{study}:trial:<n>       hash    round, params, rungs, status, attempt, token, score, ...
    {prefix}{study}:lease:<n>       string  the token of the attempt running trial n, with a TTL
    {prefix}{study}:running         set     numbers of the RUNNING trials (what the reaper scans)
    {prefix}{study}:reports:<n>     list    intermediate values [step, value] as JSON
    {prefix}{study}:events          stream  started / finished / requeued / rejected / round / study
    {prefix}{study}:counters        hash    dropped deliveries and results, by reason
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from common.errors import (
    BrokerError,
    LeaseLost,
    StoreError,
    StudyCancelled,
    StudyExists,
    StudyLocked,
    StudyNotFound,
    StudyWiped,
)
from common.settings import redact_url
from common.trial import Rung, Trial, TrialResult, TrialStatus, rungs_from_json

EVENTS_MAXLEN = 100_000
"""The event stream is trimmed to about this many entries; the trial hashes stay the record."""

REPORTS_MAXLEN = 10_000
"""At most this many intermediate values are kept per trial."""

COUNTERS = (
    "duplicate_deliveries",  # a message for a trial that is running or finished
    "stale_deliveries",  # a message for an attempt that was superseded
    "forged_messages",  # a message for an unknown trial, a future attempt, or other params
    "stale_results",  # a result from a superseded attempt
    "late_results",  # a result for a trial already finished
    "forged_results",  # a result with a wrong token or for an unknown trial
    "leases_expired",  # attempts the reaper found dead
    "workers_lost",  # attempts handed back by a worker whose process died or was preempted
)


def connect(url: str) -> redis.Redis:
    """A client that decodes to str and retries dropped connections with backoff."""
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=30,
            socket_keepalive=True,
            health_check_interval=15,
            retry=TransientRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    except ValueError as exc:
        raise BrokerError(f"bad broker URL {redact_url(url)!r}: {exc}") from exc


def is_refused(exc: BaseException) -> bool:
    """True for connection errors that trying again cannot fix: Redis refused the credentials,
    or its TLS certificate failed verification (redis-py reports both as ConnectionError)."""
    return isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError) or (
        isinstance(exc, redis.ConnectionError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


MISSING_CREDENTIALS = (
    "the broker needs a password: put it in the URL (redis://:PASSWORD@host:port/0) "
    "or ZOOMTUNE_BROKER_URL"
)

_NO_CREDENTIALS = ("NOAUTH", "Authentication required", "HELLO must be called with the client")
"""What Redis answers a client that sent no password (redis-py's HELLO gets the last one)."""


def refusal(exc: BaseException) -> str:
    """Why Redis refused this client, in words for people (for an `is_refused` error)."""
    if any(text in str(exc) for text in _NO_CREDENTIALS):
        return MISSING_CREDENTIALS
    reason = str(exc).rstrip(".")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return f"the broker's TLS certificate failed verification: {reason}"
    return f"the broker refused the credentials: {reason}"


class _Refused(Exception):
    def __init__(self, error: redis.ConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


class TransientRetry(Retry):
    """redis-py's Retry, except that refused connections (`is_refused`) fail at once."""

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            try:
                return do()
            except redis.ConnectionError as exc:
                if is_refused(exc):
                    raise _Refused(exc) from exc
                raise

        try:
            return super().call_with_retry(once, fail, *args, **kwargs)
        except _Refused as refused:
            raise refused.error from None


def call_redis(function: Any, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, with Redis's refusals and outages as BrokerError."""
    try:
        return function(*args, **kwargs)
    except redis.AuthenticationError as exc:
        raise BrokerError(refusal(exc)) from exc
    except redis.ConnectionError as exc:
        raise BrokerError(f"cannot reach Redis: {exc}") from exc
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc):
            raise BrokerError(MISSING_CREDENTIALS) from exc
        if "NOPERM" in str(exc):
            raise BrokerError(f"Redis refused the command: {exc}") from exc
        raise


@dataclass(frozen=True)
class Keys:
    """Every Redis key name of one study, in one place."""

    prefix: str
    study: str

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}{{{self.study}}}:{suffix}"

    @staticmethod
    def studies(prefix: str) -> str:
        return f"{prefix}studies"

    @property
    def spec(self) -> str:
        return self._key("spec")

    @property
    def meta(self) -> str:
        return self._key("meta")

    @property
    def lock(self) -> str:
        return self._key("lock")

    @property
    def running(self) -> str:
        return self._key("running")

    @property
    def events(self) -> str:
        return self._key("events")

    @property
    def counters(self) -> str:
        return self._key("counters")

    def round(self, number: int) -> str:
        return self._key(f"round:{number}")

    @property
    def trial_prefix(self) -> str:
        return self._key("trial:")

    def trial(self, number: int) -> str:
        return f"{self.trial_prefix}{number}"

    @property
    def lease_prefix(self) -> str:
        return self._key("lease:")

    def lease(self, number: int) -> str:
        return f"{self.lease_prefix}{number}"

    def reports(self, number: int) -> str:
        return self._key(f"reports:{number}")

    def all_patterns(self) -> str:
        return self._key("*")


# ---------------------------------------------------------------------------------------------
# Lua. Every script that changes a trial is here; each runs atomically on the Redis server and
# reads the time from Redis (TIME), never from the caller, so clocks on workers do not matter.

_NOW = """
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
"""

# Send a running trial back to the queue as the next attempt, or fail it when attempts ran out
# or the study was cancelled (nobody would dispatch it again).
_REQUEUE_OR_FAIL = """
local function requeue_or_fail(trial_key, lease_key, running_key, events_key, meta_key, n,
                               attempt, max_attempts, reason)
  local t = now()
  redis.call('DEL', lease_key)
  redis.call('SREM', running_key, n)
  if redis.call('HGET', meta_key, 'state') == 'cancelled' then
    reason = 'cancelled: the study was cancelled (' .. reason .. ')'
  elseif attempt < max_attempts then
    redis.call('HSET', trial_key, 'status', 'queued', 'attempt', attempt + 1,
               'last_error', reason, 'queued_at', t)
    redis.call('HDEL', trial_key, 'token', 'started_at', 'pid')
    redis.call('XADD', events_key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'requeued',
               'trial', n, 'attempt', attempt + 1, 'reason', reason)
    return 'requeued'
  end
  redis.call('HSET', trial_key, 'status', 'failed', 'error', reason, 'finished_at', t)
  redis.call('XADD', events_key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
             'trial', n, 'attempt', attempt, 'status', 'failed')
  return 'failed'
end
"""

_ACQUIRE = """
-- KEYS: lock, meta. ARGV: value, ttl_ms, previous value that may be taken over ('' for none).
local current = redis.call('GET', KEYS[1])
if not current or current == ARGV[1] or (ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'coordinator', ARGV[1]) end
  return {'ok'}
end
return {'locked', current, redis.call('PTTL', KEYS[1])}
"""

_RENEW = """
-- KEYS: lock, meta. ARGV: value, ttl_ms, epoch.
if redis.call('EXISTS', KEYS[2]) == 0 then return 'wiped' end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[3] then return 'wiped' end
if redis.call('HGET', KEYS[2], 'state') == 'cancelled' then return 'cancelled' end
local last = redis.call('HGET', KEYS[2], 'coordinator')
if last and last ~= ARGV[1] then return 'lost' end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 'lost' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'ok'
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_CREATE = (
    _NOW
    + """
-- KEYS: lock, spec, meta, studies. ARGV: lock value, spec json, epoch, study, max_attempts.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
local existing = redis.call('GET', KEYS[2])
if existing then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {'corrupt'} end
  if existing ~= ARGV[2] then return {'different'} end
  redis.call('HSET', KEYS[3], 'coordinator', ARGV[1])
  return {'exists', redis.call('HGET', KEYS[3], 'epoch')}
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'state', 'running', 'epoch', ARGV[3], 'created_at', now(),
           'max_attempts', ARGV[5], 'rounds', 0, 'trials', 0, 'coordinator', ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
return {'created', ARGV[3]}
"""
)

_WRITE_ROUND = (
    _NOW
    + """
-- KEYS: lock, meta, round, events.
-- ARGV: lock value, epoch, round number, box json, trial key prefix, rungs json (the same for
--       every trial of the round), then one params json per trial. The round is a hash so
--       that the JSON written by Python is stored untouched.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
if redis.call('HGET', KEYS[2], 'state') == 'cancelled' then return {'cancelled'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'exists'} end
local first = tonumber(redis.call('HGET', KEYS[2], 'trials') or '0')
local t = now()
local count = #ARGV - 6
for i = 0, count - 1 do
  redis.call('HSET', ARGV[5] .. (first + i), 'number', first + i, 'round', ARGV[3],
             'params', ARGV[7 + i], 'rungs', ARGV[6], 'status', 'queued', 'attempt', 1,
             'queued_at', t)
end
redis.call('HSET', KEYS[3], 'round', ARGV[3], 'box', ARGV[4], 'rungs', ARGV[6],
           'first_trial', first, 'trials', count, 'written_at', t)
redis.call('HSET', KEYS[2], 'rounds', ARGV[3], 'trials', first + count)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'round', 'round', ARGV[3])
return {'ok', first, t}
"""
)

_START = (
    _NOW
    + """
-- KEYS: trial, lease, running, events, meta, counters.
-- ARGV: number, attempt, token, worker, host, device, pid, lease_ms, then the message's
--       payload as pairs: a field of the trial's record and the canonical JSON the message
--       carries for it. A message whose payload is not the trial's is a forgery.
local state = redis.call('HGET', KEYS[5], 'state')
if not state then return {'unknown_study'} end
local fields = {'status', 'attempt', 'token'}
for i = 9, #ARGV, 2 do fields[#fields + 1] = ARGV[i] end
local h = redis.call('HMGET', KEYS[1], unpack(fields))
if not h[1] then
  redis.call('HINCRBY', KEYS[6], 'forged_messages', 1)
  return {'unknown_trial'}
end
local j = 4
for i = 9, #ARGV, 2 do
  if h[j] ~= ARGV[i + 1] then
    redis.call('HINCRBY', KEYS[6], 'forged_messages', 1)
    return {'forged', ARGV[i]}
  end
  j = j + 1
end
local attempt = tonumber(ARGV[2])
local stored = tonumber(h[2])
if h[1] == 'running' and h[3] == ARGV[3] and attempt == stored then
  return {'ok', redis.call('HGET', KEYS[1], 'started_at')}
end
if h[1] == 'complete' or h[1] == 'failed' or h[1] == 'pruned' then
  if state == 'cancelled' then return {'study_cancelled'} end
  redis.call('HINCRBY', KEYS[6], 'duplicate_deliveries', 1)
  return {'finished'}
end
if attempt < stored then
  redis.call('HINCRBY', KEYS[6], 'stale_deliveries', 1)
  return {'stale'}
end
if attempt > stored then
  redis.call('HINCRBY', KEYS[6], 'forged_messages', 1)
  return {'ahead'}
end
if h[1] == 'running' then
  redis.call('HINCRBY', KEYS[6], 'duplicate_deliveries', 1)
  return {'duplicate'}
end
if state ~= 'running' then return {'study_' .. state} end
local t = now()
redis.call('HSET', KEYS[1], 'status', 'running', 'token', ARGV[3], 'worker', ARGV[4],
           'host', ARGV[5], 'device', ARGV[6], 'pid', ARGV[7], 'started_at', t)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[8])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'started', 'trial', ARGV[1],
           'attempt', ARGV[2], 'worker', ARGV[4])
return {'ok', t}
"""
)

_HEARTBEAT = """
-- KEYS: trial, lease. ARGV: attempt, token, lease_ms.
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'token')
if h[1] ~= 'running' or tonumber(h[2]) ~= tonumber(ARGV[1]) or h[3] ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

_FINISH = (
    _NOW
    + _REQUEUE_OR_FAIL
    + """
-- KEYS: trial, lease, running, events, meta, counters.
-- ARGV: number, attempt, token, status, score, error, retry ('1' to retry a failure),
--       last step, last value (of a pruned trial; '' for none).
if redis.call('EXISTS', KEYS[5]) == 0 then return 'unknown_study' end
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'token')
if not h[1] then
  redis.call('HINCRBY', KEYS[6], 'forged_results', 1)
  return 'unknown_trial'
end
local attempt = tonumber(ARGV[2])
if tonumber(h[2]) ~= attempt then
  redis.call('HINCRBY', KEYS[6], 'stale_results', 1)
  return 'stale'
end
if h[1] ~= 'running' then
  if h[3] == ARGV[3] then return 'ok' end
  redis.call('HINCRBY', KEYS[6], 'late_results', 1)
  return 'finished'
end
if h[3] ~= ARGV[3] then
  redis.call('HINCRBY', KEYS[6], 'forged_results', 1)
  return 'forged'
end
if ARGV[4] == 'failed' and ARGV[7] == '1' then
  local max_attempts = tonumber(redis.call('HGET', KEYS[5], 'max_attempts') or '1')
  if attempt < max_attempts then
    return requeue_or_fail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], attempt,
                           max_attempts, ARGV[6])
  end
end
local t = now()
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finished_at', t)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'score', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'last_step', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'last_value', ARGV[9]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
           'trial', ARGV[1], 'attempt', ARGV[2], 'status', ARGV[4])
return 'ok'
"""
)

_ABANDON = (
    _NOW
    + _REQUEUE_OR_FAIL
    + """
-- KEYS: trial, lease, running, events, meta, counters.
-- ARGV: number, attempt, host, pid, reason.
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'host', 'pid')
if h[1] ~= 'running' or tonumber(h[2]) ~= tonumber(ARGV[2]) or h[3] ~= ARGV[3]
   or h[4] ~= ARGV[4] then
  return 'ignored'
end
redis.call('HINCRBY', KEYS[6], 'workers_lost', 1)
local max_attempts = tonumber(redis.call('HGET', KEYS[5], 'max_attempts') or '1')
return requeue_or_fail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1],
                       tonumber(ARGV[2]), max_attempts, ARGV[5])
"""
)

_FAIL_ATTEMPT = (
    _NOW
    + """
-- A worker's main process ends an attempt it watched fail (e.g. the hard time limit).
-- KEYS: trial, lease, running, events. ARGV: number, attempt, host, pid, reason.
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'host', 'pid')
if h[1] ~= 'running' or tonumber(h[2]) ~= tonumber(ARGV[2]) or h[3] ~= ARGV[3]
   or h[4] ~= ARGV[4] then
  return 'ignored'
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[5], 'finished_at', now())
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
           'trial', ARGV[1], 'attempt', ARGV[2], 'status', 'failed')
return 'ok'
"""
)

_REJECT = """
-- A worker that cannot run the study's objective says so on the trial and leaves it QUEUED (a
-- worker that has the objective may still run it); the coordinator sees the event and stops.
-- KEYS: trial, events, meta. ARGV: number, attempt, worker, reason.
if redis.call('HGET', KEYS[3], 'state') ~= 'running' then return 'ignored' end
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if h[1] ~= 'queued' or tonumber(h[2]) ~= tonumber(ARGV[2]) then return 'ignored' end
redis.call('HSET', KEYS[1], 'last_error', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'rejected', 'trial', ARGV[1],
           'attempt', ARGV[2], 'worker', ARGV[3], 'reason', ARGV[4])
return 'ok'
"""

_REAP = (
    _NOW
    + _REQUEUE_OR_FAIL
    + """
-- KEYS: lock, meta, running, events, counters. ARGV: lock value, epoch, trial prefix,
-- lease prefix. Returns {'ok', n1, outcome1, attempt1, n2, ...} for every expired lease.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
local max_attempts = tonumber(redis.call('HGET', KEYS[2], 'max_attempts') or '1')
local out = {'ok'}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('EXISTS', ARGV[4] .. n) == 0 then
    local trial_key = ARGV[3] .. n
    local h = redis.call('HMGET', trial_key, 'status', 'attempt')
    if h[1] == 'running' then
      redis.call('HINCRBY', KEYS[5], 'leases_expired', 1)
      local attempt = tonumber(h[2])
      local outcome = requeue_or_fail(trial_key, ARGV[4] .. n, KEYS[3], KEYS[4], KEYS[2], n,
                                      attempt, max_attempts, 'lease expired (worker lost)')
      table.insert(out, n)
      table.insert(out, outcome)
      table.insert(out, attempt + 1)
    else
      redis.call('SREM', KEYS[3], n)
    end
  end
end
return out
"""
)

_REPORT = """
-- KEYS: trial, reports. ARGV: attempt, token, entry json.
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'token')
if h[1] ~= 'running' or tonumber(h[2]) ~= tonumber(ARGV[1]) or h[3] ~= ARGV[2] then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -REPORTS_MAXLEN, -1)
return 1
"""

_SET_STATE = (
    _NOW
    + """
-- KEYS: lock, meta, events. ARGV: lock value ('' to skip the check), epoch, state, message.
if redis.call('EXISTS', KEYS[2]) == 0 then return 'wiped' end
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lease_lost' end
if redis.call('HGET', KEYS[2], 'state') == 'cancelled' then return 'cancelled' end
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'message', ARGV[4], 'finished_at', now())
redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'study', 'state', ARGV[3])
return 'ok'
"""
)

_CANCEL = (
    _NOW
    + """
-- Stop a study for good. Any process may run it (no lock): `coordinator cancel`.
-- KEYS: meta, events. ARGV: reason.
-- Only marks the study cancelled (a few commands, whatever its size): from then on no round is
-- written, no attempt starts (workers drop the messages of its QUEUED trials) and a trial
-- handed back fails; `_CANCEL_TRIALS` then fails the QUEUED trials a batch at a time. The
-- study event goes first, so a coordinator reading the stream learns of the cancel before it
-- sees the trials finish. Returns the state it found, the trial count and the epoch.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown_study'} end
if state ~= 'running' and state ~= 'cancelled' then return {'finished', state} end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'message', ARGV[1], 'finished_at', now())
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'study',
             'state', 'cancelled')
end
return {state == 'running' and 'ok' or 'again', redis.call('HGET', KEYS[1], 'trials') or '0',
        redis.call('HGET', KEYS[1], 'epoch') or ''}
"""
)

_CANCEL_TRIALS = (
    _NOW
    + """
-- One batch of a cancel: trials first .. last - 1 of a study already marked cancelled.
-- KEYS: meta, events, running. ARGV: trial prefix, lease prefix, reason, epoch, first, last.
-- QUEUED trials fail with the reason; RUNNING trials finish normally, except those whose lease
-- already expired. 'gone' when the study is no longer the cancelled one (deleted meanwhile).
if redis.call('HGET', KEYS[1], 'state') ~= 'cancelled' then return {'gone'} end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[4] then return {'gone'} end
local t = now()
local cancelled, running = 0, 0
for n = tonumber(ARGV[5]), tonumber(ARGV[6]) - 1 do
  local key = ARGV[1] .. n
  local h = redis.call('HMGET', key, 'status', 'attempt')
  local expired = h[1] == 'running' and redis.call('EXISTS', ARGV[2] .. n) == 0
  if h[1] == 'queued' or expired then
    redis.call('SREM', KEYS[3], n)
    redis.call('HSET', key, 'status', 'failed', 'error', ARGV[3], 'finished_at', t)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
               'trial', n, 'attempt', h[2], 'status', 'failed')
    cancelled = cancelled + 1
  elseif h[1] == 'running' then
    running = running + 1
  end
end
return {'ok', cancelled, running}
"""
)

CANCEL_BATCH = 500
"""Trials one `_CANCEL_TRIALS` call goes through: each call is short (about 6 ms, at most tens of
ms on a busy machine), so cancelling 100,000 queued trials never holds Redis for long (one
script for all of them took 1.4 to 4.3 s, stalling the heartbeats of every study on it)."""


# ---------------------------------------------------------------------------------------------
# Records read back from the store.


@dataclass(frozen=True)
class RoundRecord:
    """A round as written: its number (1-based), the box it sampled, and its trial numbers."""

    number: int
    box: Mapping[str, Any]
    first_trial: int
    trials: int
    queued_at: float | None = None
    """Redis time at which its trials were queued, when this process has just written the round
    (`StudyStore.write_round`); None for a round read from the store."""
    rungs: tuple[Rung, ...] = ()
    """The early-stopping rungs its trials carry (also stored in each trial's hash)."""

    @property
    def trial_numbers(self) -> range:
        return range(self.first_trial, self.first_trial + self.trials)

    @classmethod
    def from_hash(cls, row: Mapping[str, str]) -> RoundRecord:
        return cls(
            number=int(row["round"]),
            box=json.loads(row.get("box") or "{}"),
            first_trial=int(row["first_trial"]),
            trials=int(row["trials"]),
            rungs=rungs_from_json(json.loads(row.get("rungs") or "[]")),
        )


@dataclass(frozen=True)
class Event:
    """One entry of the study's event stream."""

    id: str
    type: str
    trial: int | None
    attempt: int | None
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Requeued:
    """A trial the reaper sent back to the queue (or failed, when attempts ran out)."""

    trial: int
    outcome: str  # "requeued" or "failed"
    attempt: int


@dataclass(frozen=True)
class Cancelled:
    """What `StudyStore.cancel` did: the QUEUED trials it failed, the RUNNING ones it left."""

    trials_cancelled: int
    trials_running: int
    already: bool
    """The study had been cancelled before (this call only cleaned up)."""


@dataclass(frozen=True)
class StartOutcome:
    """Whether a worker may run an attempt; `reason` says why not."""

    ok: bool
    reason: str
    started_at: float | None = None
    mismatch: str = ""
    """For reason "forged": the payload field whose value is not the trial's."""


# ---------------------------------------------------------------------------------------------


def owner_id() -> str:
    """host:pid of this process, as shown to a second coordinator that is refused."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class CoordinatorLock:
    """Proof that this process holds a study's lock; every coordinator write presents it."""

    value: str
    ttl: float

    @property
    def owner(self) -> str:
        return self.value.split(" ", 1)[1]


class StudyStore:
    """The Redis record of one study. Stateless apart from the client: safe to share."""

    def __init__(self, client: redis.Redis, prefix: str, study: str) -> None:
        self.client = client
        self.keys = Keys(prefix, study)
        self.study = study

        def register(text: str) -> Any:
            text = text.replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))
            return client.register_script(text.replace("REPORTS_MAXLEN", str(REPORTS_MAXLEN)))

        self._acquire = register(_ACQUIRE)
        self._renew = register(_RENEW)
        self._release = register(_RELEASE)
        self._create = register(_CREATE)
        self._write_round = register(_WRITE_ROUND)
        self._start = register(_START)
        self._heartbeat = register(_HEARTBEAT)
        self._finish = register(_FINISH)
        self._abandon = register(_ABANDON)
        self._fail_attempt = register(_FAIL_ATTEMPT)
        self._reject = register(_REJECT)
        self._reap = register(_REAP)
        self._report = register(_REPORT)
        self._set_state = register(_SET_STATE)
        self._cancel = register(_CANCEL)
        self._cancel_trials = register(_CANCEL_TRIALS)

    # -- coordinator: the lock ----------------------------------------------------------------

    def acquire(self, ttl: float, owner: str | None = None) -> CoordinatorLock:
        """Take the study's lock, or raise StudyLocked naming who holds it.

        A lock left by a dead coordinator on this same host is taken over at once; one held
        from another host is refused until it expires.
        """
        value = f"{secrets.token_hex(8)} {owner or owner_id()}"
        ttl_ms = str(max(1, int(ttl * 1000)))
        keys = [self.keys.lock, self.keys.meta]
        result = self._run(self._acquire, keys, [value, ttl_ms, ""])
        if result[0] == "locked":
            holder, pttl = str(result[1]), int(result[2])
            if _is_dead_local(holder.split(" ", 1)[-1]):
                result = self._run(self._acquire, keys, [value, ttl_ms, holder])
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
            self._renew, [self.keys.lock, self.keys.meta], [lock.value, _ms(lock.ttl), epoch]
        )
        self._check(outcome)

    def release(self, lock: CoordinatorLock) -> None:
        self._run(self._release, [self.keys.lock], [lock.value])

    # -- coordinator: study, rounds, reaping ----------------------------------------------------

    def create(self, lock: CoordinatorLock, spec: Mapping[str, Any], max_attempts: int) -> str:
        """Store a new study, or check that the stored one has the same spec. Returns its epoch.

        The epoch is a random id of this study's records: if it changes or disappears, the
        records were wiped or replaced while the coordinator ran.
        """
        result = self._run(
            self._create,
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
    ) -> RoundRecord:
        """Write round `number` and its QUEUED trials, once. A round already written is returned
        unchanged (the coordinator never re-samples a round).

        Each trial's params are stored as canonical JSON, the encoding `start` compares a
        message's payload with.

        `rungs` (early stopping) are stored in every trial's hash as canonical JSON, as their
        messages carry them: [[step, threshold], ...]."""
        box_json = canonical_json(box)
        rungs_json = canonical_json([rung.to_list() for rung in rungs])
        args: list[Any] = [lock.value, epoch, number, box_json, self.keys.trial_prefix, rungs_json]
        args.extend(canonical_json(p) for p in params)
        result = self._run(
            self._write_round,
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
        )

    def round(self, number: int) -> RoundRecord:
        row = self._call(self.client.hgetall, self.keys.round(number))
        if not row:
            raise StudyNotFound(f"study {self.study!r} has no round {number}")
        return RoundRecord.from_hash(row)

    def reap(self, lock: CoordinatorLock, epoch: str) -> list[Requeued]:
        """Send every RUNNING trial whose lease expired back to the queue (or fail it)."""
        result = self._run(
            self._reap,
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

    def set_state(self, state: str, message: str = "", lock: CoordinatorLock | None = None) -> None:
        """Mark the study running, complete, failed or cancelled."""
        outcome = self._run(
            self._set_state,
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
        result = self._run(self._cancel, [self.keys.meta, self.keys.events], [reason])
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
            done = self._run(self._cancel_trials, keys, args)
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

        `payload` is what the message says about the trial (`TrialMessage.payload`: its params,
        and any field added later), by field of the trial's record. Each value must be the one
        stored, compared as canonical JSON, the encoding `write_round` stores; a message that
        differs is refused as "forged" and counted, and the trial is left as it was.
        """
        if not payload:
            raise StoreError("a start needs the message's payload to compare with the trial")
        args: list[Any] = [trial, attempt, token, worker, host, device, pid, _ms(lease)]
        for name, value in payload.items():
            args += [name, canonical_json(value)]
        result = self._run(self._start, self._trial_keys(trial), args)
        if result[0] == "ok":
            return StartOutcome(ok=True, reason="ok", started_at=float(result[1]))
        if result[0] == "forged":
            return StartOutcome(ok=False, reason="forged", mismatch=str(result[1]))
        return StartOutcome(ok=False, reason=str(result[0]))

    def heartbeat(self, trial: int, attempt: int, token: str, lease: float) -> bool:
        """Renew the lease; False when this attempt no longer owns the trial."""
        return bool(
            self._run(
                self._heartbeat,
                [self.keys.trial(trial), self.keys.lease(trial)],
                [attempt, token, _ms(lease)],
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
                self._finish,
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
            self._run(self._abandon, self._trial_keys(trial), [trial, attempt, host, pid, reason])
        )

    def fail_attempt(self, trial: int, attempt: int, host: str, pid: int, reason: str) -> str:
        """Fail an attempt that process `pid` on `host` was running (e.g. it hit its time
        limit), without retrying it."""
        keys = self._trial_keys(trial)[:4]
        return str(self._run(self._fail_attempt, keys, [trial, attempt, host, pid, reason]))

    def reject(self, trial: int, attempt: int, worker: str, reason: str) -> str:
        """Say that `worker` cannot run attempt `attempt` of the QUEUED `trial`, and why (its
        objective is not registered there). The trial stays QUEUED with the reason as its
        `last_error`, and a "rejected" event tells the coordinator. Returns "ok", or "ignored"
        when the trial is no longer that queued attempt or the study is not running."""
        keys = [self.keys.trial(trial), self.keys.events, self.keys.meta]
        return str(self._run(self._reject, keys, [trial, attempt, worker, reason]))

    def report(self, trial: int, attempt: int, token: str, step: int, value: float) -> bool:
        """Append an intermediate value; False when this attempt no longer owns the trial."""
        entry = json.dumps([step, value])
        return bool(
            self._run(
                self._report,
                [self.keys.trial(trial), self.keys.reports(trial)],
                [attempt, token, entry],
            )
        )

    # -- reading ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self._call(self.client.exists, self.keys.meta))

    def spec(self) -> dict[str, Any]:
        text = self._call(self.client.get, self.keys.spec)
        if text is None:
            raise StudyNotFound(f"no study named {self.study!r} in this broker")
        return cast(dict[str, Any], json.loads(text))

    def meta(self) -> dict[str, str]:
        meta = cast(dict[str, str], self._call(self.client.hgetall, self.keys.meta))
        if not meta:
            raise StudyNotFound(f"no study named {self.study!r} in this broker")
        return meta

    def rounds(self) -> list[RoundRecord]:
        """Every round written so far, in order."""
        count = int(self.meta().get("rounds", "0"))
        pipe = self.client.pipeline(transaction=False)
        for number in range(1, count + 1):
            pipe.hgetall(self.keys.round(number))
        return [RoundRecord.from_hash(row) for row in self._call(pipe.execute) if row]

    def trials(self, numbers: Iterable[int] | None = None) -> list[Trial]:
        """Trial records, in the order asked (default: all trials of the study)."""
        if numbers is None:
            numbers = range(int(self.meta().get("trials", "0")))
        numbers = list(numbers)
        pipe = self.client.pipeline(transaction=False)
        for n in numbers:
            pipe.hgetall(self.keys.trial(n))
        rows = self._call(pipe.execute)
        return [self._decode_trial(n, row) for n, row in zip(numbers, rows, strict=True) if row]

    def trial(self, number: int) -> Trial:
        found = self.trials([number])
        if not found:
            raise StudyNotFound(f"study {self.study!r} has no trial {number}")
        return found[0]

    def reports(self, number: int) -> list[tuple[int, float]]:
        """Trial `number`'s intermediate values `(step, value)`, in the order reported."""
        return self.all_reports([number]).get(number, [])

    def all_reports(self, numbers: Iterable[int]) -> dict[int, list[tuple[int, float]]]:
        """The intermediate values of each trial in `numbers` that reported any (one pipeline),
        in report order (all its attempts')."""
        numbers = list(numbers)
        pipe = self.client.pipeline(transaction=False)
        for n in numbers:
            pipe.lrange(self.keys.reports(n), 0, -1)
        found = self._call(pipe.execute)
        return {
            n: [(int(step), float(value)) for step, value in map(json.loads, entries)]
            for n, entries in zip(numbers, found, strict=True)
            if entries
        }

    def counters(self) -> dict[str, int]:
        raw = cast(dict[str, str], self._call(self.client.hgetall, self.keys.counters))
        return {name: int(raw.get(name, "0")) for name in COUNTERS}

    def last_event_id(self) -> str:
        entries = self._call(self.client.xrevrange, self.keys.events, count=1)
        return str(entries[0][0]) if entries else "0-0"

    def events(self, after: str, block: float) -> list[Event]:
        """Events after id `after`, waiting up to `block` seconds for the first one."""
        reply = self._call(
            self.client.xread, {self.keys.events: after}, count=1000, block=int(_ms(block))
        )
        found: list[Event] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                found.append(
                    Event(
                        id=str(entry_id),
                        type=fields.get("type", ""),
                        trial=_optional_int(fields.get("trial")),
                        attempt=_optional_int(fields.get("attempt")),
                        fields=fields,
                    )
                )
        return found

    def delete(self) -> int:
        """Remove every key of the study (used by `coordinator delete` and tests)."""
        removed = 0
        for key in self._call(self.client.scan_iter, match=self.keys.all_patterns(), count=1000):
            removed += int(self._call(self.client.delete, key))
        self._call(self.client.srem, Keys.studies(self.keys.prefix), self.study)
        return removed

    # -- helpers ---------------------------------------------------------------------------------

    def _trial_keys(self, trial: int) -> list[str]:
        k = self.keys
        return [k.trial(trial), k.lease(trial), k.running, k.events, k.meta, k.counters]

    def _decode_trial(self, number: int, row: Mapping[str, str]) -> Trial:
        return Trial.from_dict(
            {
                "study": self.study,
                "number": number,
                "round": row.get("round", "0"),
                "params": json.loads(row.get("params", "{}")),
                "status": row.get("status", "queued"),
                "attempt": row.get("attempt", "1"),
                "score": row.get("score"),
                "error": row.get("error") or None,
                "last_step": row.get("last_step"),
                "last_value": row.get("last_value"),
                "rungs": json.loads(row.get("rungs") or "[]"),
                "last_error": row.get("last_error") or None,
                "worker": row.get("worker"),
                "host": row.get("host"),
                "device": row.get("device"),
                "queued_at": row.get("queued_at"),
                "started_at": row.get("started_at"),
                "finished_at": row.get("finished_at"),
            }
        )

    def _check(self, status: str) -> None:
        if status in ("ok", "created", "exists"):
            return
        if status == "cancelled":
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
        return self._call(script, keys=keys, args=args)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return call_redis(function, *args, **kwargs)


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: equal data gives equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def list_studies(client: redis.Redis, prefix: str) -> list[str]:
    return sorted(call_redis(client.smembers, Keys.studies(prefix)))


def _ms(seconds: float) -> str:
    return str(max(1, math.ceil(seconds * 1000)))


def _optional_int(value: str | None) -> int | None:
    return None if value is None or value == "" else int(value)


def _is_dead_local(owner: str) -> bool:
    """True when `owner` ("host:pid") is a process on this host that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


__all__ = [
    "COUNTERS",
    "Cancelled",
    "CoordinatorLock",
    "Event",
    "Keys",
    "Requeued",
    "RoundRecord",
    "StartOutcome",
    "StudyStore",
    "TrialStatus",
    "call_redis",
    "canonical_json",
    "connect",
    "is_refused",
    "list_studies",
    "refusal",
]
