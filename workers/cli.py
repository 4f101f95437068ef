"""`worker start`: a Celery worker daemon that runs zoomtune trials.

It runs in the foreground and logs to stdout, as systemd, Kubernetes and compose expect.
SIGTERM is a warm shutdown (the running trials finish and are recorded, then it exits 0);
SIGQUIT is a cold shutdown (running trials are handed back to the queue at once). Set
REMAP_SIGTERM=SIGQUIT where SIGTERM means preemption (spot instances).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

import click

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
def start(
    broker: str | None,
    queues: str,
    concurrency: int | None,
    objectives: tuple[str, ...],
    name: str | None,
    device: str,
    loglevel: str,
) -> None:
    """Consume trials from the broker and run them until stopped.

    \b
    SIGTERM: warm shutdown; running trials finish and are recorded, then exit 0.
    SIGQUIT: cold shutdown; running trials go back to the queue at once.
    Set REMAP_SIGTERM=SIGQUIT where SIGTERM means preemption (spot instances).
    """
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


if __name__ == "__main__":
    main()
