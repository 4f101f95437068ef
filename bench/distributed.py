"""Distributed benchmark: zoomtune's whole trial path against raw Celery on the same Redis.

    python -m bench.distributed [--trials 600] [--repeats 3]

Two measurements, each a ratio against a baseline measured in the same run, on the same
freshly started redis-server, with the same Celery settings (zoomtune/common/celery_app.py):

1. Throughput with a no-op objective: trials per second through zoomtune (the coordinator
   writes the round to the study store, sends one task per trial; workers take a lease, run the
   objective, record a fenced result; the coordinator follows the event stream) divided by
   tasks per second through raw Celery (send N tasks; each RPUSHes its span to a list).
2. Worker utilization with 50 ms trials on 8 slots: useful work (N x 50 ms) over the slot time
   available (8 x the wall time to the last result), for zoomtune and for raw Celery.

The clock starts right before the first send for raw Celery, and before the round loop starts
for zoomtune, so creating the study, taking its lock and writing the round count against
zoomtune (about 80 ms for 600 trials).

Both sides use `worker start`-equivalent prefork workers that are started (and warm) before the
clock starts; the coordinator side runs in this process.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.raw_celery import SPANS_KEY, make_app
from bench.sleep_study import sleep_study
from zoomtune.common.celery_app import make_celery
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import StudyState
from zoomtune.coordinator.dispatcher import CeleryDispatcher
from zoomtune.coordinator.embedded import LocalWorkers
from zoomtune.coordinator.progress import LogProgress
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.coordinator.rounds import LoopSettings, RoundLoop

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measurement:
    trials: int
    seconds: float
    spans: tuple[tuple[str, float, float], ...]
    """(process, start, end) of every trial, to find the gaps between trials on a process."""

    @property
    def median_gap(self) -> float:
        """Median seconds a pool process stayed idle between two trials."""
        by_process: dict[str, list[tuple[float, float]]] = {}
        for process, start, end in self.spans:
            by_process.setdefault(process, []).append((start, end))
        gaps = []
        for spans in by_process.values():
            spans.sort()
            gaps += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
        return statistics.median(gaps) if gaps else 0.0

    @property
    def per_second(self) -> float:
        return self.trials / self.seconds

    def utilization(self, duration: float, slots: int) -> float:
        return self.trials * duration / (slots * self.seconds)


def wait_for_workers(url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while " ready." not in log.read_text(errors="replace") if log.exists() else True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def run_raw(url: str, trials: int, duration: float, slots: int, workdir: Path) -> Measurement:
    log = workdir / f"raw-{slots}.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_celery", url, str(slots)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        time.sleep(0.5)
        app = make_app(url)
        client = redis.Redis.from_url(url, decode_responses=True)
        # A warm-up task, so that both sides start with connected, forked workers.
        client.delete(SPANS_KEY)
        app.send_task("bench.sleep", args=[0.0], queue="trials.cpu")
        _wait(lambda: int(client.llen(SPANS_KEY)) >= 1, 60)
        client.delete(SPANS_KEY)
        start = time.perf_counter()
        for _ in range(trials):
            app.send_task("bench.sleep", args=[duration], queue="trials.cpu")
        _wait(lambda: int(client.llen(SPANS_KEY)) >= trials, 600)
        seconds = time.perf_counter() - start
        app.close()
        spans = [str(entry).split() for entry in client.lrange(SPANS_KEY, 0, -1)]
        return Measurement(trials, seconds, tuple((p, float(a), float(b)) for p, a, b in spans))
    finally:
        stop_process(worker)


def run_zoomtune(
    url: str, trials: int, duration: float, slots: int, workdir: Path, name: str
) -> Measurement:
    log = workdir / f"zoomtune-{name}.log"
    workers = LocalWorkers(broker_url=url, concurrency=slots, log_path=log).start()
    try:
        wait_for_workers(url, log)
        settings = Settings(broker_url=url)
        client = connect(url)
        warm = _spec(f"{name}-warmup", slots, 0.0)
        _run_loop(warm, settings, client)
        spec = _spec(name, trials, duration)
        start = time.perf_counter()
        store = _run_loop(spec, settings, client)
        seconds = time.perf_counter() - start
        pipe = client.pipeline(transaction=False)
        for number in range(trials):
            pipe.hmget(store.keys.trial(number), "pid", "started_at", "finished_at")
        spans = tuple((str(p), float(a), float(b)) for p, a, b in pipe.execute())
        client.close()
        return Measurement(trials, seconds, spans)
    finally:
        workers.stop()


def _spec(name: str, trials: int, duration: float) -> StudySpec:
    return sleep_study(name, trials, duration, {"timeout": "10m"})


def _run_loop(spec: StudySpec, settings: Settings, client: redis.Redis) -> StudyStore:
    store = StudyStore(client, settings.prefix, spec.name)
    app = make_celery(settings)
    dispatcher = CeleryDispatcher(app, store, settings.prefix)
    loop = RoundLoop(spec, store, dispatcher, LogProgress(io.StringIO()), LoopSettings(tick=0.5))
    outcome = loop.run()
    dispatcher.close()
    app.close()
    if outcome.state != StudyState.COMPLETE:
        raise RuntimeError(f"benchmark study failed: {outcome.message}")
    return store


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark timed out")
        time.sleep(0.002)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its process group after 30 s."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(5)


def measure(
    side: str, url: str, trials: int, duration: float, slots: int, workdir: Path, name: str
) -> Measurement:
    if side == "raw":
        return run_raw(url, trials, duration, slots, workdir)
    return run_zoomtune(url, trials, duration, slots, workdir, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=600, help="trials per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--throughput-slots", type=int, default=2)
    parser.add_argument("--utilization-slots", type=int, default=8)
    parser.add_argument("--duration", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "distributed.json")
    args = parser.parse_args()

    kinds = {
        "throughput": (0.0, args.throughput_slots),
        "utilization": (args.duration, args.utilization_slots),
    }
    runs: dict[str, dict[str, list[float]]] = {
        kind: {"raw": [], "zoomtune": [], "ratio": [], "raw_gap": [], "zoomtune_gap": []}
        for kind in kinds
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for repeat in range(args.repeats):
            server = RedisServer(workdir / f"redis-{repeat}").start()
            try:
                # Both sides on the same fresh Redis, alternating who goes first.
                order = ["raw", "zoomtune"] if repeat % 2 == 0 else ["zoomtune", "raw"]
                for kind, (duration, slots) in kinds.items():
                    value: dict[str, float] = {}
                    for side in order:
                        got = measure(
                            side,
                            server.url,
                            args.trials,
                            duration,
                            slots,
                            workdir,
                            f"{kind}{repeat}",
                        )
                        value[side] = (
                            got.per_second
                            if kind == "throughput"
                            else got.utilization(duration, slots)
                        )
                        runs[kind][side].append(value[side])
                        runs[kind][f"{side}_gap"].append(got.median_gap)
                    runs[kind]["ratio"].append(value["zoomtune"] / value["raw"])
                    print(
                        f"repeat {repeat + 1}/{args.repeats} {kind}: raw {value['raw']:.3f}, "
                        f"zoomtune {value['zoomtune']:.3f}",
                        flush=True,
                    )
            finally:
                server.stop()

    median = {kind: {k: statistics.median(v) for k, v in r.items()} for kind, r in runs.items()}
    summary = {"settings": vars(args) | {"out": str(args.out)}, "runs": runs, "median": median}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))

    def row(kind: str, label: str, fmt: str) -> str:
        m, ratios = median[kind], runs[kind]["ratio"]
        return (
            f"| {label} | {m['raw']:{fmt}} | {m['zoomtune']:{fmt}} | {m['ratio']:.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |"
        )

    print(
        "\n| measure | raw Celery | zoomtune | ratio, median of paired runs (range) |\n"
        "|---|---|---|---|\n"
        + row("throughput", f"trials/s, no-op objective, {args.throughput_slots} slots", ".0f")
        + "\n"
        + row(
            "utilization",
            f"utilization, {args.duration * 1000:.0f} ms trials, {args.utilization_slots} slots",
            ".3f",
        )
        + "\n"
        + f"| median idle gap between two trials on one process, {args.utilization_slots} "
        f"slots (ms) | {median['utilization']['raw_gap'] * 1000:.1f} | "
        f"{median['utilization']['zoomtune_gap'] * 1000:.1f} | |"
    )


if __name__ == "__main__":
    main()
