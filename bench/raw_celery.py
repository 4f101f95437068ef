"""The baseline for bench/distributed.py: plain Celery tasks with zoomtune's Celery settings.

Run as a worker: `python -m bench.raw_celery URL CONCURRENCY`. Each task does what a trial
must do at the least: run (sleep `seconds`) and record that it finished (one INCR in Redis).
"""

from __future__ import annotations

import sys
import time

import redis
from celery import Celery

from common.celery_app import make_celery
from common.settings import Settings

DONE_KEY = "zoomtune:bench:done"


def make_app(url: str) -> Celery:
    app = make_celery(Settings(broker_url=url))
    client = redis.Redis.from_url(url)

    @app.task(name="bench.sleep", acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
        client.incr(DONE_KEY)

    return app


def main() -> None:
    url, concurrency = sys.argv[1], int(sys.argv[2])
    app = make_app(url)
    worker = app.Worker(
        hostname=f"raw-{concurrency}@bench",
        queues=["trials.cpu"],
        concurrency=concurrency,
        pool="prefork",
        loglevel="WARNING",
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
    )
    worker.start()


if __name__ == "__main__":
    main()
