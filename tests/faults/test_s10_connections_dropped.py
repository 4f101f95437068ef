"""S10: Redis drops every client connection (a network blip) while trials run.

Promise: the running trials are not killed, each result commits once, and the workers keep
consuming. `CLIENT KILL TYPE normal` drops the workers' queue, heartbeat and result
connections and the coordinator's; `TYPE pubsub` drops Celery's remote-control subscriptions,
which only workers that turned remote control on have (ZOOMTUNE_REMOTE_CONTROL=1).
"""

from __future__ import annotations

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig
from tests.harness import study_toml, wait_until
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.parametrize("kind", ["normal", "pubsub"])
def test_dropped_connections_kill_no_trial_and_workers_keep_consuming(
    rig: ProcessRig, kind: str
) -> None:
    # Given two workers (subscribed to remote control for the pubsub blip) and a study of 4
    # trials of 2 s
    workers = rig.workers(2, env={"ZOOMTUNE_REMOTE_CONTROL": "1"} if kind == "pubsub" else {})
    toml = study_toml(
        rounds=1, trials_per_round=4, options="{ duration = 2 }", resources=FAST_RESOURCES
    )
    coordinator = rig.coordinator(rig.study_file(toml))

    # When Redis drops the connections while both workers run a trial
    running = wait_until(lambda: len(rig.running()) == 2 and rig.running(), 60, what="2 trials")
    dropped_at = rig.redis_time()
    assert rig.client.client_kill_filter(_type=kind) >= 2

    # Then the study completes, the running trials finished as attempt 1 where they ran
    assert coordinator.wait(120) == 0, coordinator.log()[-3000:]
    trials = {t.number: t for t in rig.trials()}
    for trial in running:
        after = trials[trial.number]
        assert (after.status, after.attempt, after.worker) == (
            TrialStatus.COMPLETE,
            1,
            trial.worker,
        )
    # And both workers, still alive, took the remaining trials after the blip
    assert all(w.alive() for w in workers)
    later = {
        t.worker for t in trials.values() if t.started_at is not None and t.started_at > dropped_at
    }
    assert later == {t.worker for t in running}
    rig.check(expected_trials=4)
