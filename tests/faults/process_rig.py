"""The fault-test rig of docs/FAULTS.md for the Redis-side scenarios (S6-S11, S14, S19), resume and
determinism: every part a separate process, the coordinator included.

Where `worker_rig` runs the round loop in a thread of the test, a `ProcessRig` starts real
`worker start` and `coordinator start` processes against the test's redis-server, remembers
every one it started, and stops them by their own pids (never by name). Its coordinators use a
fast round loop (`FAST_LOOP`), its studies fast lease timings, so that a scenario takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.faults.invariants import check_invariants
from tests.harness import CoordinatorProcess, WorkerProcess, objective_option
from tests.objectives import deterministic_score, learning_curve
from zoomtune.common.errors import StudyNotFound
from zoomtune.common.redis_client import connect
from zoomtune.common.store import StudyStore
from zoomtune.common.store_records import canonical_json
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialStatus, pruned_at
from zoomtune.coordinator.pruning import ReferenceCurve, rungs_for
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.coordinator.search import CoarseToFine

PREFIX = "zoomtune:"

FAST_LOOP = ("--tick", "0.5", "--lock-ttl", "5", "--outage-limit", "60")
"""Hidden `coordinator start` options: housekeeping every 0.5 s, a 5 s study lock."""

FAST_RESOURCES = 'heartbeat = "0.5s"\nlease = "3s"\ntimeout = "60s"\nmax_attempts = 3'
"""The `[resources]` of a fault-test study: heartbeat 0.5 s, lease 3 s."""


@dataclass
class ProcessRig:
    """Worker and coordinator processes around one redis-server, all stopped by pid."""

    redis: RedisServer
    folder: Path
    started: list[WorkerProcess | CoordinatorProcess] = field(default_factory=list)
    _client: redis.Redis | None = None

    # -- processes ---------------------------------------------------------------------------

    def workers(
        self,
        count: int,
        objectives: Sequence[str] = ("sleepy",),
        concurrency: int = 1,
        wait: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> list[WorkerProcess]:
        """Start `count` workers with `concurrency` pool processes each (and wait until ready),
        with `env` added to their environment."""
        first = sum(isinstance(p, WorkerProcess) for p in self.started)
        workers = [
            WorkerProcess(
                self.redis.url,
                self.folder / f"worker{first + i}.log",
                concurrency=concurrency,
                objectives=[objective_option(name) for name in objectives],
                env=dict(env or {}),
            ).start()
            for i in range(count)
        ]
        self.started.extend(workers)
        if wait:
            for worker in workers:
                worker.wait_ready()
        return workers

    def study_file(self, toml: str, name: str = "study.toml") -> Path:
        path = self.folder / name
        path.write_text(toml)
        return path

    def coordinator(
        self,
        study_file: Path,
        name: str = "coordinator",
        extra_args: Sequence[str] = FAST_LOOP,
        broker_url: str | None = None,
    ) -> CoordinatorProcess:
        """Start `coordinator start STUDY_FILE` against this Redis (or `broker_url`)."""
        process = CoordinatorProcess(
            study_file,
            self.folder / f"run-{name}",
            broker_url or self.redis.url,
            self.folder / f"{name}.log",
            extra_args=extra_args,
        ).start()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()

    # -- the store ---------------------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = connect(self.redis.url)
        return self._client

    def store(self, study: str = "demo") -> StudyStore:
        return StudyStore(self.client, PREFIX, study)

    def trials(self, study: str = "demo") -> list[Trial]:
        """The study's trials, or none while the coordinator has not created it yet."""
        try:
            return self.store(study).trials()
        except StudyNotFound:
            return []

    def running(self, study: str = "demo") -> list[Trial]:
        return [t for t in self.trials(study) if t.status is TrialStatus.RUNNING]

    def redis_time(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def check(self, expected_trials: int, max_attempts: int = 3, study: str = "demo") -> None:
        """Stop every process, then check the invariants I1-I4."""
        self.stop_all()
        check_invariants(self.store(study), expected_trials, max_attempts, list(self.started))

    def close(self) -> None:
        self.stop_all()
        if self._client is not None:
            self._client.close()


@dataclass(frozen=True)
class StudyRun:
    """What a study produced, in order: each round's box, each trial's params and score."""

    boxes: list[dict[str, Any]]
    trials: list[tuple[dict[str, Any], float | None]]

    @classmethod
    def reference(cls, toml: str) -> StudyRun:
        """The study run in this process, without Redis or workers, on `deterministic_score`
        (the score of the `sleepy` and `jittery` test objectives)."""
        spec = StudySpec.from_toml(toml)
        search = CoarseToFine(spec)
        trials: list[tuple[dict[str, Any], float | None]] = []
        while batch := search.ask():
            scored = [(params, deterministic_score(params)) for params in batch]
            search.tell(scored)
            trials.extend(scored)
        boxes = [json.loads(canonical_json(box.to_dict(spec.space))) for box in search.boxes]
        return cls(boxes, trials)

    @classmethod
    def from_store(cls, store: StudyStore) -> StudyRun:
        return cls(
            [dict(record.box) for record in store.rounds()],
            [(dict(t.params), t.score) for t in store.trials()],
        )


PrunedTrial = tuple[dict[str, Any], str, float | None, int | None, float | None]
"""A trial of a study with early stopping: params, status, score, last step, last value."""


@dataclass(frozen=True)
class PrunedRun:
    """What a study of the `prunable` test objective produced: each trial's outcome and the
    rungs of each round."""

    trials: list[PrunedTrial]
    rungs: list[list[tuple[int, float]]]

    @classmethod
    def reference(cls, toml: str, steps: int = 9) -> PrunedRun:
        """The study run in this process, without Redis or workers: each round's rungs from
        the curves of the earlier rounds, each trial stopped where `prunable` would stop."""
        spec = StudySpec.from_toml(toml)
        search = CoarseToFine(spec)
        curves: list[ReferenceCurve] = []
        trials: list[PrunedTrial] = []
        all_rungs: list[list[tuple[int, float]]] = []
        while batch := search.ask():
            rungs = rungs_for(spec.early_stopping, curves, spec.maximize)
            all_rungs.append([(r.step, r.threshold) for r in rungs])
            told: list[tuple[dict[str, Any], float | None]] = []
            for params in batch:
                done: list[int] = []
                values: list[float] = []
                status = TrialStatus.COMPLETE
                for step in range(1, steps + 1):
                    done.append(step)
                    values.append(learning_curve(params, step))
                    if pruned_at(rungs, done, values, spec.maximize) is not None:
                        status = TrialStatus.PRUNED
                        break
                score = values[-1] if status is TrialStatus.COMPLETE else None
                last = (done[-1], values[-1]) if status is TrialStatus.PRUNED else (None, None)
                trials.append((params, status.value, score, *last))
                curves.append(
                    ReferenceCurve(len(curves), status, tuple(done), tuple(values), score)
                )
                told.append((params, score))
            search.tell(told)
        return cls(trials, all_rungs)

    @classmethod
    def from_store(cls, store: StudyStore) -> PrunedRun:
        trials = store.trials()
        return cls(
            [(dict(t.params), t.status.value, t.score, t.last_step, t.last_value) for t in trials],
            [[(r.step, r.threshold) for r in record.rungs] for record in store.rounds()],
        )

    @property
    def pruned(self) -> list[int]:
        return [n for n, trial in enumerate(self.trials) if trial[1] == "pruned"]
