"""The whole path, for real: a redis-server, `worker start` daemons and `coordinator start`,
each a separate process, talking only through Redis."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    TEST_OBJECTIVES,
    CoordinatorProcess,
    WorkerProcess,
    objective_option,
    study_toml,
    wait_until,
)
from zoomtune.common.redis_client import connect
from zoomtune.common.space import Box
from zoomtune.common.store import StudyStore
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Two single-process workers registering the test objectives (the --objective path)."""
    started = [
        WorkerProcess(
            redis_server.url,
            tmp_path / f"worker{i}.log",
            objectives=[objective_option("sleepy"), objective_option("reports_curve")],
        ).start()
        for i in range(2)
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


def run_study(tmp_path: Path, url: str | None, toml: str, timeout: float = 120) -> Path:
    study_file = tmp_path / "study.toml"
    study_file.write_text(toml)
    run_dir = tmp_path / "run"
    coordinator = CoordinatorProcess(study_file, run_dir, url, tmp_path / "coordinator.log")
    code = coordinator.start().wait(timeout)
    assert code == 0, coordinator.log()[-4000:]
    return run_dir


def test_a_study_runs_every_trial_of_every_round_exactly_once(
    redis_server: RedisServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # Given two workers and a study of 3 rounds x 6 trials
    toml = study_toml(rounds=3, trials_per_round=6, options="{ duration = 0.3 }")

    # When the coordinator runs it against the same Redis
    run_dir = run_study(tmp_path, redis_server.url, toml)

    # Then every trial is recorded once, complete, in its round, on one of the two workers
    store = StudyStore(connect(redis_server.url), "zoomtune:", "demo")
    trials = store.trials()
    assert [t.number for t in trials] == list(range(18))
    assert [t.round for t in trials] == [1] * 6 + [2] * 6 + [3] * 6
    assert all(t.status is TrialStatus.COMPLETE and t.attempt == 1 for t in trials)
    assert len({t.worker for t in trials}) == 2
    assert store.meta()["state"] == "complete"
    assert sum(store.counters().values()) == 0

    # And each later round's box lies inside the whole space of round 1
    rounds = store.rounds()
    first, second = Box.from_dict(rounds[0].box), Box.from_dict(rounds[1].box)
    for name in ("x", "y"):
        outer, inner = first[name], second[name]
        assert outer.low <= inner.low <= inner.high <= outer.high  # type: ignore[union-attr]

    # And the run folder holds the same record
    with (run_dir / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:11] == [
        "trial",
        "round",
        "status",
        "score",
        "attempts",
        "worker",
        "started_at",
        "finished_at",
        "duration",
        "params_x",
        "params_y",
    ]
    assert [int(r["trial"]) for r in rows] == list(range(18))
    study = json.loads((run_dir / "study.json").read_text())
    assert study["state"] == "complete"
    assert len(study["rounds"]) == 3
    best = min((t for t in trials), key=lambda t: t.score or 0.0)
    assert study["best"]["trial"] == best.number

    # And the workers' logs tell each trial's start and end once, in zoomtune's words only
    logs = "".join(worker.log() for worker in workers)
    for number in range(18):
        assert logs.count(f"started study 'demo' trial {number} attempt 1 ") == 1
        assert logs.count(f"finished study 'demo' trial {number} attempt 1: score ") == 1
    assert "] received" not in logs
    assert "] succeeded in" not in logs


def test_intermediate_values_reach_the_store(
    redis_server: RedisServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    run_dir = run_study(tmp_path, redis_server.url, study_toml(objective="reports_curve", rounds=1))
    store = StudyStore(connect(redis_server.url), "zoomtune:", "demo")
    for trial in store.trials():
        assert [step for step, _ in store.reports(trial.number)] == [1, 2, 3]
        assert store.reports(trial.number)[-1][1] == pytest.approx(trial.score)

    # And the run folder's study.json carries them, trial by trial
    study = json.loads((run_dir / "study.json").read_text())
    assert len(study["trials"]) == 4
    for entry in study["trials"]:
        assert entry["reports"] == [list(r) for r in store.reports(entry["number"])]


def test_the_cli_reads_a_finished_study_from_the_broker_and_from_the_run_folder(
    redis_server: RedisServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    run_dir = run_study(tmp_path, redis_server.url, study_toml(rounds=1))
    env_broker = ["--broker", redis_server.url]

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "zoomtune.coordinator.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "demo" in cli("list", *env_broker)
    assert "complete" in cli("status", "demo", *env_broker)
    from_broker = cli("export", "demo", "--format", "csv", *env_broker)
    assert from_broker == (run_dir / "trials.csv").read_text()
    assert json.loads(cli("export", "--format", "json", "--run-dir", str(run_dir)))["best"]
    assert redis_server.password is None or redis_server.password not in from_broker


def test_the_embedded_default_needs_nothing_but_the_study_file(tmp_path: Path) -> None:
    # Given no broker at all
    toml = study_toml(
        objective="branin",
        rounds=2,
        trials_per_round=4,
        space='x1 = { type = "float", low = -5.0, high = 10.0 }\n'
        'x2 = { type = "float", low = 0.0, high = 15.0 }',
    )

    # When `coordinator start study.toml` runs alone
    run_dir = run_study(tmp_path, None, toml)

    # Then it ran the study with a private Redis and local workers, and stopped them all
    study = json.loads((run_dir / "study.json").read_text())
    assert study["state"] == "complete"
    assert [t["status"] for t in study["trials"]] == ["complete"] * 8
    assert (run_dir / "redis" / "appendonly.aof").exists()
    assert "Warm shutdown" in (run_dir / "workers.log").read_text()
    leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(run_dir / "redis") not in leftovers.stdout


def test_an_embedded_study_can_register_its_own_objective_file(tmp_path: Path) -> None:
    (tmp_path / "my_objective.py").write_text(
        "def score(params, trial):\n    return (params['x'] - 0.25) ** 2\n"
    )
    toml = study_toml(objective="mine", rounds=1, space='x = { type = "float", low = 0, high = 1 }')
    toml = toml.replace('name = "mine"', 'name = "mine"\nentrypoint = "my_objective.py:score"')
    run_dir = run_study(tmp_path, None, toml)
    study = json.loads((run_dir / "study.json").read_text())
    assert all(t["status"] == "complete" for t in study["trials"])


def children_of(pid: int) -> dict[int, str]:
    """The processes `pid` started: pid -> command line."""
    listing = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(line.split()[0]): line.split(None, 1)[1] for line in listing.splitlines()}


def embedded_password(coordinator: CoordinatorProcess) -> str:
    """The password of a running embedded study's Redis, read from its workers' environment
    (where the coordinator puts the URL), after checking that Redis's command line lacks it."""

    def started(args: dict[int, str]) -> bool:
        # A child just forked still shows the coordinator's command line until it execs.
        return any("redis-server" in a for a in args.values()) and any(
            "zoomtune.workers.cli" in a for a in args.values()
        )

    children = wait_until(
        lambda: (found := children_of(coordinator.pid)) and started(found) and found,
        30,
        what="the embedded redis-server and workers",
    )
    worker = next(pid for pid, args in children.items() if "zoomtune.workers.cli" in args)
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    url = next(v for v in environ if v.startswith(b"ZOOMTUNE_BROKER_URL=")).decode()
    password = url.split("://:", 1)[1].split("@", 1)[0]
    redis_args = next(args for args in children.values() if "redis-server" in args)
    assert password not in redis_args
    return password


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_the_embedded_redis_password_is_never_written_and_a_rerun_still_resumes(
    tmp_path: Path,
) -> None:
    # Given an embedded study of slow trials, interrupted (Ctrl-C) after its first result
    toml = study_toml(rounds=1, trials_per_round=6, options="{ duration = 1.0 }")
    toml = toml.replace(
        'name = "sleepy"', f'name = "sleepy"\nentrypoint = "{TEST_OBJECTIVES}:sleepy"'
    )
    study_file = tmp_path / "study.toml"
    study_file.write_text(toml)
    run_dir = tmp_path / "run"
    first = CoordinatorProcess(
        study_file, run_dir, None, tmp_path / "first.log", extra_args=("--workers", "1")
    ).start()
    try:
        password = embedded_password(first)
        wait_until(lambda: "score" in first.log(), 60, what="a first result")
        first.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        assert first.wait(60) == 130, first.log()[-3000:]
    finally:
        first.stop()

    # Then the password is in no file of the run folder (and there is no password file)
    assert not (run_dir / "redis" / "redis.password").exists()
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert [path for path in files if password.encode() in path.read_bytes()] == []

    # When the same command runs again, Redis gets a new password and the study resumes
    second = CoordinatorProcess(
        study_file, run_dir, None, tmp_path / "second.log", extra_args=("--workers", "1")
    ).start()
    try:
        assert embedded_password(second) != password
        assert second.wait(120) == 0, second.log()[-3000:]
    finally:
        second.stop()
    assert "resuming study 'demo'" in second.log()
    study = json.loads((run_dir / "study.json").read_text())
    assert [t["status"] for t in study["trials"]] == ["complete"] * 6
    assert not (run_dir / "redis" / "redis.password").exists()


def test_wait_until_reports_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="the moon"):
        wait_until(lambda: False, timeout=0.05, what="the moon")
