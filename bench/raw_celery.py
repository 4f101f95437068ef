"""The baseline for bench/distributed.py: plain Celery tasks with zoomtune's Celery settings.

Run as a worker: `python -m bench.raw_celery URL CONCURRENCY`. Each task does what a trial
must do at the least: run (sleep `seconds`) and record that it finished: one RPUSH of
"pid start end" to a list, which also gives the gaps between tasks on each pool process.
"""

from __future__ import annotations

import os
import sys
import time

import redis
from celery import Celery

from zoomtune.common.celery_app import make_celery
from zoomtune.common.settings import QUEUES, Settings

SPANS_KEY = "zoomtune:bench:spans"


def make_app(url: str) -> Celery:
    app = make_celery(Settings(broker_url=url))
    client = redis.Redis.from_url(url)

    @app.task(name="bench.sleep", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def sleep(seconds: float) -> None:
        start = time.time()
        if seconds > 0:
            time.sleep(seconds)
        client.rpush(SPANS_KEY, f"{os.getpid()} {start} {time.time()}")

    return app


def start_worker(app: Celery, hostname: str, concurrency: int, loglevel: str) -> None:
    """A prefork worker on trials.cpu with the options `worker start` gives Celery."""
    worker = app.Worker(
        hostname=hostname,
        queues=[QUEUES["cpu"]],
        concurrency=concurrency,
        pool="prefork",
        loglevel=loglevel,
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
    )
    worker.start()


def main() -> None:
    url, concurrency = sys.argv[1], int(sys.argv[2])
    start_worker(make_app(url), f"raw-{concurrency}@bench", concurrency, loglevel="WARNING")


if __name__ == "__main__":
    main()
