"""Looking at studies for real: a redis-server, `worker start` daemons and `coordinator start`,
then `status`, `list`, `export`, `report` and `cancel` on what they left in Redis and in the
run folder; and Flower watching the same broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.harness import (
    CoordinatorProcess,
    WorkerProcess,
    objective_option,
    study_toml,
    wait_until,
)
from tests.test_report import assert_complete_report
from zoomtune.common.redis_client import connect
from zoomtune.common.store import StudyStore
from zoomtune.common.store_keys import COUNTERS
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import TrialResult, TrialStatus
from zoomtune.coordinator.cli import main
from zoomtune.coordinator.export import StudyRecord, write_run_dir
from zoomtune.coordinator.redis_server import RedisServer, free_port
from zoomtune.coordinator.report_html import FUNNEL_PNG, HISTORY_PNG, IMPORTANCE_PNG

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The built-in quadratic with its optimum at x = 0, below x's range [0.6, 1], and y = 0.5,
# inside its range: x matters most, and its best trials pile up at its lower edge.
OBSERVED = study_toml(
    name="observed",
    objective="quadratic",
    seed=3,
    rounds=3,
    trials_per_round=12,
    options="{ duration = 0.05, optimum = { x = 0.0, y = 0.5 } }",
    space='x = { type = "float", low = 0.6, high = 1.0 }\n'
    'y = { type = "float", low = 0.0, high = 1.0 }',
)


def cli(*args: str, code: int = 0) -> str:
    """Run a coordinator command in-process, as a user would type it, on a wide terminal."""
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def dropped(worker_log: str) -> int:
    """How many deliveries the worker dropped because their study was cancelled."""
    return sum(
        "dropped a delivery" in line and line.endswith("study_cancelled")
        for line in worker_log.splitlines()
    )


@dataclass
class Finished:
    url: str
    run_dir: Path
    store: StudyStore


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The OBSERVED study, run to the end by two real workers; Redis stays up for the tests."""
    tmp = tmp_path_factory.mktemp("observed")
    server = RedisServer(tmp / "redis").start()
    workers = [WorkerProcess(server.url, tmp / f"worker{i}.log").start() for i in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()
        study_file = tmp / "study.toml"
        study_file.write_text(OBSERVED)
        coordinator = CoordinatorProcess(study_file, tmp / "run", server.url, tmp / "coord.log")
        assert coordinator.start().wait(180) == 0, coordinator.log()[-3000:]
        client = connect(server.url)
        yield Finished(server.url, tmp / "run", StudyStore(client, "zoomtune:", "observed"))
        client.close()
    finally:
        for worker in workers:
            worker.stop()
        server.kill()


def test_status_shows_rounds_boxes_best_importance_and_the_edge(finished: Finished) -> None:
    out = cli("status", "observed", "--broker", finished.url)

    assert "study observed (minimize quadratic): complete" in out
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in row] for row in rows]
    # round, trials, complete, running, queued, failed, pruned, best, box
    assert [row[:7] for row in cells[:3]] == [
        [str(r), "12", "12", "0", "0", "0", "0"] for r in (1, 2, 3)
    ]
    assert cells[0][8] == "100% of the space"
    assert float(cells[2][8].split("%")[0]) < 100  # later rounds sample a smaller box
    assert cells[3][:2] == ["x", "0.6 .. 1"]  # the box table starts with round 1's
    best = min(finished.store.trials(), key=lambda t: t.score or 0.0)
    assert f"best: trial {best.number} (round {best.round}), score {best.score:.6g}" in out
    ranking = out.split("which hyperparameters matter")[1]
    assert ranking.index("1. x") < ranking.index("2. y")
    assert "x: the best trials are at the lower edge 0.6 of its range; consider widening it" in out
    assert "y: the best" not in out


def test_status_reads_the_same_study_from_the_run_folder(finished: Finished) -> None:
    from_broker = cli("status", "--broker", finished.url)  # the only study: no name needed
    assert cli("status", "--run-dir", str(finished.run_dir)) == from_broker


