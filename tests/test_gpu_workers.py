"""GPU worker daemons for real, on a machine without a GPU: `worker start --gpus 0,1` pins one
Celery worker process per GPU (explicit ids need no nvidia-smi), and a fake nvidia-smi stands in
for discovery. What a trial saw of its GPU is written by the `records_device` test objective."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import signal
import socket
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
from tests.test_gpus import H200_NODE, fake_nvidia_smi
from zoomtune.common.redis_client import connect
from zoomtune.common.store import StudyStore
from zoomtune.common.trial import Trial, TrialStatus
from zoomtune.coordinator.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAST = 'heartbeat = "0.5s"\nlease = "3s"\ntimeout = "60s"'
SLOT_STARTED = re.compile(r"slot (\S+) started: pid (\d+)")


def no_nvidia_smi_path(tmp_path: Path) -> str:
    """A PATH with the Python in use and nothing else: certainly no nvidia-smi."""
    empty = tmp_path / "no-gpu-tools"
    empty.mkdir(exist_ok=True)
    return f"{empty}:{Path(sys.executable).parent}"


def wait_slots_ready(worker: WorkerProcess, count: int, timeout: float = 90.0) -> None:
    def ready() -> bool:
        if not worker.alive():
            raise AssertionError(f"worker exited early:\n{worker.log()[-3000:]}")
        return worker.log().count(" ready.") >= count

    wait_until(ready, timeout, what=f"{count} worker slot(s) to be ready")


def slot_pids(worker: WorkerProcess, slot: str) -> list[int]:
    return [int(pid) for name, pid in SLOT_STARTED.findall(worker.log()) if name == slot]


def gone(pid: int) -> bool:
    """True once the process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def run_study(tmp_path: Path, url: str, name: str, toml: str) -> Path:
    study_file = tmp_path / f"{name}.toml"
    study_file.write_text(toml)
    run_dir = tmp_path / f"run-{name}"
    coordinator = CoordinatorProcess(study_file, run_dir, url, tmp_path / f"{name}.log")
    code = coordinator.start().wait(180)
    assert code == 0, coordinator.log()[-4000:]
    return run_dir


