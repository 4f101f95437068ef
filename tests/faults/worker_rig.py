"""The fault-test rig of docs/FAULTS.md for the worker-side scenarios (S1-S5, S12, S13, S20).

Each test gets its own redis-server (the `redis_server` fixture, AOF on), starts real `worker
start` daemons (`-c 1`, prefork) with `WorkerProcess`, and runs the coordinator's real round
loop (`RoundLoop` with `CeleryDispatcher`) in a thread of the test, so that the test can set the
reaper tick (0.5 s) and read the outcome. Faults are injected with `os.kill` on the pids this
test started: a worker's main pid (`WorkerProcess.pid`) or its pool child, whose pid the store
records in the trial hash when the attempt starts. Teardown stops the coordinator thread, then
every worker (SIGTERM, SIGKILL of its process group after 5 s).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.harness import WorkerProcess, objective_option, wait_until
from zoomtune.common.celery_app import make_celery
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialStatus
from zoomtune.coordinator.dispatcher import CeleryDispatcher
from zoomtune.coordinator.progress import LogProgress
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.coordinator.rounds import LoopSettings, RoundLoop, StudyOutcome

PREFIX = "zoomtune:"
TICK = 0.5
"""The coordinator's reaper tick in these tests (docs/FAULTS.md: 0.5 s)."""
FAST_RESOURCES = 'heartbeat = "0.5s"\nlease = "3s"\ntimeout = "60s"\nmax_attempts = 3'
"""Lease timings of the fault tests: heartbeat 0.5 s, lease (grace) 3 s."""
LEASE = 3.0


@dataclass
class CoordinatorThread:
    """The real round loop of one study, running in a thread of the test."""

    loop: RoundLoop
    progress: io.StringIO
    outcome: StudyOutcome | None = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="coordinator", daemon=True)

    def _run(self) -> None:
        try:
            self.outcome = self.loop.run()
        except BaseException as exc:  # the test reads it from wait()
            self.error = exc

    def wait(self, timeout: float) -> StudyOutcome:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(
                f"the study did not finish within {timeout:g}s:\n{self.progress.getvalue()[-3000:]}"
            )
        if self.error is not None:
            raise AssertionError(f"the coordinator failed: {self.error!r}") from self.error
        if self.outcome is None:
            raise AssertionError("the coordinator returned nothing")
        return self.outcome

    def stop(self) -> None:
        """Take the study lock away: the loop's next renewal raises LeaseLost and it stops."""
        store = self.loop.store
        if self.thread.is_alive():
            store.client.set(store.keys.lock, "stopped-by-the-test test:0")
            self.thread.join(10)
            store.client.delete(store.keys.lock)


@dataclass
class WorkerRig:
    """Real processes on one real redis-server, started and stopped by this test only."""

    redis: RedisServer
    directory: Path
    client: redis.Redis
    workers: list[WorkerProcess] = field(default_factory=list)
    coordinators: list[CoordinatorThread] = field(default_factory=list)

    def start_workers(
        self,
        count: int,
        objectives: Sequence[str],
        *,
        visibility_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> list[WorkerProcess]:
        """`count` single-process workers registering the named test objectives, ready."""
        started = []
        for _ in range(count):
            index = len(self.workers)
            worker = WorkerProcess(
                self.redis.url,
                self.directory / f"worker{index}.log",
                concurrency=1,
                objectives=[objective_option(name) for name in objectives],
                env={"ZOOMTUNE_VISIBILITY_TIMEOUT": f"{visibility_timeout:g}", **(env or {})},
            )
            self.workers.append(worker)
            started.append(worker.start())
        for worker in started:
            worker.wait_ready(90)
        return started

    def store(self, study: str = "demo") -> StudyStore:
        return StudyStore(self.client, PREFIX, study)

    def run_study(self, toml: str, *, visibility_timeout: float = 30.0) -> CoordinatorThread:
        """Start the round loop of the study in `toml` (what `coordinator start` runs)."""
        spec = StudySpec.from_toml(toml)
        settings = Settings(
            broker_url=self.redis.url, prefix=PREFIX, visibility_timeout=visibility_timeout
        )
        store = self.store(spec.name)
        app = make_celery(settings)
        progress = io.StringIO()
        loop = RoundLoop(
            spec,
            store,
            CeleryDispatcher(app, store, PREFIX),
            LogProgress(progress),
            LoopSettings(tick=TICK, lock_ttl=10.0),
        )
        coordinator = CoordinatorThread(loop, progress)
        self.coordinators.append(coordinator)
        coordinator.thread.start()
        return coordinator

    def running(self, study: StudyStore, number: int, attempt: int = 1) -> Trial:
        """Wait until attempt `attempt` of trial `number` runs; returns its record."""

        def started() -> Trial | None:
            found = study.trials([number])
            if not found or found[0].attempt != attempt:
                return None
            return found[0] if found[0].status is TrialStatus.RUNNING else None

        return wait_until(started, 60, 0.02, what=f"trial {number} attempt {attempt} to run")

    def owner(self, trial: Trial) -> WorkerProcess:
        """The worker whose daemon runs (or ran) `trial`, from the node name it recorded."""
        for worker in self.workers:
            if trial.worker == f"zoomtune-{worker.pid}@{trial.host}":
                return worker
        raise AssertionError(f"trial {trial.number} ran on {trial.worker}, not one of ours")

    def child_pid(self, study: StudyStore, number: int) -> int:
        """The pid of the pool process running trial `number` (recorded by the start script)."""
        pid = study.client.hget(study.keys.trial(number), "pid")
        if pid is None:
            raise AssertionError(f"trial {number} records no pid")
        return int(str(pid))

    def wait_for_log(self, worker: WorkerProcess, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in worker.log(), timeout, 0.1, what=f"{text!r} in the log")

    def requeued_at(self, study: StudyStore, number: int) -> float:
        """Redis time (s) when trial `number` first went back to the queue (from the event's
        stream id, which is Redis's clock in ms)."""
        for entry_id, fields in study.client.xrange(study.keys.events):
            if fields.get("type") == "requeued" and fields.get("trial") == str(number):
                return int(str(entry_id).split("-")[0]) / 1000
        raise AssertionError(f"trial {number} was never requeued")

    def redis_time(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def stop(self) -> None:
        """Stop every coordinator thread and worker this test started."""
        for coordinator in self.coordinators:
            coordinator.stop()
        for worker in self.workers:
            worker.stop()
