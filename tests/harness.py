"""Real processes for integration tests: worker daemons and coordinators started with
subprocess, observed through Redis and their logs, and stopped only through their own pids."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
TEST_OBJECTIVES = REPO / "tests" / "objectives.py"
WORKER_COMMAND = (sys.executable, "-m", "zoomtune.workers.cli")
COORDINATOR_COMMAND = (sys.executable, "-m", "zoomtune.coordinator.cli")
"""The commands, run from this checkout; an installed `worker` or `coordinator` script can
stand in for them (tests/test_wheel_install.py)."""

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead and waiting for its parent, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def objective_option(name: str) -> str:
    """`--objective` value registering tests/objectives.py:NAME under NAME."""
    return f"{name}={TEST_OBJECTIVES}:{name}"


def _spawn(
    command: list[str], env: Mapping[str, str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (so its children can be ended with it), stdout and
    stderr appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _read_log(log_path: Path) -> str:
    return log_path.read_text(errors="replace") if log_path.exists() else ""


def _stop_group(process: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
    """Signal our process, wait, then SIGKILL its process group (its own pool children)."""
    if process.poll() is None:
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the group we created with start_new_session
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    return process.returncode


@dataclass
class WorkerProcess:
    """A `worker start` daemon with its own session, so its pool children die with it."""

    broker_url: str
    log_path: Path
    concurrency: int | None = 1
    """CPU processes; None leaves --concurrency out (a GPU-only `--gpus` worker refuses it)."""
    queues: str = "cpu"
    objectives: Sequence[str] = ()
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    program: Sequence[str] = WORKER_COMMAND
    cwd: Path = REPO
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        command = [
            *self.program,
            "start",
            "--queues",
            self.queues,
            *(["--concurrency", str(self.concurrency)] if self.concurrency is not None else []),
            *self.extra_args,
        ]
        for objective in self.objectives:
            command += ["--objective", objective]
        env = {**os.environ, "ZOOMTUNE_BROKER_URL": self.broker_url, **self.env}
        self.process = _spawn(command, env, self.log_path, self.cwd)
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("worker not started")
        return self.process.pid

    def log(self) -> str:
        return _read_log(self.log_path)

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited early ({self.process.returncode}):\n{self.log()[-3000:]}"
                )
            return " ready." in self.log()

        wait_until(ready, timeout, what=f"worker {self.pid} to be ready")
        return self

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL of its process group after `timeout`."""
        if self.process is None:
            return None
        return _stop_group(self.process, signal.SIGTERM, timeout)


@dataclass
class CoordinatorProcess:
    """`coordinator start` as a subprocess (the same command a user types)."""

    study_file: Path
    run_dir: Path
    broker_url: str | None
    log_path: Path
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    program: Sequence[str] = COORDINATOR_COMMAND
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> CoordinatorProcess:
        command = [
            *self.program,
            "start",
            str(self.study_file),
            "--run-dir",
            str(self.run_dir),
            *self.extra_args,
        ]
        env = {**os.environ, **self.env}
        env.pop("ZOOMTUNE_BROKER_URL", None)
        if self.broker_url is not None:
            env["ZOOMTUNE_BROKER_URL"] = self.broker_url
        self.process = _spawn(command, env, self.log_path, self.cwd)
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("coordinator not started")
        return self.process.pid

    def log(self) -> str:
        return _read_log(self.log_path)

    def wait(self, timeout: float) -> int:
        if self.process is None:
            raise RuntimeError("coordinator not started")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"coordinator still running after {timeout:g}s:\n{self.log()[-3000:]}"
            ) from exc

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        return _stop_group(self.process, signal.SIGINT, timeout)


def study_toml(
    name: str = "demo",
    objective: str = "sleepy",
    *,
    direction: str = "minimize",
    seed: int = 3,
    rounds: int = 2,
    trials_per_round: int = 4,
    options: str = "{}",
    resources: str = 'heartbeat = "0.5s"\nlease = "3s"\ntimeout = "60s"',
    space: str = 'x = { type = "float", low = 0.0, high = 1.0 }\n'
    'y = { type = "int", low = 1, high = 8 }',
    extra: str = "",
) -> str:
    """A small study file for tests; fast lease timings by default."""
    return f"""
[study]
name = "{name}"
direction = "{direction}"
seed = {seed}

[objective]
name = "{objective}"
options = {options}

[search]
rounds = {rounds}
trials_per_round = {trials_per_round}
{extra}

[resources]
{resources}

[space]
{space}
"""
