"""S6: Redis is restarted cleanly (SIGTERM, AOF on) in the middle of a round.

Promise: no trial is lost; the trials running during the restart keep going and their results
commit after the reconnect; idle workers consume new trials within 60 s afterwards (Celery
issues #8030, #9054 and #10205: workers that reconnect but never consume again).
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.faults.process_rig import FAST_RESOURCES, ProcessRig
from tests.harness import study_toml, wait_until
from zoomtune.common.trial import TrialStatus

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HOST = socket.gethostname()


@pytest.mark.parametrize("downtime", [0.0, 20.0], ids=["quick", "20s"])
def test_a_clean_redis_restart_mid_round_loses_no_trial_and_workers_keep_consuming(
    rig: ProcessRig, downtime: float
) -> None:
    # Given two workers and a study of 2 rounds x 4 trials of 2.5 s (lease 3 s)
    workers = rig.workers(2)
    toml = study_toml(
        rounds=2, trials_per_round=4, options="{ duration = 2.5 }", resources=FAST_RESOURCES
    )
    coordinator = rig.coordinator(rig.study_file(toml))

    # When Redis is stopped cleanly while both workers run a trial, stays down for `downtime`
    # seconds, and is started again on the same port and folder
    running = wait_until(lambda: len(rig.running()) == 2 and rig.running(), 60, what="2 trials")
    before_restart = rig.redis_time()
    rig.redis.stop()
    time.sleep(downtime)
    rig.redis.start()
    restarted = time.monotonic()

    # Then the study completes
    assert coordinator.wait(120) == 0, coordinator.log()[-3000:]
    trials = {t.number: t for t in rig.trials()}

    # And the trials that ran through the restart finished as attempt 1, after the restart
    for trial in running:
        after = trials[trial.number]
        assert after.status is TrialStatus.COMPLETE, after
        assert after.attempt == 1
        assert after.worker == trial.worker
        assert after.finished_at is not None
        assert after.finished_at > before_restart

    # And each worker started new trials after the restart (neither stopped consuming), the
    # first of them well within 60 s
    for worker in workers:
        node = f"zoomtune-{worker.pid}@"
        later = [
            t
            for t in trials.values()
            if (t.worker or "").startswith(node)
            and t.started_at is not None
            and t.started_at > before_restart
            and t.number not in {r.number for r in running}
        ]
        assert later, f"worker {worker.pid} took no trial after the restart:\n{worker.log()}"
        assert min(t.started_at or 0.0 for t in later) - before_restart < 60
    assert time.monotonic() - restarted < 60
    rig.check(expected_trials=8)


def test_idle_workers_consume_again_after_two_redis_restarts(rig: ProcessRig) -> None:
    # Given two idle workers (Celery 5.2-5.3 workers reconnected after a Redis restart but
    # never consumed again, some only from the second restart on: celery#8030, celery#9054)
    workers = rig.workers(2)

    # When Redis restarts twice while they wait
    for restart in (1, 2):
        rig.redis.restart()
        wait_until(
            lambda n=restart: all(w.log().count("Connected to redis") > n for w in workers),
            30,
            what="workers to reconnect",
        )
        time.sleep(1.0)

    # Then a study sent afterwards runs on both of them, its first trial within 60 s
    toml = study_toml(
        rounds=1, trials_per_round=4, options="{ duration = 1.0 }", resources=FAST_RESOURCES
    )
    sent = rig.redis_time()
    coordinator = rig.coordinator(rig.study_file(toml))
    assert coordinator.wait(90) == 0, coordinator.log()[-3000:]
    trials = rig.trials()
    assert min(t.started_at or 0.0 for t in trials) - sent < 60
    assert {t.worker for t in trials} == {f"zoomtune-{w.pid}@{HOST}" for w in workers}
    rig.check(expected_trials=4)
