"""Recovery benchmark: how long a trial stays lost after its worker is SIGKILLed.

    python -m bench.recovery [--repeats 5] [--lease 3] [--heartbeat 0.5] [--visibility 30]

Each repetition starts a fresh redis-server and two single-process workers, sends one long
trial, SIGKILLs the main process of the worker that runs it (node loss: nobody is left to
report anything) one second after it started, and measures on Redis's clock the time from the
kill until the trial runs again on the other worker.

- zoomtune: `worker start` daemons and the coordinator's round loop (default tick, 1 s). The
  lease expires at most `lease` after the kill, the reaper finds it within a tick, and the
  coordinator re-sends the trial as attempt 2. Target: lease + 2 s.
- Baseline, Celery alone: the same Celery configuration (zoomtune/common/celery_app.py: late acks,
  reject on worker lost, prefetch 1) and a task that records when it starts. Celery redelivers
  an unacknowledged message only after the visibility timeout, here shortened to `visibility`
  seconds so that it can be measured; Celery's default is 3600 s (zoomtune's is 86400 s).

Both sides use the same visibility timeout, so kombu's restore sweep runs equally often.
Run a worker of the baseline alone with `python -m bench.recovery --baseline-worker URL`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis
from celery import Celery

from bench.raw_celery import start_worker
from bench.sleep_study import sleep_study
from zoomtune.common.celery_app import make_celery
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import QUEUES, Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.dispatcher import CeleryDispatcher
from zoomtune.coordinator.embedded import LocalWorkers
from zoomtune.coordinator.progress import LogProgress
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.coordinator.rounds import RoundLoop

REPO = Path(__file__).resolve().parent.parent
STARTS_KEY = "zoomtune:bench:starts"
"""Baseline: a list of {"pid": main pid of the worker, "time": Redis time} per task start."""
TASK = "bench.recovery.sleep"
KILL_AFTER = 1.0
"""Seconds after the trial started that its worker is killed."""
TRIAL_SECONDS = 6.0

T = TypeVar("T")


@dataclass(frozen=True)
class Recovery:
    """One repetition: seconds from the SIGKILL to the trial running again."""

    restarted: float
    detected: float | None = None
    """zoomtune only: seconds from the SIGKILL to the trial going back to the queue."""


def redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def wait_ready(log: Path, timeout: float = 90) -> None:
    wait_for(
        lambda: log.exists() and " ready." in log.read_text(errors="replace"),
        timeout,
        f"the worker logging to {log}",
    )


# -- zoomtune --------------------------------------------------------------------------------


def study(name: str, lease: float, heartbeat: float) -> StudySpec:
    resources = {"timeout": "60s", "lease": f"{lease}s", "heartbeat": f"{heartbeat}s"}
    return sleep_study(name, 1, TRIAL_SECONDS, resources)


def zoomtune_once(
    workdir: Path, repeat: int, lease: float, heartbeat: float, visibility: float
) -> Recovery:
    server = RedisServer(workdir / f"zoomtune-redis-{repeat}").start()
    env = {"ZOOMTUNE_VISIBILITY_TIMEOUT": f"{visibility:g}"}
    workers = [
        LocalWorkers(
            server.url, 1, log_path=workdir / f"zoomtune-{repeat}-{i}.log", extra_env=env
        ).start()
        for i in range(2)
    ]
    client = connect(server.url)
    try:
        for i in range(2):
            wait_ready(workdir / f"zoomtune-{repeat}-{i}.log")
        settings = Settings(broker_url=server.url, visibility_timeout=visibility)
        spec = study(f"recovery-{repeat}", lease, heartbeat)
        store = StudyStore(client, settings.prefix, spec.name)
        app = make_celery(settings)
        loop = RoundLoop(
            spec, store, CeleryDispatcher(app, store, settings.prefix), LogProgress(io.StringIO())
        )
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()

        def attempt(number: int) -> dict[str, str] | None:
            row: dict[str, str] = client.hgetall(store.keys.trial(0))  # type: ignore[assignment]
            running = row.get("status") == TrialStatus.RUNNING.value
            return row if running and row.get("attempt") == str(number) else None

        first = wait_for(lambda: attempt(1), 60, "attempt 1 to start")
        time.sleep(KILL_AFTER)
        victim = next(w for w in workers if w.process and f"-{w.process.pid}@" in first["worker"])
        killed_at = redis_time(client)
        os.kill(victim.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        second = wait_for(lambda: attempt(2), 60, "attempt 2 to start")
        thread.join(60)
        app.close()
        return Recovery(
            restarted=float(second["started_at"]) - killed_at,
            detected=float(second["queued_at"]) - killed_at,
        )
    finally:
        for worker in workers:
            stop_group(worker.process)
        client.close()
        server.kill()


# -- Celery alone ----------------------------------------------------------------------------


def baseline_app(url: str, visibility: float) -> Celery:
    app = make_celery(Settings(broker_url=url, visibility_timeout=visibility), events=False)
    client = redis.Redis.from_url(url)

    @app.task(name=TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def sleep(seconds: float) -> None:
        start = {"pid": os.getppid(), "time": redis_time(client)}
        client.rpush(STARTS_KEY, json.dumps(start))
        time.sleep(seconds)

    return app


def baseline_worker(url: str, visibility: float, name: str) -> None:
    start_worker(baseline_app(url, visibility), name, concurrency=1, loglevel="INFO")


def baseline_once(workdir: Path, repeat: int, visibility: float) -> Recovery:
    server = RedisServer(workdir / f"celery-redis-{repeat}").start()
    workers: list[subprocess.Popen[bytes]] = []
    client = redis.Redis.from_url(server.url)
    try:
        for i in range(2):
            log = workdir / f"celery-{repeat}-{i}.log"
            with log.open("ab") as out:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.recovery",
                            "--baseline-worker",
                            server.url,
                            "--visibility",
                            f"{visibility:g}",
                            "--name",
                            f"celery-{i}@bench",
                        ],
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        for i in range(2):
            wait_ready(workdir / f"celery-{repeat}-{i}.log")
        app = baseline_app(server.url, visibility)
        app.send_task(TASK, args=[TRIAL_SECONDS], queue=QUEUES["cpu"])

        def starts(count: int) -> list[dict[str, float]] | None:
            entries = client.lrange(STARTS_KEY, 0, -1)
            return [json.loads(e) for e in entries] if len(entries) >= count else None

        first = wait_for(lambda: starts(1), 60, "the task to start")[0]
        time.sleep(KILL_AFTER)
        killed_at = redis_time(client)
        os.kill(int(first["pid"]), signal.SIGKILL)
        second = wait_for(lambda: starts(2), visibility + 60, "Celery to redeliver")[1]
        app.close()
        return Recovery(restarted=float(second["time"]) - killed_at)
    finally:
        for worker in workers:
            stop_group(worker)
        client.close()
        server.kill()


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a worker we started and its pool processes (its own session)."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


# -- report ----------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lease", type=float, default=3.0, help="zoomtune lease (s)")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="zoomtune heartbeat (s)")
    parser.add_argument("--visibility", type=float, default=30.0, help="visibility timeout (s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recovery.json")
    parser.add_argument("--baseline-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="celery@bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        baseline_worker(args.baseline_worker, args.visibility, args.name)
        return

    zoomtune: list[Recovery] = []
    celery: list[Recovery] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for repeat in range(args.repeats):
            zoomtune.append(
                zoomtune_once(workdir, repeat, args.lease, args.heartbeat, args.visibility)
            )
            celery.append(baseline_once(workdir, repeat, args.visibility))
            print(
                f"repeat {repeat + 1}/{args.repeats}: zoomtune {zoomtune[-1].restarted:.2f}s, "
                f"Celery alone {celery[-1].restarted:.2f}s",
                flush=True,
            )

    zt = summary([r.restarted for r in zoomtune])
    detected = summary([r.detected for r in zoomtune if r.detected is not None])
    base = summary([r.restarted for r in celery])
    result = {
        "repeats": args.repeats,
        "lease": args.lease,
        "heartbeat": args.heartbeat,
        "visibility_timeout": args.visibility,
        "kill_after": KILL_AFTER,
        "zoomtune_restarted": [r.restarted for r in zoomtune],
        "zoomtune_detected": [r.detected for r in zoomtune],
        "celery_restarted": [r.restarted for r in celery],
        "zoomtune": zt,
        "zoomtune_detection": detected,
        "celery": base,
        "ratio": zt["median"] / base["median"],
        "target": args.lease + 2.0,
        "meets_target": zt["max"] <= args.lease + 2.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        "\n| SIGKILL to running again | median | min | max |\n|---|---|---|---|\n"
        f"| zoomtune (lease {args.lease:g} s, tick 1 s) | {zt['median']:.2f} s | "
        f"{zt['min']:.2f} s | {zt['max']:.2f} s |\n"
        f"| Celery alone (visibility timeout {args.visibility:g} s) | {base['median']:.2f} s | "
        f"{base['min']:.2f} s | {base['max']:.2f} s |\n"
        f"\nratio zoomtune / Celery alone: {result['ratio']:.3f}; target lease + 2 s = "
        f"{result['target']:g} s: {'met' if result['meets_target'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
