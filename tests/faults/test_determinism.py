"""Determinism: a study with a deterministic objective is a function of its seed.

Round r's trials depend only on the seed, r and round r's box, and the box only on the scores
of rounds 1..r-1 in trial order (not finish order). So the same study gives the same trials
and scores with 1 worker or 4, in whatever order they finish, and after the coordinator and a
worker were SIGKILLed mid-round. Each run is compared with the study run in-process without
Redis (`StudyRun.reference`).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig, StudyRun
from tests.harness import study_toml, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


PLAIN = 'x = { type = "float", low = 0.0, high = 1.0 }\ny = { type = "int", low = 1, high = 8 }'
CONDITIONAL = (
    'branch = { type = "choice", values = ["a", "b"] }\n'
    'x = { type = "float", low = 0.0, high = 1.0, when = { branch = "a" } }\n'
    'y = { type = "int", low = 1, high = 8, when = { branch = "b" } }'
)
"""x only in branch a, y only in branch b (the score reads an absent one as 0)."""


def toml(name: str, objective: str, options: str, lag: int = 0, space: str = PLAIN) -> str:
    return study_toml(
        name=name,
        objective=objective,
        rounds=3,
        trials_per_round=6,
        options=options,
        resources=FAST_RESOURCES,
        space=space,
        extra=f"top_k = 2\nlag = {lag}",
    )


# lag 4: rolling rounds, a round goes out while the last 4 trials before it still run;
# CONDITIONAL: each trial carries only the parameters of its branch
@pytest.mark.parametrize(
    ("lag", "space"), [(0, PLAIN), (4, PLAIN), (0, CONDITIONAL)], ids=["lag0", "lag4", "when"]
)
def test_one_worker_and_four_workers_give_the_same_study(
    rig: ProcessRig, lag: int, space: str
) -> None:
    reference = StudyRun.reference(toml("demo", "jittery", "{}", lag, space))

    # Given one worker, a study whose trials each sleep a random 0-0.3 s
    rig.workers(1, objectives=("jittery",))
    one_file = rig.study_file(toml("one", "jittery", "{}", lag, space), "one.toml")
    one = rig.coordinator(one_file, "one")
    assert one.wait(120) == 0, one.log()[-3000:]

    # And the same study (another name) with four workers, finishing in another order
    rig.workers(3, objectives=("jittery",))
    four_file = rig.study_file(toml("four", "jittery", "{}", lag, space), "four.toml")
    four = rig.coordinator(four_file, "four")
    assert four.wait(120) == 0, four.log()[-3000:]

    # Then both ran the reference study: the same boxes, trials and scores
    assert StudyRun.from_store(rig.store("one")) == reference
    assert StudyRun.from_store(rig.store("four")) == reference
    assert len({t.worker for t in rig.store("four").trials()}) == 4
    rig.check(expected_trials=18, study="one")
    rig.check(expected_trials=18, study="four")
    if space == CONDITIONAL:
        params = [t.params for t in rig.store("four").trials()]
        assert {frozenset(p) for p in params} == {
            frozenset({"branch", "x"}),
            frozenset({"branch", "y"}),
        }


@pytest.mark.parametrize("lag", [0, 4])
def test_the_same_study_after_the_coordinator_and_a_worker_are_sigkilled(
    rig: ProcessRig, lag: int
) -> None:
    # With lag 4 the kill lands mid rolling round: round 3 is out while round 2 still runs.
    study = toml("demo", "sleepy", "{ duration = 1.5 }", lag)
    # Given two workers running a study of 3 rounds x 6 trials of 1.5 s
    workers = rig.workers(2)
    first = rig.coordinator(rig.study_file(study), "first", extra_args=("--tick", "0.5"))

    # When, mid-round 2, the coordinator and the worker of a trial that just started are
    # SIGKILLed (the worker's trial process exits at its next heartbeat)
    def just_started() -> int | None:
        now = rig.redis_time()
        fresh = [
            t
            for t in rig.running()
            if t.round == 2 and t.started_at is not None and now - t.started_at < 0.5
        ]
        written = len(rig.trials())
        return fresh[0].number if fresh and written == (12 if lag == 0 else 18) else None

    victim = wait_until(just_started, 60, interval=0.02, what="a round-2 trial starting")
    owner = rig.store().trial(victim).worker or ""
    [worker] = [w for w in workers if owner.startswith(f"zoomtune-{w.pid}@")]
    os.kill(first.pid, signal.SIGKILL)
    worker.signal(signal.SIGKILL)
    first.wait(10)
    assert worker.process is not None
    worker.process.wait(10)

    # ... and the coordinator is started again
    second = rig.coordinator(rig.study_file(study), "second", extra_args=("--tick", "0.5"))

    # Then the study completes; the lost trial ran again as attempt 2 on the other worker
    assert second.wait(120) == 0, second.log()[-3000:]
    rerun = rig.store().trial(victim)
    assert rerun.attempt == 2
    assert rerun.worker != owner
    # And it is the reference study: the same boxes, trials and scores
    assert StudyRun.from_store(rig.store()) == StudyRun.reference(study)
    rig.check(expected_trials=18)