def test_status_shows_the_stores_counters_from_the_broker_and_from_the_run_folder(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given a study whose store dropped a duplicate delivery and a stale result, and found a
    # lease expired (each made the way it happens: through the store's own transitions)
    spec = StudySpec.from_toml(study_toml(rounds=1, trials_per_round=2))
    client = connect(redis_server.url)
    store = StudyStore(client, "zoomtune:", "demo")
    lock = store.acquire(ttl=60)
    epoch = store.create(lock, spec.to_dict(), spec.resources.max_attempts)
    box = spec.space.whole_box().to_dict(spec.space)
    store.write_round(lock, epoch, 1, box, [{"x": 0.25, "y": 2}, {"x": 0.75, "y": 6}])
    worker = {"worker": "w@h", "host": "h", "device": "cpu", "pid": 1}
    worker["payload"] = {"params": {"x": 0.25, "y": 2}, "rungs": []}  # what the message says
    assert store.start(0, 1, "dead", lease=0.05, **worker).ok  # type: ignore[arg-type]
    time.sleep(0.2)
    assert [r.trial for r in store.reap(lock, epoch)] == [0]  # leases_expired
    assert store.finish(0, 1, "dead", TrialResult.complete(1.0)) == "stale"  # stale_results
    assert store.start(0, 2, "alive", lease=30, **worker).ok  # type: ignore[arg-type]
    assert not store.start(0, 2, "again", lease=30, **worker).ok  # type: ignore[arg-type]
    write_run_dir(StudyRecord.from_store(store), tmp_path / "run")
    client.close()

    # When status reads it from the broker and from the run folder
    outputs = [
        cli("status", "demo", "--broker", redis_server.url),
        cli("status", "--run-dir", str(tmp_path / "run")),
    ]

    # Then both show every counter the store keeps, by name
    for out in outputs:
        line = " ".join(out.split("counters:")[1].split("\n")[0].split())
        assert line == (
            "duplicate_deliveries 1, stale_deliveries 0, forged_messages 0, stale_results 1, "
            "late_results 0, forged_results 0, leases_expired 1, workers_lost 0, "
            "revised_trials 0"
        )
    assert [name for name in COUNTERS if name in outputs[0]] == list(COUNTERS)


def test_list_shows_the_study_and_its_state(finished: Finished) -> None:
    out = cli("list", "--broker", finished.url)
    row = next(line for line in out.splitlines() if "observed" in line)
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["observed", "complete", "3", "36"]


def test_export_matches_the_run_folder(finished: Finished, tmp_path: Path) -> None:
    csv_text = cli("export", "observed", "--format", "csv", "--broker", finished.url)
    assert csv_text == (finished.run_dir / "trials.csv").read_text()
    assert len(csv_text.splitlines()) == 1 + 36
    cli("export", "observed", "--format", "json", "-o", str(tmp_path / "s.json"), "--broker",
        finished.url)  # fmt: skip
    exported = json.loads((tmp_path / "s.json").read_text())
    assert exported == json.loads((finished.run_dir / "study.json").read_text())
    from_run_dir = cli("export", "--format", "json", "--run-dir", str(finished.run_dir))
    assert json.loads(from_run_dir) == exported


@pytest.mark.parametrize("source", ["broker", "run-dir"])
def test_report_writes_the_plots_and_the_page(
    finished: Finished, source: str, tmp_path: Path
) -> None:
    if source == "broker":
        out = cli("report", "observed", "-o", str(tmp_path / "r"), "--broker", finished.url)
        directory = tmp_path / "r"
    else:
        out = cli("report", "--run-dir", str(finished.run_dir))
        directory = finished.run_dir / "report"  # the default next to the run's files

    page = assert_complete_report(directory, [HISTORY_PNG, FUNNEL_PNG, IMPORTANCE_PNG])
    assert "1. x" in out
    assert "x: the best trials are at the lower edge 0.6" in out
    assert "x: the best trials are at the lower edge 0.6" in page
    assert f"wrote {HISTORY_PNG}, {FUNNEL_PNG}, {IMPORTANCE_PNG}, report.html" in out


def test_a_cancelled_study_stops_dispatching_and_its_coordinator_exits_3(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given one worker and a study of slow trials, with a trial running
    worker = WorkerProcess(
        redis_server.url, tmp_path / "worker.log", objectives=[objective_option("sleepy")]
    ).start()
    study_file = tmp_path / "study.toml"
    study_file.write_text(study_toml(rounds=2, trials_per_round=4, options="{ duration = 2 }"))
    coordinator = CoordinatorProcess(
        study_file, tmp_path / "run", redis_server.url, tmp_path / "coord.log"
    )
    store = StudyStore(connect(redis_server.url), "zoomtune:", "demo")
    try:
        worker.wait_ready()
        coordinator.start()
        running = wait_until(
            lambda: (
                store.exists() and [t for t in store.trials() if t.status is TrialStatus.RUNNING]
            ),
            timeout=60,
            what="a running trial",
        )
        # status names the running trial's worker and device
        status = cli("status", "demo", "--broker", redis_server.url)
        assert f"zoomtune-{worker.pid}@{socket.gethostname()}" in status
        assert "running trials" in status

        # When the study is cancelled
        out = cli("cancel", "demo", "--reason", "wrong range", "--broker", redis_server.url)

        # Then the coordinator stops at once with exit code 3 and says why
        assert "queued trials will not run" in out
        assert coordinator.wait(30) == 3
        assert "was cancelled" in coordinator.log()
        assert "wrong range" in coordinator.log()
        # ... the queued trials failed with the reason, no round 2 was written ...
        assert store.meta()["state"] == "cancelled"
        assert len(store.rounds()) == 1
        cancelled = [t for t in store.trials() if t.status is TrialStatus.FAILED]
        assert cancelled
        assert all("wrong range" in (t.error or "") for t in cancelled)
        # ... the running trial was allowed to finish and its score is recorded ...
        first = running[0].number
        wait_until(
            lambda: store.trial(first).status is TrialStatus.COMPLETE,
            timeout=30,
            what="the running trial to finish",
        )
        # ... and the worker dropped the cancelled trials' messages without running them
        wait_until(
            lambda: dropped(worker.log()) == len(cancelled),
            timeout=30,
            what="the worker to drop the cancelled messages",
        )
        assert store.counters()["duplicate_deliveries"] == 0
        assert all(t.started_at is None for t in cancelled)
        assert "cancelled" in cli("list", "--broker", redis_server.url)

        # And starting the study again is refused, with the same exit code
        again = CoordinatorProcess(
            study_file, tmp_path / "run", redis_server.url, tmp_path / "again.log"
        )
        assert again.start().wait(60) == 3
        assert "does not run again" in again.log()
    finally:
        coordinator.stop()
        worker.stop()
        store.client.close()


def test_a_study_cancelled_while_its_round_is_published_stops_publishing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given a coordinator publishing a round of 20,000 trials, with no worker to take them
    study_file = tmp_path / "study.toml"
    study_file.write_text(study_toml(rounds=2, trials_per_round=20_000))
    coordinator = CoordinatorProcess(
        study_file, tmp_path / "run", redis_server.url, tmp_path / "coord.log"
    )
    store = StudyStore(connect(redis_server.url), "zoomtune:", "demo")
    queue = "zoomtune:trials.cpu"
    try:
        coordinator.start()
        wait_until(
            lambda: store.exists() and len(store.rounds()) == 1,
            timeout=60,
            what="round 1 to be written",
        )

        # When the study is cancelled as soon as its round is written
        done = store.cancel("cancelled by a test")
        cancelled_at = time.monotonic()

        # Then the coordinator stops publishing within a few seconds, with exit code 3
        assert coordinator.wait(15) == 3
        took = time.monotonic() - cancelled_at
        assert took < 8, f"the coordinator took {took:.1f}s to stop"
        assert "was cancelled" in coordinator.log()
        # ... having sent only a small part of the round, and nothing after it stopped
        sent = int(store.client.llen(queue))
        assert sent < 10_000, f"{sent} messages were published"
        time.sleep(0.5)
        assert int(store.client.llen(queue)) == sent
        # ... and every trial failed with the reason
        assert done.trials_cancelled == 20_000
        assert {t.status for t in store.trials()} == {TrialStatus.FAILED}
    finally:
        coordinator.stop()
        store.client.close()


def test_cancelling_a_finished_or_unknown_study_is_an_error(finished: Finished) -> None:
    assert "already complete" in cli("cancel", "observed", "--broker", finished.url, code=1)
    assert "no study named 'nope'" in cli("cancel", "nope", "--broker", finished.url, code=1)


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
            return json.loads(response.read())
    except OSError:
        return None


def test_flower_sees_the_workers_and_trials_through_coordinator_flower(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    pytest.importorskip("flower")
    # Given a worker, and Flower started as the README says, against the same broker
    worker = WorkerProcess(
        redis_server.url, tmp_path / "worker.log", objectives=[objective_option("sleepy")]
    ).start()
    port = free_port()
    env = {**os.environ, "ZOOMTUNE_BROKER_URL": redis_server.url, "FLOWER_UNAUTHENTICATED_API": "1"}
    with (tmp_path / "flower.log").open("wb") as log:
        flower = subprocess.Popen(
            [sys.executable, "-m", "zoomtune.coordinator.cli", "flower", "--port", str(port),
             "--address", "127.0.0.1"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        worker.wait_ready()
        # Then Flower's workers page lists the worker, from its events (remote control is off,
        # so the API's inspect-based worker details stay empty) ...
        name = f"zoomtune-{worker.pid}@{socket.gethostname()}"

        def listed() -> list[str]:
            page = _get_json(f"http://127.0.0.1:{port}/workers?json=1") or {}
            return [str(w.get("hostname")) for w in page.get("data", [])]

        wait_until(lambda: name in listed(), timeout=60, what="Flower to list the worker")
        assert name not in (_get_json(f"{api}/workers?refresh=1") or {})
        # ... and, when a study runs, every trial as a task (the events reach it)
        study_file = tmp_path / "study.toml"
        study_file.write_text(study_toml(rounds=1, trials_per_round=3))
        coordinator = CoordinatorProcess(
            study_file, tmp_path / "run", redis_server.url, tmp_path / "coord.log"
        )
        assert coordinator.start().wait(120) == 0, coordinator.log()[-2000:]

        def succeeded() -> list[Any]:
            tasks = (_get_json(f"{api}/tasks") or {}).values()
            return [
                t for t in tasks if t["name"] == "zoomtune.run_trial" and t["state"] == "SUCCESS"
            ]

        done = wait_until(lambda: len(succeeded()) == 3 and succeeded(), timeout=30, what="tasks")
        assert {t["worker"] for t in done} == {name}
    finally:
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(5)
        worker.stop()
