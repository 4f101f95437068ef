"""Running a study from `coordinator start`: on a broker, or on the embedded default.

Both paths go through `run_study` (the same round loop, store and Celery dispatcher); the
embedded default only wraps it in a private redis-server and local workers, which are stopped
on every way out (an error, SIGINT, SIGTERM, SIGHUP: see `Interruption`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from rich.markup import escape

from zoomtune.common.broker import wait_for_broker
from zoomtune.common.celery_app import make_celery
from zoomtune.common.errors import ConfigError, StudyLocked, ZoomtuneError
from zoomtune.common.objectives import (
    BUILTIN_OBJECTIVES,
    builtin_last_step,
    builtin_option_problems,
    installed_objectives,
)
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import StudyState
from zoomtune.coordinator.console import output_console
from zoomtune.coordinator.dispatcher import CeleryDispatcher
from zoomtune.coordinator.embedded import LocalWorkers, local_gpus
from zoomtune.coordinator.export import StudyRecord, write_run_dir
from zoomtune.coordinator.progress import StudyProgress
from zoomtune.coordinator.redis_server import embedded_broker
from zoomtune.coordinator.rounds import LoopSettings, RoundLoop, StudyOutcome


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised where the program is, as Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class Interruption:
    """How `coordinator start` stops on SIGINT (Ctrl-C), SIGTERM (`kill`, `timeout`, systemd,
    `docker stop`) and SIGHUP (the terminal went away): `Interrupted` is raised where the
    program is, so every `finally` runs (the local workers and the private Redis of the
    embedded default are stopped) and the study resumes from the same command.

    Python drops an exception raised inside a `__del__` method or a weakref callback (it
    prints it and goes on), and a signal can land there (numpy's, while the sampler runs): the
    study would then run to its end. So the signal is also remembered, `check` (which the
    round loop calls at every tick) raises it again, and the dropped one is not printed.

    A context manager: the handlers and the hook are those before it once the block ends."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: str | None = None
        self._handlers: dict[signal.Signals, Any] = {}
        self._unraisable_hook = sys.unraisablehook

    def __enter__(self) -> Interruption:
        self._handlers = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        self._unraisable_hook = sys.unraisablehook
        for sig in self.SIGNALS:
            signal.signal(sig, self._interrupt)
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._unraisable_hook

    def _unraisable(self, hook_args: sys.UnraisableHookArgs) -> None:
        if not isinstance(hook_args.exc_value, Interrupted):  # raised again by `check`
            self._unraisable_hook(hook_args)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        raise Interrupted(self.received)

    def check(self) -> None:
        """Raise `Interrupted` again if a signal came (its first raise may have been dropped)."""
        if self.received is not None:
            raise Interrupted(self.received)


def persistence_warnings(client: redis.Redis) -> list[str]:
    """Why this Redis could lose the study on a restart or under memory pressure."""
    try:
        config = client.config_get("appendonly") | client.config_get("maxmemory-policy")
    except redis.ResponseError:
        return [
            "cannot check Redis persistence (CONFIG is not allowed); make sure AOF is on "
            "(appendonly yes) and maxmemory-policy is noeviction"
        ]
    warnings = []
    if config.get("appendonly") != "yes":
        warnings.append(
            "Redis runs without AOF persistence (appendonly no): a restart loses the study's "
            "records and queued trials; set appendonly yes"
        )
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {config['maxmemory-policy']!r}: under memory pressure it "
            "may evict the study's records; set it to noeviction"
        )
    return warnings


def objective_options(spec: StudySpec, study_file: Path) -> list[str]:
    """`--objective` values that register the study's own entry point on local workers."""
    entrypoint = spec.objective.entrypoint
    if entrypoint is None:
        return []
    module, _, function = entrypoint.rpartition(":")
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_absolute():
            path = (study_file.parent / path).resolve()
        if not path.is_file():
            raise ConfigError(f"{study_file}: [objective] entrypoint: no file {path}")
        module = str(path)
    return [f"{spec.objective.name}={module}:{function}"]