def seen_by(out: Path, trial: Trial) -> dict[str, object]:
    return json.loads((out / f"{trial.number}-{trial.attempt}.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def gpu_node(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerProcess]:
    """One daemon: two GPU slots (ids 0 and 1, pinned without nvidia-smi) and a CPU slot."""
    worker = WorkerProcess(
        redis_server.url,
        tmp_path / "worker.log",
        queues="gpu,cpu",
        concurrency=1,
        extra_args=["--gpus", "0,1"],
        objectives=[objective_option("records_device")],
        env={"PATH": no_nvidia_smi_path(tmp_path)},
    ).start()
    try:
        wait_slots_ready(worker, 3)
        yield worker
    finally:
        worker.stop(timeout=20)


def test_gpu_slots_run_one_trial_at_a_time_on_their_own_gpu_and_only_gpu_studies(
    redis_server: RedisServer, gpu_node: WorkerProcess, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    options = f'{{ out = "{seen}", duration = 0.4 }}'

    # Given a GPU study of 2 rounds x 4 trials
    gpu_toml = study_toml(
        "gpu-study",
        "records_device",
        options=options,
        resources=f'{FAST}\nqueue = "gpu"',
    )
    # When the coordinator runs it while the daemon has two GPU slots and an idle CPU slot
    run_dir = run_study(tmp_path, redis_server.url, "gpu-study", gpu_toml)

    # Then every trial ran on one of the two GPUs, never on the CPU slot
    store = StudyStore(connect(redis_server.url), "zoomtune:", "gpu-study")
    trials = store.trials()
    assert len(trials) == 8
    assert all(t.status is TrialStatus.COMPLETE for t in trials)
    assert {t.device for t in trials} == {"gpu:0", "gpu:1"}
    for trial in trials:
        gpu = str(trial.device).split(":")[1]
        assert str(trial.worker).split("@")[0].endswith(f"-gpu{gpu}")
        # And each trial saw only its own GPU, numbered as nvidia-smi numbers them
        assert seen_by(seen, trial) == {
            "device": f"gpu:{gpu}",
            "cuda_visible_devices": gpu,
            "cuda_device_order": "PCI_BUS_ID",
            "pid": seen_by(seen, trial)["pid"],
        }
    # And no GPU ever ran two trials at once (Redis's start and finish times)
    for device in ("gpu:0", "gpu:1"):
        on_device = sorted(
            (t for t in trials if t.device == device), key=lambda t: t.started_at or 0.0
        )
        for before, after in itertools.pairwise(on_device):
            assert before.finished_at is not None
            assert after.started_at is not None
            assert after.started_at >= before.finished_at, (before, after)

    # And trials.csv records the device and the host of each trial
    with (run_dir / "trials.csv").open() as handle:
        rows = {int(r["trial"]): r for r in csv.DictReader(handle)}
    for trial in trials:
        assert rows[trial.number]["device"] == trial.device
        assert rows[trial.number]["host"] == socket.gethostname()

    # When a CPU study runs against the same daemon
    cpu_toml = study_toml(
        "cpu-study",
        "records_device",
        rounds=1,
        trials_per_round=3,
        options=f'{{ out = "{seen}", duration = 0.1 }}',
        resources=f'{FAST}\nqueue = "cpu"',
    )
    run_study(tmp_path, redis_server.url, "cpu-study", cpu_toml)

    # Then only the CPU slot ran it, and its trials saw no GPU at all
    cpu_trials = StudyStore(connect(redis_server.url), "zoomtune:", "cpu-study").trials()
    assert {t.device for t in cpu_trials} == {"cpu"}
    assert all(str(t.worker).split("@")[0].endswith("-cpu") for t in cpu_trials)
    # (the CPU study numbers its trials from 0 too: its files overwrote the GPU study's)
    assert all(seen_by(seen, t)["cuda_visible_devices"] == "" for t in cpu_trials)

    # When the daemon gets SIGTERM, its slots shut down warm and it exits 0
    assert gpu_node.stop(timeout=30) == 0
    assert "all slots stopped" in gpu_node.log()


def test_a_dying_gpu_slot_is_restarted_and_slots_stop_when_the_daemon_is_killed(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    worker = WorkerProcess(
        redis_server.url,
        tmp_path / "worker.log",
        queues="gpu",
        concurrency=None,
        extra_args=["--gpus", "0"],
        objectives=[objective_option("records_device")],
        env={"PATH": no_nvidia_smi_path(tmp_path)},
    ).start()
    try:
        wait_slots_ready(worker, 1)
        (first,) = slot_pids(worker, "gpu0")

        # When the GPU slot's process dies (as if the OOM killer took it)
        os.kill(first, signal.SIGKILL)

        # Then the daemon starts it again, pinned to the same GPU
        wait_until(lambda: len(slot_pids(worker, "gpu0")) == 2, 60, what="the slot to restart")
        assert "slot gpu0 died (exit code -9)" in worker.log()
        second = slot_pids(worker, "gpu0")[1]
        wait_slots_ready(worker, 2)
        toml = study_toml(
            "after-restart",
            "records_device",
            rounds=1,
            trials_per_round=2,
            options=f'{{ out = "{seen}", duration = 0.1 }}',
            resources=f'{FAST}\nqueue = "gpu"',
        )
        run_study(tmp_path, redis_server.url, "after-restart", toml)
        trials = StudyStore(connect(redis_server.url), "zoomtune:", "after-restart").trials()
        assert [t.status for t in trials] == [TrialStatus.COMPLETE] * 2
        assert all(seen_by(seen, t)["cuda_visible_devices"] == "0" for t in trials)

        # When the daemon itself is SIGKILLed, its slot does not live on as an orphan
        worker.signal(signal.SIGKILL)
        wait_until(lambda: gone(second), 60, what=f"slot process {second} to exit")
    finally:
        worker.stop()


def test_the_embedded_default_runs_a_gpu_study_on_the_local_gpus(tmp_path: Path) -> None:
    # Given a machine whose nvidia-smi lists GPUs (a fake one, printing an 8 x H200 node's lines)
    gpus = "".join(H200_NODE.splitlines(keepends=True)[:2])
    fake = fake_nvidia_smi(tmp_path / "bin", gpus)
    seen = tmp_path / "seen"
    seen.mkdir()
    study_file = tmp_path / "study.toml"
    study_file.write_text(
        f"""
[study]
name = "embedded-gpu"
direction = "minimize"

[objective]
name = "records_device"
entrypoint = "{TEST_OBJECTIVES}:records_device"
options = {{ out = "{seen}", duration = 0.2 }}

[search]
rounds = 1
trials_per_round = 4

[resources]
{FAST}
queue = "gpu"

[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"""
    )
    # When `coordinator start` runs it with no broker (the embedded default)
    run_dir = tmp_path / "run"
    env = {"PATH": f"{fake}:{os.environ['PATH']}"}
    coordinator = CoordinatorProcess(
        study_file, run_dir, None, tmp_path / "coordinator.log", env=env
    )
    code = coordinator.start().wait(180)
    assert code == 0, coordinator.log()[-4000:]

    # Then it started one pinned worker per GPU, and the trials ran on them
    assert "local GPU workers, one per GPU: GPU 0: NVIDIA H200" in coordinator.log()
    workers_log = (run_dir / "workers.log").read_text()
    assert {name for name, _ in SLOT_STARTED.findall(workers_log)} == {"gpu0", "gpu1"}
    with (run_dir / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert all(r["status"] == "complete" for r in rows)
    assert {r["device"] for r in rows} <= {"gpu:0", "gpu:1"}
    for row in rows:
        recorded = json.loads((seen / f"{row['trial']}-1.json").read_text())
        assert f"gpu:{recorded['cuda_visible_devices']}" == row["device"]
