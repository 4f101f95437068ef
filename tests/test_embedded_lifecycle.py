"""The embedded default's processes, for real: however `coordinator start` ends (SIGTERM,
SIGHUP, SIGKILL, its workers dying), it leaves no redis-server or worker behind, and the study
resumes; a run folder that processes of another run still hold is refused.

The processes a coordinator started are found from /proc (its descendants, taken before it is
stopped), and checked against what it recorded in `runs/NAME/redis/processes.json`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import CoordinatorProcess, alive, study_toml, wait_until
from zoomtune.coordinator.redis_server import RedisServer, RunFolderLock

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

TOML = study_toml(
    objective="sleep",
    rounds=2,
    trials_per_round=4,
    options="{ duration = 1.0 }",
    space='x = { type = "float", low = 0.0, high = 1.0 }',
)
FAST_LOOP = ("--tick", "0.5", "--workers", "2")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def coordinator(tmp_path: Path, name: str, toml: str = TOML) -> CoordinatorProcess:
    study_file = tmp_path / "study.toml"
    study_file.write_text(toml)
    return CoordinatorProcess(
        study_file, tmp_path / "run", None, tmp_path / f"{name}.log", extra_args=FAST_LOOP
    ).start()


def running_children(process: CoordinatorProcess, run_dir: Path) -> set[int]:
    """Wait until a trial runs, then return the coordinator's processes: its redis-server, its
    worker daemon and the worker's two pool processes, as /proc shows them."""
    wait_until(
        lambda: "started study 'demo' trial" in _read(run_dir / "workers.log"),
        90,
        what="a trial to start",
    )
    children = descendants(process.pid)
    recorded = json.loads((run_dir / "redis" / "processes.json").read_text())
    assert recorded["coordinator"] == process.pid
    assert {recorded["redis_server"], recorded["workers"]} <= children
    assert len(children) >= 4, children
    return children


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=str)
def test_however_the_coordinator_is_stopped_no_process_is_left_and_the_study_resumes(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Given `coordinator start` on the embedded default, mid-study
    first = coordinator(tmp_path, "first")
    children: set[int] = set()
    try:
        children = running_children(first, tmp_path / "run")
        # (the run folder shows the study from round 1 on: `status` and `report` read it)
        assert (tmp_path / "run" / "study.json").exists()

        # When it gets the signal
        os.kill(first.pid, sig)
        code = first.wait(60)

        # Then every process it started is gone within a few seconds
        wait_until(
            lambda: not any(alive(pid) for pid in children),
            10,
            what=f"the children {sorted(children)} to end",
        )
    finally:
        first.stop()
        for pid in children | descendants(first.pid):
            if alive(pid):  # only when the test failed: the processes this test started
                os.kill(pid, signal.SIGKILL)
    if sig is signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        # ... after saying so, with the exit code of an interruption
        assert code == 130, first.log()[-3000:]
        assert f"interrupted by {sig.name}; run the same command again to resume" in first.log()
        # ... and its run folder written once its workers finished their running trials
        interrupted = json.loads((tmp_path / "run" / "study.json").read_text())
        assert "running" not in [t["status"] for t in interrupted["trials"]]
        # ... which `status` shows as interrupted
        status = subprocess.run(
            [sys.executable, "-m", "zoomtune.coordinator.cli", "status", "--run-dir", "run"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "running - interrupted: no `coordinator start` runs" in status.stdout

    # And the same command resumes the study and completes it
    second = coordinator(tmp_path, "second")
    assert second.wait(180) == 0, second.log()[-3000:]
    assert "resuming study 'demo'" in second.log()
    study = json.loads((tmp_path / "run" / "study.json").read_text())
    assert [t["status"] for t in study["trials"]] == ["complete"] * 8
    assert not any(alive(pid) for pid in descendants(second.pid))


def test_a_run_folder_that_a_left_over_redis_server_holds_is_refused(tmp_path: Path) -> None:
    # Given a redis-server left running on a run folder by a coordinator that died without
    # cleaning up (it inherited the folder's lock, which the coordinator's death did not free)
    directory = tmp_path / "run" / "redis"
    lock = RunFolderLock.take(directory)
    orphan = RedisServer(directory, password="orphan-password", folder_lock=lock)
    orphan.start()
    os.close(lock.fd)
    try:
        # When `coordinator start` runs the study on that folder
        refused = coordinator(tmp_path, "refused")

        # Then it refuses at once, naming the process, and starts no second server
        try:
            assert refused.wait(60) == 1, refused.log()[-3000:]
        finally:
            refused.stop()
        text = " ".join(refused.log().split())
        assert f"{directory} is in use (" in text
        assert f"redis_server pid {orphan.pid}" in text
        assert "stop them first" in text
        assert orphan.process is not None
        assert orphan.process.poll() is None
    finally:
        orphan.kill()


def test_the_embedded_default_fails_at_once_when_its_workers_cannot_start(tmp_path: Path) -> None:
    # Given a study whose entrypoint names a function its file does not have
    (tmp_path / "objective.py").write_text("def score(params, trial):\n    return 1.0\n")
    entrypoint = 'name = "mine"\nentrypoint = "objective.py:no_such_function"'
    toml = TOML.replace('name = "sleep"', entrypoint)

    # When `coordinator start` runs it on the embedded default
    process = coordinator(tmp_path, "coordinator", toml)

    # Then it fails within seconds, quoting the workers' error, and leaves no process behind
    try:
        assert process.wait(60) == 1, process.log()[-3000:]
    finally:
        process.stop()
    text = " ".join(process.log().split())
    assert "the local workers exited with code 1 while the study ran" in text
    assert "has no function 'no_such_function'" in text
    assert "no worker has started a trial" not in text
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(tmp_path / "run" / "redis") not in processes.stdout
