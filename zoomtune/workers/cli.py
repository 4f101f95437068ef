"""`worker start`: a Celery worker daemon that runs zoomtune trials; `worker gpus`: its GPUs.

It runs in the foreground and logs to stdout, as systemd, Kubernetes and compose expect.
SIGTERM is a warm shutdown (the running trials finish and are recorded, then it exits 0);
SIGQUIT is a cold shutdown (running trials are handed back to the queue at once). Set
REMAP_SIGTERM=SIGQUIT where SIGTERM means preemption (spot instances).

Without `--gpus` it is one Celery worker (`--concurrency` processes on `--queues`). With GPUs it
supervises one such worker per slot (see `zoomtune.workers.supervisor`): each GPU slot pinned to one
GPU with concurrency 1 on `trials.gpu`, plus a CPU slot on `trials.cpu` when `--queues` has cpu.

Before it takes any trial it waits for the broker: for as long as Redis is not reachable (not up
yet, restarting), but only `--refused-timeout` seconds (default 30) while Redis refuses it (a
wrong or missing password, a certificate that fails verification); then it exits 1 saying why,
so that systemd or Kubernetes show the failure. Bad input (a malformed broker URL, bad options)
exits 2.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from celery import signals

from zoomtune.common.broker import wait_for_broker
from zoomtune.common.celery_app import describe_broker, make_celery
from zoomtune.common.errors import ConfigError, GpuError
from zoomtune.common.exits import ExitCode, OneLineErrors, exits_on_error
from zoomtune.common.lifeline import watch_parent_from_env
from zoomtune.common.redact import RedactingFormatter, install_redacting_excepthook
from zoomtune.common.settings import QUEUES, Settings
from zoomtune.common.sklearn_payload import KEY_ENV, KEY_FILE_ENV, key_from_env
from zoomtune.workers.execute import WorkerRuntime
from zoomtune.workers.gpus import GpuRequest, discover_gpus, resolve_gpus
from zoomtune.workers.objectives.sklearn_cv import NAME as SKLEARN_CV
from zoomtune.workers.objectives.sklearn_cv import SklearnCV
from zoomtune.workers.registry import ObjectiveRegistry
from zoomtune.workers.supervisor import Supervisor, plan_slots, slot_command, slot_env
from zoomtune.workers.tasks import register_tasks

log = logging.getLogger("zoomtune.worker")


CELERY_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")
"""Celery's "Task ... received" and "Task ... succeeded" lines. zoomtune logs each trial's start
and end itself, with study, trial, attempt and score, so at INFO these two only repeat it; the
"received" line is written by the worker's main process, which also hands every message to the
pool, so it is quieted (it still shows at DEBUG, and failures at every level)."""


def configure_logging(level: str) -> None:
    """Log lines on stdout, passwords hidden even in Celery's own messages and tracebacks."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in CELERY_PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


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


@click.group(cls=OneLineErrors)
def main() -> None:
    """zoomtune worker daemons."""
    install_redacting_excepthook()