def check_embedded_objective(spec: StudySpec, study_file: Path) -> None:
    """Refuse a study that the embedded default's workers cannot run: its objective is neither
    built in, registered by an installed package (an entry point), nor given an entrypoint (the
    local workers register exactly those), or it gives a
    built-in options that it does not read (a misspelt one would be ignored, or fail every
    trial) or bad values (`scale = -1`, which would fail every trial). On a cluster the workers
    may register objectives of their own under those names."""
    objective = spec.objective
    if objective.entrypoint is not None or objective.name in installed_objectives():
        return  # the local workers register it, over a built-in of that name
    if objective.name in BUILTIN_OBJECTIVES:
        problems = builtin_option_problems(objective.name, objective.options)
        if problems:
            raise ConfigError([f"{study_file}: [objective] options: {p}" for p in problems])
        return
    raise ConfigError(
        f"{study_file}: [objective] name {objective.name!r} is not a built-in objective and the "
        "study gives no entrypoint, so the local workers of the embedded default cannot run it; "
        'add entrypoint = "path/to/file.py:function" to [objective], use a built-in '
        f"({', '.join(sorted(BUILTIN_OBJECTIVES))}), or run the study on a cluster whose "
        "workers register it (--broker URL or ZOOMTUNE_BROKER_URL)"
    )


def study_warnings(spec: StudySpec, study_file: Path, embedded: bool) -> list[str]:
    """What `plan` and `start` warn about (accepted, but probably not meant), a line each."""
    large = spec.budget_warning(str(study_file))
    return ([large] if large is not None else []) + objective_warnings(spec, study_file, embedded)


def objective_warnings(spec: StudySpec, study_file: Path, embedded: bool) -> list[str]:
    """What `plan` and `start` warn about the study's objective (one line each).

    On the embedded default the workers run the built-ins (bad options are refused by
    `check_embedded_objective`), so early stopping that can never stop a trial of one is known
    up front: `min_step` at or past the last step it reports. On a cluster the workers may
    register an objective of their own under a built-in's name, so options the built-in would
    refuse are only a warning there (the built-in fails every trial on them)."""
    objective = spec.objective
    if objective.entrypoint is not None:
        return []
    if not embedded:
        return [
            f"{study_file}: [objective] options: if the workers run the built-in, every trial "
            f"fails: {problem}"
            for problem in builtin_option_problems(objective.name, objective.options)
        ]
    last, rule = builtin_last_step(objective), spec.early_stopping
    # (a built-in that reports no steps, last 0, gets a line in `plan`, not a warning)
    if not last or not rule.enabled or max(1, rule.min_step) < last:
        return []
    if last == 1:
        return [
            f"{study_file}: [early_stopping] the built-in objective {objective.name!r} reports "
            "one step (a single epoch), and a rung must come before the last: no trial will be "
            'stopped early; give it more epochs, or set rule = "none"'
        ]
    return [
        f"{study_file}: [early_stopping] min_step {rule.min_step} is at or past the last step "
        f"the built-in objective {objective.name!r} reports (its last epoch, {last}), "
        f"and a rung must come before it: no trial will be stopped early; lower min_step below "
        f'{last}, give it more epochs, or set rule = "none"'
    ]


def run_study(
    spec: StudySpec,
    settings: Settings,
    run_dir: Path,
    progress: StudyProgress,
    connect_timeout: float,
    loop_settings: LoopSettings | None = None,
    watch: Callable[[], None] | None = None,
    stop_workers: Callable[[], None] | None = None,
) -> StudyOutcome:
    """Run the study against the broker in `settings`; the cluster and embedded path alike.
    `watch` runs at every tick of the round loop and stops the study by raising.
    `stop_workers` (the embedded default's) runs on the way out before the run folder is
    written, so that the results of trials they finish as they stop are in it."""
    url = settings.broker_url
    if url is None:
        raise ConfigError("no broker URL")
    wait_for_broker(url, connect_timeout)
    client = connect(url)
    for warning in persistence_warnings(client):
        progress.note(f"warning: {warning}")
    store = StudyStore(client, settings.prefix, spec.name)

    def save() -> None:
        write_run_dir(StudyRecord.from_store(store), run_dir)

    app = make_celery(settings)
    dispatcher = CeleryDispatcher(app, store, settings.prefix)
    loop = RoundLoop(
        spec,
        store,
        dispatcher,
        progress,
        loop_settings,
        on_round=save,
        watch=watch,
        on_start=save,  # `status` and `report` read the run folder from round 1 on
    )
    refused = False
    try:
        return loop.run()
    except StudyLocked:
        refused = True  # the coordinator that holds the study writes its run folder
        raise
    finally:
        try:
            if stop_workers is not None:
                stop_workers()
        finally:
            try:
                if not refused and store.exists():
                    save()
            except ZoomtuneError as exc:
                progress.note(f"could not write {run_dir}: {exc}")
            dispatcher.close()
            app.close()
            client.close()


