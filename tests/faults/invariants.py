"""The invariants every fault scenario checks (docs/FAULTS.md I1-I4)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import redis

from tests.harness import CoordinatorProcess, WorkerProcess
from zoomtune.common.store import StudyStore
from zoomtune.common.trial import TrialStatus


def finished_events(store: StudyStore) -> Counter[tuple[int, int]]:
    """How many 'finished' events each (trial, attempt) has in the event stream."""
    counts: Counter[tuple[int, int]] = Counter()
    for _, fields in store.client.xrange(store.keys.events):
        if fields.get("type") == "finished":
            counts[int(fields["trial"]), int(fields["attempt"])] += 1
    return counts


def revisions(store: StudyStore, number: int) -> int:
    """How many of the trial's attempts were sent again by speculation (`send_again.lua`):
    attempts that are not runs, which max_attempts does not limit."""
    return int(store.client.hget(store.keys.trial(number), "revisions") or 0)


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def live_group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`: a daemon started with its own session and the
    pool processes it forked."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def check_invariants(
    store: StudyStore,
    expected_trials: int,
    max_attempts: int,
    processes: list[WorkerProcess | CoordinatorProcess] = (),  # type: ignore[assignment]
    prefix: str = "zoomtune:",
) -> None:
    """I1: exactly N trial records, each terminal exactly once (its recorded attempt has one
    'finished' event; an attempt speculation sent again may have had its own).
    I2: no score counted twice: each COMPLETE trial has one score and one 'finished' event.
    I3: attempts <= max_attempts (attempts sent again by speculation are not runs).
    I4: no key outside the prefix; the processes given, and every process of their process
    groups (pool children), are stopped (call after stopping them).
    """
    trials = store.trials()
    # I1
    assert [t.number for t in trials] == list(range(expected_trials)), "I1: trial records"
    unfinished = [(t.number, t.status.value) for t in trials if not t.status.is_finished()]
    assert unfinished == [], f"I1: unfinished trials {unfinished}"
    events = finished_events(store)
    assert all(events[t.number, t.attempt] == 1 for t in trials), (
        f"I1: finished events {dict(events)}"
    )
    later = [(n, a) for n, a in events if a > store.trial(n).attempt]
    assert later == [], f"I1: finished events of attempts after the recorded one {later}"
    # I2
    complete = [t for t in trials if t.status is TrialStatus.COMPLETE]
    assert all(t.score is not None and t.error is None for t in complete), "I2: scores"
    # I3
    runs = [(t.number, t.attempt - revisions(store, t.number)) for t in trials]
    assert all(1 <= attempts <= max_attempts for _, attempts in runs), f"I3: attempts {runs}"
    # I4
    client: redis.Redis = store.client
    outside = [k for k in client.scan_iter(count=1000) if not str(k).startswith(prefix)]
    assert outside == [], f"I4: keys outside {prefix!r}: {outside[:5]}"
    alive = [p.pid for p in processes if p.process is not None and p.process.poll() is None]
    assert alive == [], f"I4: processes still running: {alive}"
    groups = [p.pid for p in processes if p.process is not None]
    deadline = time.monotonic() + 5  # orphans of a killed daemon may take a moment to be reaped
    while (left := [pid for g in groups for pid in live_group_members(g)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert left == [], f"I4: processes of our daemons still running: {left}"