@main.command()
@click.option(
    "--broker",
    envvar="ZOOMTUNE_BROKER_URL",
    metavar="URL",
    help="redis:// or rediss:// URL (default: $ZOOMTUNE_BROKER_URL).",
)
@click.option(
    "--queues",
    default=None,
    help="Comma-separated resource queues to consume: cpu, gpu "
    "(default: gpu with --gpus, else cpu).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="CPU trial processes (default: the cores, less one per GPU slot).",
)
@click.option(
    "--gpus",
    default=None,
    metavar="all|none|IDS",
    help="One pinned process per GPU, consuming trials.gpu: all (nvidia-smi, or the "
    "CUDA_VISIBLE_DEVICES already set), none (default), or ids such as 0,1,3.",
)
@click.option(
    "--trials-per-gpu",
    type=click.IntRange(1, 64),
    default=None,
    help="Slots per GPU, each running one trial at a time (default 1).",
)
@click.option(
    "--objective",
    "objectives",
    multiple=True,
    metavar="NAME=MODULE:FUNCTION",
    help="Register an objective (repeatable); also NAME=path/to/file.py:function.",
)
@click.option(
    "--allow-sklearn-payloads",
    is_flag=True,
    default=False,
    help="Register the sklearn-cv objective, which runs ZoomSearchCV trials: it unpickles a "
    "study's payload (estimator and data) once its HMAC verifies with the key in "
    "$ZOOMTUNE_PAYLOAD_KEY or $ZOOMTUNE_PAYLOAD_KEY_FILE (as the coordinator's).",
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
@click.option(
    "--refused-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="ZOOMTUNE_REFUSED_TIMEOUT",
    help="Seconds to keep trying while the broker refuses this worker (wrong or missing "
    "password, failed certificate check) before exiting 1 ($ZOOMTUNE_REFUSED_TIMEOUT).",
)
@exits_on_error
def start(
    broker: str | None,
    queues: str | None,
    concurrency: int | None,
    gpus: str | None,
    trials_per_gpu: int | None,
    objectives: tuple[str, ...],
    allow_sklearn_payloads: bool,
    name: str | None,
    device: str,
    loglevel: str,
    health_file: Path | None,
    refused_timeout: float,
) -> None:
    """Consume trials from the broker and run them until stopped.

    \b
    SIGTERM: warm shutdown; running trials finish and are recorded, then exit 0.
    SIGQUIT: cold shutdown; running trials go back to the queue at once.
    Set REMAP_SIGTERM=SIGQUIT where SIGTERM means preemption (spot instances).
    """
    configure_logging(loglevel)
    try:
        watch_parent_from_env()  # the embedded default's workers end with their coordinator
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    request = GpuRequest.parse(gpus or "none")
    queue_kinds = parse_queues(queues or ("gpu" if request.wants_gpus else "cpu"))
    check_gpu_options(request, queue_kinds, concurrency, trials_per_gpu)
    settings = Settings.from_env().with_broker(broker)
    if settings.broker_url is None:
        raise click.UsageError("no broker: pass --broker URL or set ZOOMTUNE_BROKER_URL")
    extra = dict(ObjectiveRegistry.parse_option(o) for o in objectives)
    registry = ObjectiveRegistry.build(extra)
    if allow_sklearn_payloads:
        allow_sklearn_cv(registry, os.environ)
    node = name or f"zoomtune-{os.getpid()}@{socket.gethostname()}"
    gpu_ids = gpus_to_pin(request, queue_kinds)
    wait_for_broker(
        settings.broker_url, None, refused_timeout=refused_timeout, on_retry=log.warning
    )
    if gpu_ids:
        slots_on_gpus = len(gpu_ids) * (trials_per_gpu or 1)
        cpu_processes = 0
        if "cpu" in queue_kinds:
            cpu_processes = concurrency or max(1, (os.cpu_count() or 1) - slots_on_gpus)
        slots = plan_slots(gpu_ids, trials_per_gpu or 1, cpu_processes)
        log.info(
            "worker %s: broker %s, %d GPU slot(s) on GPUs %s, %d CPU process(es)",
            node,
            describe_broker(settings),
            slots_on_gpus,
            ",".join(gpu_ids),
            cpu_processes,
        )
        supervisor = Supervisor(
            slots,
            command=lambda slot: slot_command(
                slot, node, objectives, loglevel, health_file, allow_sklearn_payloads
            ),
            env=lambda slot: {
                **slot_env(slot, settings.broker_url or ""),
                "ZOOMTUNE_REFUSED_TIMEOUT": f"{refused_timeout:g}",
            },
        )
        sys.exit(supervisor.run())
    if request.wants_gpus:
        queue_kinds = ["cpu"]  # --gpus all found no GPU, and the CPU queue was asked for too
    sys.exit(
        run_celery_worker(
            settings, registry, node, device, queue_kinds, concurrency, loglevel, health_file
        )
    )


def allow_sklearn_cv(registry: ObjectiveRegistry, env: Mapping[str, str]) -> None:
    """Register `sklearn-cv` with the payload key from the environment (ConfigError without)."""
    key = key_from_env(env)
    if key is None:
        raise ConfigError(
            f"--allow-sklearn-payloads needs the payload key: set {KEY_ENV} (hex, e.g. "
            f"`openssl rand -hex 32`) or {KEY_FILE_ENV}, the same as the coordinator's"
        )
    registry.add(SKLEARN_CV, SklearnCV(key), "zoomtune.workers.objectives.sklearn_cv:SklearnCV")


def run_celery_worker(
    settings: Settings,
    registry: ObjectiveRegistry,
    node: str,
    device: str,
    queue_kinds: list[str],
    concurrency: int | None,
    loglevel: str,
    health_file: Path | None = None,
) -> int:
    """One Celery worker in this process: `concurrency` pool processes on `queue_kinds`."""
    runtime = WorkerRuntime(settings=settings, registry=registry, worker_name=node, device=device)
    app = make_celery(settings)
    register_tasks(app, runtime)
    processes = concurrency or os.cpu_count() or 1
    if health_file is not None:
        touch_on_heartbeat(health_file)
    log.info(
        "worker %s: broker %s, queues %s, %d processes, device %s, objectives %s",
        node,
        describe_broker(settings),
        [QUEUES[q] for q in queue_kinds],
        processes,
        device,
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
    return int(worker.exitcode or 0)


def check_gpu_options(
    request: GpuRequest,
    queue_kinds: list[str],
    concurrency: int | None,
    trials_per_gpu: int | None,
) -> None:
    """Refuse option combinations that cannot mean what they say."""
    if trials_per_gpu is not None and not request.wants_gpus:
        raise click.UsageError("--trials-per-gpu needs --gpus (all or ids)")
    if request.wants_gpus and "gpu" not in queue_kinds:
        raise click.UsageError(
            "--gpus gives GPU slots, which consume trials.gpu, but --queues "
            f"{','.join(queue_kinds)} leaves gpu out; use --queues gpu or gpu,cpu"
        )
    if request.wants_gpus and concurrency is not None and "cpu" not in queue_kinds:
        raise click.UsageError(
            "with --gpus, --concurrency sizes the CPU slot, which consumes trials.cpu; "
            "add cpu to --queues (--queues gpu,cpu)"
        )


def gpus_to_pin(request: GpuRequest, queue_kinds: list[str]) -> list[str]:
    """The GPU ids to run one slot each on; [] when `--gpus all` finds none but CPU work
    was asked for too (a GPU-only worker on a machine without GPUs is an error)."""
    try:
        return resolve_gpus(request, os.environ)
    except GpuError as exc:
        if request.mode != "all" or "cpu" not in queue_kinds:
            hint = (
                "; this worker consumes only trials.gpu: run it on a GPU node, or start a CPU "
                "worker (--queues cpu)"
                if request.mode == "all"
                else ""
            )
            raise GpuError(f"{exc}{hint}") from exc
        log.warning("--gpus all: %s; running the CPU slot only (trials.cpu)", exc)
        return []


@main.command()
@exits_on_error
def gpus() -> None:
    """List the GPUs `worker start --gpus all` would use (exit code 1 when there are none)."""
    try:
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            ids = resolve_gpus(GpuRequest("all"), os.environ)
            lines = [f"GPU {gpu_id} (from CUDA_VISIBLE_DEVICES)" for gpu_id in ids]
        else:
            lines = [gpu.describe() for gpu in discover_gpus()]
    except GpuError as exc:
        click.echo(f"no GPU: {exc}", err=True)
        sys.exit(ExitCode.FAILED)
    click.echo("\n".join(lines))


@main.command()
@click.argument("health_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--max-age",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds since the last heartbeat after which the worker counts as stuck.",
)
@exits_on_error
def health(health_file: Path, max_age: float) -> None:
    """Exit 0 if the worker that writes HEALTH_FILE sent a heartbeat within --max-age seconds.

    A liveness probe: the file is touched by `worker start --health-file HEALTH_FILE`.
    """
    try:
        age = time.time() - health_file.stat().st_mtime
    except FileNotFoundError:
        click.echo(f"unhealthy: {health_file} does not exist (worker not ready yet?)", err=True)
        sys.exit(ExitCode.FAILED)
    if age > max_age:
        click.echo(f"unhealthy: last heartbeat {age:.0f}s ago (limit {max_age:g}s)", err=True)
        sys.exit(ExitCode.FAILED)
    click.echo(f"healthy: last heartbeat {age:.1f}s ago")


if __name__ == "__main__":
    main()