def delete_command(study: str, run_dir: Path, settings: Settings) -> str:
    """The command that removes `study` where this `start` runs it (a cluster, or a run folder)."""
    if settings.broker_url is None:
        return f"coordinator delete {study} --run-dir {run_dir} --yes"
    return f"coordinator delete {study} --yes"


def run_embedded(
    spec: StudySpec,
    study_file: Path,
    settings: Settings,
    run_dir: Path,
    workers: int | None,
    progress: StudyProgress,
    connect_timeout: float,
    loop: LoopSettings,
    worker_flags: Sequence[str] = (),
    worker_env: Mapping[str, str] | None = None,
    watch: Callable[[], None] | None = None,
) -> StudyOutcome:
    """Run the study on a private redis-server with local workers (`worker start` processes,
    given `worker_flags` and `worker_env` on top of this process's environment); `watch` as
    for `run_study`."""
    objectives = objective_options(spec, study_file)
    with embedded_broker(run_dir / "redis") as server:
        progress.note(f"embedded Redis on 127.0.0.1:{server.port} (data in {run_dir / 'redis'})")
        gpus, why_none = local_gpus() if spec.resources.queue == "gpu" else ([], "")
        if gpus:
            progress.note(f"local GPU workers, one per GPU: {'; '.join(gpus)}")
        elif why_none:
            progress.note(f"{why_none}; the gpu study's trials run on local CPU processes")
        local = LocalWorkers(
            broker_url=server.url,
            concurrency=workers or os.cpu_count() or 1,
            queues=(spec.resources.queue,),
            objectives=objectives,
            flags=worker_flags,
            extra_env=dict(worker_env or {}),
            gpus="all" if gpus else None,
            log_path=run_dir / "workers.log",
            folder_lock=server.folder_lock,
        ).start()

        def check() -> None:
            if watch is not None:
                watch()
            local.check()  # workers that exit (a bad entrypoint) stop the study at once

        try:
            return run_study(
                spec,
                settings.with_broker(server.url),
                run_dir,
                progress,
                connect_timeout,
                loop,
                watch=check,
                stop_workers=local.stop,
            )
        finally:
            local.stop()


def print_outcome(spec: StudySpec, outcome: StudyOutcome, run_dir: Path, delete: str) -> None:
    console = output_console()
    if outcome.state == StudyState.CANCELLED:
        console.print(f"[bold yellow]stopped:[/] {escape(outcome.message)}", highlight=False)
    elif outcome.state != StudyState.COMPLETE:
        console.print(f"[bold red]study {spec.name!r} failed:[/] {escape(outcome.message)}")
    if outcome.best is None:
        if outcome.state == StudyState.COMPLETE:
            console.print(f"study {spec.name!r} finished without a completed trial")
    else:
        params, score = outcome.best
        so_far = "" if outcome.state == StudyState.COMPLETE else " so far"
        console.print(f"[bold]best score{so_far}[/] {score:.6g} ({spec.direction})")
        for name, value in params.items():
            console.print(f"  {name} = {value!r}")
    console.print(f"results in {run_dir}/ (trials.csv, study.json)", soft_wrap=True)
    console.print(f"plots and importance: coordinator report --run-dir {run_dir}", soft_wrap=True)
    if outcome.state in (StudyState.FAILED, StudyState.CANCELLED):
        console.print(
            f"the study stays {outcome.state}; to run it afresh: {delete}, then start it again "
            "(or give the study a new name)",
            soft_wrap=True,
            highlight=False,
        )
