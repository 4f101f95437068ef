"""S7: redis-server is SIGKILLed and restarted from its AOF.

Promise: at most about 1 s of writes is lost (appendfsync everysec), and whatever was lost is
redone: QUEUED trials whose message vanished are sent again, RUNNING trials whose lease expired
run again, a round whose record vanished is written again (the same trials: a round is a pure
function of the seed and the earlier rounds). The study still ends with exactly N trials. With
appendfsync always, no COMPLETE result that a worker saw acknowledged is lost.

A SIGKILLed redis-server loses nothing that it wrote to its AOF (the kernel keeps the file);
what everysec can lose is the last second of writes that were not yet fsynced when the machine
went down. The "lost tail" cases simulate that: they cut the AOF back to its length of a moment
before the crash, so the restarted Redis has forgotten the writes of that moment.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig
from tests.harness import study_toml, wait_until
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROUNDS, PER_ROUND = 2, 4
TOML = study_toml(
    rounds=ROUNDS,
    trials_per_round=PER_ROUND,
    options="{ duration = 1.5 }",
    resources=FAST_RESOURCES,
)
BARRIER_TOML = study_toml(
    rounds=ROUNDS,
    trials_per_round=PER_ROUND,
    options="{ duration = 1.5 }",
    resources=FAST_RESOURCES,
    extra="speculate = false",
)
"""For "round-lost": with speculation round 2 is written (ahead) the moment round 1's last
trials start, before a lost tail can begin; a lost round run ahead is simply written ahead again."""


def aof_file(redis: RedisServer) -> Path:
    """The file Redis appends to: appendonly.aof (Redis < 7) or the newest *.incr.aof (7+)."""
    increments = sorted(
        (redis.directory / "appendonlydir").glob("*.incr.aof"),
        key=lambda p: int(p.name.split(".")[-3]),
    )
    return increments[-1] if increments else redis.directory / "appendonly.aof"


def complete(rig: ProcessRig) -> int:
    return sum(t.status is TrialStatus.COMPLETE for t in rig.trials())


def rounds_written(rig: ProcessRig) -> int:
    return int(rig.store().meta().get("rounds", "0")) if rig.trials() else 0


Moment = Callable[[ProcessRig], bool]
CASES: dict[str, tuple[Moment | None, Moment, Moment]] = {
    # name: (when the lost tail starts, or None to lose nothing; when Redis is killed;
    #        what the restarted Redis shows)
    "mid-trial": (
        None,
        lambda rig: len(rig.running()) == 2,
        lambda rig: len(rig.trials()) == PER_ROUND,  # nothing lost
    ),
    "results-lost": (
        lambda rig: len(rig.running()) == 2 and complete(rig) == 0,
        lambda rig: complete(rig) >= 2,
        lambda rig: complete(rig) == 0,  # both results forgotten
    ),
    "round-lost": (
        lambda rig: len(rig.running()) == 2 and complete(rig) == 2,
        lambda rig: rounds_written(rig) == 2,
        lambda rig: rounds_written(rig) == 1 and complete(rig) == 2,  # round 2 forgotten
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_redis_crash_still_ends_with_exactly_n_trials(rig: ProcessRig, case: str) -> None:
    lost_from, kill_at, restored = CASES[case]
    # Given two workers running a study of 2 rounds x 4 trials against Redis with AOF everysec
    rig.workers(2)
    coordinator = rig.coordinator(rig.study_file(BARRIER_TOML if case == "round-lost" else TOML))
    aof = aof_file(rig.redis)

    # When Redis is SIGKILLed at the chosen moment (forgetting the writes since `lost_from`)
    keep = None
    if lost_from is not None:
        wait_until(lambda: lost_from(rig), 60, interval=0.02, what=f"{case}: tail start")
        keep = aof.stat().st_size
    wait_until(lambda: kill_at(rig), 60, interval=0.02, what=f"{case}: kill moment")
    rig.redis.kill()
    if keep is not None:
        assert aof.stat().st_size > keep, "nothing was written in the lost tail"
        with aof.open("r+b") as handle:
            handle.truncate(keep)
    # ... and started again on the same port and folder
    rig.redis.start()
    assert restored(rig), f"{case}: unexpected state after the restart: {rig.trials()}"

    # Then the study completes with exactly N trials, each finished once (I1-I3)
    assert coordinator.wait(120) == 0, coordinator.log()[-3000:]
    assert [t.status for t in rig.trials()] == [TrialStatus.COMPLETE] * ROUNDS * PER_ROUND
    assert [r.number for r in rig.store().rounds()] == list(range(1, ROUNDS + 1))
    rig.check(expected_trials=ROUNDS * PER_ROUND)


FINISHED = re.compile(r"finished study 'demo' trial (\d+) attempt (\d+): score (\S+)")


def test_with_appendfsync_always_no_acknowledged_result_is_lost(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", appendfsync="always").start()
    rig = ProcessRig(redis, tmp_path)
    try:
        # Given a study running against Redis with appendfsync always
        workers = rig.workers(2)
        coordinator = rig.coordinator(rig.study_file(TOML))

        # When Redis is SIGKILLed once workers saw two results acknowledged, and restarted
        wait_until(lambda: complete(rig) >= 2, 60, interval=0.02, what="2 results")
        redis.kill()
        acknowledged = {
            (int(n), int(attempt), float(score))
            for worker in workers
            for n, attempt, score in FINISHED.findall(worker.log())
        }
        redis.start()

        # Then every result acknowledged before the crash is still there, unchanged
        assert len(acknowledged) >= 2
        assert coordinator.wait(120) == 0, coordinator.log()[-3000:]
        trials = {t.number: t for t in rig.trials()}
        for number, attempt, score in acknowledged:
            assert trials[number].status is TrialStatus.COMPLETE
            assert trials[number].attempt == attempt
            assert trials[number].score == pytest.approx(score, rel=1e-5)
        rig.check(expected_trials=ROUNDS * PER_ROUND)
    finally:
        rig.close()
        redis.kill()
