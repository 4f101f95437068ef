"""`worker start`: a Celery worker daemon that runs zoomtune trials.

It runs in the foreground and logs to stdout, as systemd, Kubernetes and compose expect.
SIGTERM is a warm shutdown (the running trials finish and are recorded, then it exits 0);
SIGQUIT is a cold shutdown (running trials are handed back to the queue at once). Set
REMAP_SIGTERM=SIGQUIT where SIGTERM means preemption (spot instances).

`--health-file` makes the worker touch a file whenever its consumer sends a heartbeat (every 2 s
while it is connected and consuming); `worker health FILE` is the liveness probe that checks it
is fresh, for Kubernetes, compose and systemd watchdogs.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click
from celery import signals

from common.celery_app import describe_broker, make_celery
from common.errors import ZoomtuneError
from common.settings import QUEUES, Settings
from workers.execute import WorkerRuntime
from workers.registry import ObjectiveRegistry
from workers.tasks import register_tasks

log = logging.getLogger("zoomtune.worker")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s",
    )


def parse_queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise click.BadParameter(
            f"expected a comma-separated list of {sorted(QUEUES)}, got {value!r}"
        )
    return queues


def touch_on_heartbeat(path: Path) -> None:
    """Touch `path` when the worker is ready and at every heartbeat its consumer sends."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def touch(**_: Any) -> None:
        path.touch()

    # Celery only emits heartbeat_sent if a receiver is connected before the worker starts.
    signals.worker_ready.connect(touch, weak=False)
    signals.heartbeat_sent.connect(touch, weak=False)


@click.group()
def main() -> None:
    """zoomtune worker daemons."""


@main.command()
@click.option(
    "--broker",
    envvar="ZOOMTUNE_BROKER_URL",
    metavar="URL",
    help="redis:// or rediss:// URL (default: $ZOOMTUNE_BROKER_URL).",
)
@click.option(
    "--queues",
    default="cpu",
    show_default=True,
    help="Comma-separated resource queues to consume: cpu, gpu.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Trial processes (default: the number of cores).",
)
@click.option(
    "--objective",
    "objectives",
    multiple=True,
    metavar="NAME=MODULE:FUNCTION",
    help="Register an objective (repeatable); also NAME=path/to/file.py:function.",
)
@click.option("--name", default=None, help="Worker node name (default: zoomtune-PID@HOST).")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    hidden=True,
    help="Device label recorded with each trial.",
)
@click.option(
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Touch this file at every heartbeat (for `worker health`).",
)
def start(
    broker: str | None,
    queues: str,
    concurrency: int | None,
    objectives: tuple[str, ...],
    name: str | None,
    device: str,
    loglevel: str,
    health_file: Path | None,
) -> None:
    """Consume trials from the broker and run them until stopped."""
    configure_logging(loglevel)
    queue_kinds = parse_queues(queues)
    try:
        settings = Settings.from_env().with_broker(broker)
        if settings.broker_url is None:
            raise click.UsageError("no broker: pass --broker URL or set ZOOMTUNE_BROKER_URL")
        extra = dict(ObjectiveRegistry.parse_option(o) for o in objectives)
        registry = ObjectiveRegistry.build(extra)
        node = name or f"zoomtune-{os.getpid()}@{socket.gethostname()}"
        runtime = WorkerRuntime(
            settings=settings, registry=registry, worker_name=node, device=device
        )
        app = make_celery(settings)
        register_tasks(app, runtime)
    except ZoomtuneError as exc:
        raise click.ClickException(str(exc)) from exc
    processes = concurrency or os.cpu_count() or 1
    if health_file is not None:
        touch_on_heartbeat(health_file)
    log.info(
        "worker %s: broker %s, queues %s, %d processes, objectives %s",
        node,
        describe_broker(settings),
        [QUEUES[q] for q in queue_kinds],
        processes,
        registry.names(),
    )
    worker = app.Worker(
        hostname=node,
        queues=[QUEUES[q] for q in queue_kinds],
        concurrency=processes,
        pool="prefork",
        loglevel=loglevel.upper(),
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
    )
    worker.start()
    sys.exit(worker.exitcode or 0)


@main.command()
@click.argument("health_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--max-age",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds since the last heartbeat after which the worker counts as stuck.",
)
def health(health_file: Path, max_age: float) -> None:
    """Exit 0 if the worker that writes HEALTH_FILE sent a heartbeat within --max-age seconds.

    A liveness probe: the file is touched by `worker start --health-file HEALTH_FILE`.
    """
    try:
        age = time.time() - health_file.stat().st_mtime
    except FileNotFoundError:
        click.echo(f"unhealthy: {health_file} does not exist (worker not ready yet?)", err=True)
        sys.exit(1)
    if age > max_age:
        click.echo(f"unhealthy: last heartbeat {age:.0f}s ago (limit {max_age:g}s)", err=True)
        sys.exit(1)
    click.echo(f"healthy: last heartbeat {age:.1f}s ago")


if __name__ == "__main__":
    main()
