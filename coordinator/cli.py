"""`coordinator`: start a study, and look at the studies in a broker.

    coordinator plan STUDY_FILE [--workers N]
    coordinator start STUDY_FILE [--broker URL] [--workers N] [--run-dir DIR]
    coordinator status [STUDY] [--broker URL | --run-dir DIR]
    coordinator report [STUDY] [-o DIR] [--broker URL | --run-dir DIR]
    coordinator export [STUDY] [--format csv|json] [-o FILE] [--broker URL | --run-dir DIR]
    coordinator list [--broker URL]
    coordinator cancel STUDY [--reason TEXT] [--broker URL | --run-dir DIR]
    coordinator delete STUDY [--yes] [--broker URL | --run-dir DIR]
    coordinator flower [--port 5555] [--address 127.0.0.1] [-- FLOWER OPTIONS]

Without a broker URL (`--broker` or ZOOMTUNE_BROKER_URL), `start` runs the embedded default: a
private redis-server and local workers, the same code path as a cluster. The other commands
then read the study from its run folder: `--run-dir DIR`, else `runs/STUDY`, else the only
folder under `runs/`.

Exit codes: 0 done, 1 failed (or an error), 2 bad input, 3 the study was cancelled,
130 interrupted by SIGINT, SIGTERM or SIGHUP (run `start` again to resume).

`start` has hidden options for tests that need a faster round loop (see `LoopSettings`):
`--tick SECONDS` (housekeeping period, default 1), `--lock-ttl SECONDS` (how long the study lock
outlives a stopped coordinator, default 15) and `--outage-limit SECONDS` (how long a Redis outage
is ridden out, default 300).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click
import redis
from rich.console import Console
from rich.markup import escape

from common.broker import wait_for_broker
from common.celery_app import check_visibility_timeout, make_celery
from common.errors import (
    ConfigError,
    StudyExists,
    StudyLocked,
    StudyNotFound,
    ZoomtuneError,
)
from common.objectives import BUILTIN_OBJECTIVES
from common.redact import install_redacting_excepthook
from common.redis_client import connect
from common.settings import Settings, redact_url
from common.store import StudyStore
from common.store_reads import list_studies
from common.store_records import owner_id
from common.study import StudySpec
from common.trial import StudyState
from coordinator.embedded import (
    LocalWorkers,
    embedded_broker,
    holds_study_data,
    local_gpus,
    run_folder_broker,
)
from coordinator.export import StudyRecord, study_json, trials_csv, write_run_dir
from coordinator.plan import StudyPlan
from coordinator.progress import StudyProgress, make_progress, notes_from_logging
from coordinator.report import Findings, write_report
from coordinator.rounds import CeleryDispatcher, LoopSettings, RoundLoop, StudyOutcome
from coordinator.views import findings_view, plan_view, status_view, studies_table

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES = {StudyState.COMPLETE: 0, StudyState.FAILED: 1, StudyState.CANCELLED: 3}
"""`coordinator start`'s exit code for each way a study ends."""

EXIT_INTERRUPTED = 130
"""`coordinator start` stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP: run it again to resume."""

RUNS = Path("runs")
"""Where `coordinator start` puts run folders by default: runs/<study name>."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that it stops as Ctrl-C stops it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def interrupt_on_termination() -> None:
    """Make SIGTERM (`kill`, `timeout`, systemd, `docker stop`) and SIGHUP (the terminal went
    away) stop `coordinator start` the way SIGINT does: every `finally` runs, so the local
    workers and the private Redis of the embedded default are stopped, and the study resumes."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def fail(exc: ZoomtuneError) -> NoReturn:
    """Print a zoomtune error for people and exit: 2 for bad input, 1 for everything else."""
    console = Console(stderr=True)
    # Messages quote the file's [section] names: escape them, or rich takes them for markup.
    text = escape(redact_url(str(exc)))
    console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
    sys.exit(2 if isinstance(exc, ConfigError | StudyExists) else 1)


def broker_option(function: F) -> F:
    return click.option(
        "--broker",
        envvar="ZOOMTUNE_BROKER_URL",
        metavar="URL",
        help="redis:// or rediss:// URL of the broker (default: $ZOOMTUNE_BROKER_URL).",
    )(function)


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
    built in nor given an entrypoint (the local workers register exactly those)."""
    objective = spec.objective
    if objective.entrypoint is not None or objective.name in BUILTIN_OBJECTIVES:
        return
    raise ConfigError(
        f"{study_file}: [objective] name {objective.name!r} is not a built-in objective and the "
        "study gives no entrypoint, so the local workers of the embedded default cannot run it; "
        'add entrypoint = "path/to/file.py:function" to [objective], use a built-in '
        f"({', '.join(sorted(BUILTIN_OBJECTIVES))}), or run the study on a cluster whose "
        "workers register it (--broker URL or ZOOMTUNE_BROKER_URL)"
    )


def run_study(
    spec: StudySpec,
    settings: Settings,
    run_dir: Path,
    progress: StudyProgress,
    connect_timeout: float,
    loop_settings: LoopSettings | None = None,
    watch: Callable[[], None] | None = None,
) -> StudyOutcome:
    """Run the study against the broker in `settings`; the cluster and embedded path alike.
    `watch` runs at every tick of the round loop and stops the study by raising."""
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
    loop = RoundLoop(spec, store, dispatcher, progress, loop_settings, on_round=save, watch=watch)
    refused = False
    try:
        return loop.run()
    except StudyLocked:
        refused = True  # the coordinator that holds the study writes its run folder
        raise
    finally:
        try:
            if not refused and store.exists():
                save()
        except ZoomtuneError as exc:
            progress.note(f"could not write {run_dir}: {exc}")
        dispatcher.close()
        app.close()
        client.close()


@click.group()
def main() -> None:
    """zoomtune coordinator: coarse-to-fine random search over Celery and Redis."""
    install_redacting_excepthook()


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@broker_option
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=None,
    help="Embedded default only: local worker processes (default: the cores).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where trials.csv and study.json go (default: runs/<study name>).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Start even if the broker's visibility timeout is shorter than the trial "
    "time limit (duplicates are then dropped, but waste workers).",
)
@click.option(
    "--connect-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to keep trying to reach the broker.",
)
@click.option("--tick", type=click.FloatRange(min=0.01), default=1.0, hidden=True)
@click.option("--lock-ttl", type=click.FloatRange(min=0.5), default=15.0, hidden=True)
@click.option("--outage-limit", type=click.FloatRange(min=0.0), default=300.0, hidden=True)
def start(
    study_file: Path,
    broker: str | None,
    workers: int | None,
    run_dir: Path | None,
    force: bool,
    connect_timeout: float,
    tick: float,
    lock_ttl: float,
    outage_limit: float,
) -> None:
    """Run the study in STUDY_FILE to the end (resuming it if it was interrupted).

    SIGINT, SIGTERM and SIGHUP interrupt it (exit code 130): the embedded default's workers
    finish their running trials (for at most 30 s) and stop, its Redis stops, and the same
    command resumes the study."""
    interrupt_on_termination()
    try:
        spec = StudySpec.from_file(study_file)
        large = spec.budget_warning(str(study_file))
        if large is not None:
            click.echo(f"warning: {large}", err=True)
        settings = Settings.from_env().with_broker(broker)
        if not force:
            check_visibility_timeout(settings, spec.resources.timeout, str(study_file))
        if settings.broker_url is None:
            check_embedded_objective(spec, study_file)
        folder = run_dir or RUNS / spec.name
        delete = _delete_command(spec.name, folder, settings)
        loop = LoopSettings(tick=tick, lock_ttl=lock_ttl, outage_limit=outage_limit)
        progress = make_progress(maximize=spec.maximize)
        try:
            # Warnings logged by the round loop become notes: timestamped like every other
            # line in a log, printed above the live display on a terminal.
            with notes_from_logging(progress):
                if settings.broker_url is None:
                    outcome = _run_embedded(
                        spec,
                        study_file,
                        settings,
                        folder,
                        workers,
                        progress,
                        connect_timeout,
                        loop,
                    )
                else:
                    progress.note(f"broker {redact_url(settings.broker_url)}")
                    outcome = run_study(spec, settings, folder, progress, connect_timeout, loop)
        except StudyExists as exc:  # a changed study file: bad input, with the way out
            raise StudyExists(f"{exc}: {delete}") from exc
        finally:
            progress.close()
    except ZoomtuneError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        by = f" by {exc.signal_name}" if isinstance(exc, Interrupted) else ""
        with suppress(OSError):  # after SIGHUP the terminal may be gone
            click.echo(f"interrupted{by}; run the same command again to resume the study", err=True)
        sys.exit(EXIT_INTERRUPTED)
    _print_outcome(spec, outcome, folder, delete)
    sys.exit(EXIT_CODES.get(outcome.state, 1))


def _delete_command(study: str, run_dir: Path, settings: Settings) -> str:
    """The command that removes `study` where this `start` runs it (a cluster, or a run folder)."""
    if settings.broker_url is None:
        return f"coordinator delete {study} --run-dir {run_dir} --yes"
    return f"coordinator delete {study} --yes"


def _run_embedded(
    spec: StudySpec,
    study_file: Path,
    settings: Settings,
    run_dir: Path,
    workers: int | None,
    progress: StudyProgress,
    connect_timeout: float,
    loop: LoopSettings,
) -> StudyOutcome:
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
            gpus="all" if gpus else None,
            log_path=run_dir / "workers.log",
            folder_lock=server.folder_lock,
        ).start()
        try:
            return run_study(
                spec,
                settings.with_broker(server.url),
                run_dir,
                progress,
                connect_timeout,
                loop,
                watch=local.check,  # workers that exit (a bad entrypoint) stop the study at once
            )
        finally:
            local.stop()


def _print_outcome(spec: StudySpec, outcome: StudyOutcome, run_dir: Path, delete: str) -> None:
    console = Console()
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


def _run_folders() -> list[Path]:
    """The run folders under runs/: those with a study.json or the embedded default's Redis."""
    if not RUNS.is_dir():
        return []
    return sorted(
        d for d in RUNS.iterdir() if (d / "study.json").is_file() or (d / "redis").is_dir()
    )


def _find_run_dir(
    command: str, study: str | None, broker: str | None, run_dir: Path | None
) -> Path | None:
    """The run folder a command works on, or None for the broker: `--run-dir`; else the broker,
    if one is given; else runs/STUDY; else the only run folder under runs/."""
    if run_dir is not None:
        return run_dir
    if Settings.from_env().with_broker(broker).broker_url is not None:
        return None
    no_broker = "no broker (--broker URL or ZOOMTUNE_BROKER_URL)"
    if study is not None:
        folder = RUNS / study
        if folder.is_dir():
            return folder
        raise ConfigError(
            f"{no_broker} and no run folder {folder}/: give the study's run folder "
            "(--run-dir DIR) or the broker that holds it"
        )
    folders = _run_folders()
    if len(folders) == 1:
        return folders[0]
    if not folders:
        raise ConfigError(f"{no_broker} and no run folder under {RUNS}/: give --run-dir DIR")
    return _pick_one(command, folders)


def _pick_one(command: str, folders: list[Path]) -> NoReturn:
    raise ConfigError(
        [
            f"{len(folders)} run folders under {RUNS}/; pick one:",
            *(f"  coordinator {command} --run-dir {folder}" for folder in folders),
        ]
    )


@contextmanager
def _url_store(url: str, study: str | None, where: str) -> Iterator[StudyStore]:
    """The store of `study` (None: the only study there) on the broker at `url`."""
    prefix = Settings.from_env().prefix
    client = connect(url)
    try:
        if study is None:
            names = list_studies(client, prefix)
            if not names:
                raise StudyNotFound(f"no study in {where}")
            if len(names) > 1:
                raise ConfigError(f"name one STUDY; {where} has {names}")
            study = names[0]
        store = StudyStore(client, prefix, study)
        if not store.exists():
            raise StudyNotFound(f"no study named {study!r} in {where}")
        yield store
    finally:
        client.close()


@contextmanager
def _study_store(
    command: str, study: str | None, broker: str | None, run_dir: Path | None
) -> Iterator[tuple[StudyStore, Path | None]]:
    """The study's store and its run folder (None on a broker): a run folder's is the Redis of
    the coordinator running it, else a private redis-server started on the folder meanwhile."""
    folder = _find_run_dir(command, study, broker, run_dir)
    if folder is None:
        url = Settings.from_env().with_broker(broker).broker_url or ""
        with _url_store(url, study, "this broker") as store:
            yield store, None
        return
    redis_dir = folder / "redis"
    if not redis_dir.is_dir():
        raise ConfigError(
            f"{folder} has no Redis of its own (a coordinator on a broker wrote it): run "
            f"`coordinator {command}` on that broker (--broker URL or ZOOMTUNE_BROKER_URL)"
        )
    with run_folder_broker(redis_dir) as url, _url_store(url, study, str(folder)) as store:
        yield store, folder


def _record(
    command: str, study: str | None, broker: str | None, run_dir: Path | None
) -> tuple[StudyRecord, Path | None]:
    """The study's record and its run folder (None on a broker). A run folder is read from its
    study.json, unless a coordinator is running the study (then from its Redis: the study.json
    lags up to a round behind) or there is no study.json yet."""
    folder = _find_run_dir(command, study, broker, run_dir)
    if folder is not None:
        redis_dir = folder / "redis"
        # While a coordinator runs it, its Redis password is its own: read study.json (which
        # lags at most a round behind); a folder without one is read from its Redis.
        live = holds_study_data(redis_dir) and not (folder / "study.json").exists()
        if not live:
            record = StudyRecord.from_json_file(folder / "study.json")
            if study is not None and record.spec.name != study:
                raise ConfigError(f"{folder} holds study {record.spec.name!r}, not {study!r}")
            return record, folder
    with _study_store(command, study, broker, folder) as (store, _):
        return StudyRecord.from_store(store), folder


def run_dir_option(function: F) -> F:
    return click.option(
        "--run-dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        default=None,
        help="The study's run folder, as `coordinator start` wrote it (default without a "
        "broker: runs/STUDY, or the only folder under runs/).",
    )(function)


@main.command()
@click.argument("study", required=False)
@broker_option
@run_dir_option
def status(study: str | None, broker: str | None, run_dir: Path | None) -> None:
    """Rounds, the search box by round, running trials, the best trial and which
    hyperparameters matter, for STUDY (or the only study in the broker)."""
    try:
        record, _ = _record("status", study, broker, run_dir)
    except ZoomtuneError as exc:
        fail(exc)
    Console().print(status_view(record, Findings.of(record)))


@main.command()
@click.argument("study", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the plots and report.html (default: the run folder's report/).",
)
@broker_option
@run_dir_option
def report(
    study: str | None, output: Path | None, broker: str | None, run_dir: Path | None
) -> None:
    """Plots (history, the funnel of every parameter, importance) and report.html for STUDY."""
    try:
        record, folder = _record("report", study, broker, run_dir)
        directory = output or (folder or RUNS / record.spec.name) / "report"
        written = write_report(record, directory)
    except ZoomtuneError as exc:
        fail(exc)
    console = Console()
    console.print(findings_view(written.findings))
    console.print(
        f"wrote {', '.join(p.name for p in written.files)} in {directory}/", soft_wrap=True
    )
    console.print(f"open {written.html}", soft_wrap=True)


@main.command()
@click.argument("study", required=False)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout.",
)
@broker_option
@run_dir_option
def export(
    study: str | None, fmt: str, output: Path | None, broker: str | None, run_dir: Path | None
) -> None:
    """Write STUDY's trials as CSV or its whole record as JSON (the run folder's files).

    STUDY is read from the broker (it may be left out when the broker holds one study), or
    from a run folder with --run-dir (after an embedded run, whose Redis stopped with it).
    """
    try:
        record, _ = _record("export", study, broker, run_dir)
    except ZoomtuneError as exc:
        fail(exc)
    text = trials_csv(record) if fmt == "csv" else study_json(record)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@main.command(name="list")
@broker_option
def list_command(broker: str | None) -> None:
    """The studies in the broker, with their state."""
    try:
        settings = Settings.from_env().with_broker(broker)
        if settings.broker_url is None:
            raise ConfigError("no broker: pass --broker URL or set ZOOMTUNE_BROKER_URL")
        client = connect(settings.broker_url)
        try:
            rows = [
                {**StudyStore(client, settings.prefix, name).meta(), "name": name}
                for name in list_studies(client, settings.prefix)
            ]
        finally:
            client.close()
    except ZoomtuneError as exc:
        fail(exc)
    Console().print(studies_table(rows))


@main.command()
@click.argument("study")
@click.option("--reason", default=None, help="Why; stored with the study and its trials.")
@broker_option
@run_dir_option
def cancel(study: str, reason: str | None, broker: str | None, run_dir: Path | None) -> None:
    """Stop STUDY for good: no more rounds, its queued trials never run.

    Running trials may finish and their results are recorded (a running trial whose worker is
    lost fails instead of going back to the queue). The coordinator running the study stops
    within a second with exit code 3. A cancelled study does not start again.
    """
    text = f"cancelled by `coordinator cancel` on {owner_id()}"
    if reason:
        text += f": {reason}"
    try:
        with _study_store("cancel", study, broker, run_dir) as (store, _):
            done = store.cancel(text)
    except ZoomtuneError as exc:
        fail(exc)
    verb = "was already cancelled" if done.already else "cancelled"
    click.echo(
        f"study {study!r} {verb}: {done.trials_cancelled} queued trials will not run; "
        f"{done.trials_running} running trials may finish (their results are recorded)"
    )


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Worker processes to project the time for (default: the cores, like `start`).",
)
@click.option(
    "--broker",
    envvar="ZOOMTUNE_BROKER_URL",
    metavar="URL",
    help="The broker `start` will use (not contacted): without one, the study is checked for "
    "the embedded default, whose workers run only built-in objectives and the entrypoint.",
)
def plan(study_file: Path, workers: int | None, broker: str | None) -> None:
    """Validate STUDY_FILE and show what `start` would run; writes nothing, connects nowhere."""
    try:
        spec = StudySpec.from_file(study_file)
        objective_options(spec, study_file)  # the entry point file must exist
        settings = Settings.from_env().with_broker(broker)
        if settings.broker_url is None:
            check_embedded_objective(spec, study_file)
        study_plan = StudyPlan.from_spec(spec)
    except ZoomtuneError as exc:
        fail(exc)
    console = Console()
    console.print(plan_view(study_plan, workers or os.cpu_count() or 1))
    large = spec.budget_warning(str(study_file))
    if large is not None:
        console.print(f"[yellow]warning:[/] {escape(large)}", highlight=False)
    try:
        check_visibility_timeout(settings, spec.resources.timeout)
    except ConfigError as exc:
        console.print(f"[yellow]warning: `start` will refuse this study:[/] {exc}", highlight=False)


@main.command()
@click.argument("study")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@broker_option
@run_dir_option
def delete(study: str, yes: bool, broker: str | None, run_dir: Path | None) -> None:
    """Remove STUDY and all its trials from the broker, or from its run folder (its Redis data,
    trials.csv and study.json), so that `coordinator start` begins it afresh."""
    try:
        with _study_store("delete", study, broker, run_dir) as (store, folder):
            if not yes:
                click.confirm(f"delete study {study!r} and all its trials?", abort=True)
            store.acquire(ttl=5)  # refuses while a coordinator runs the study
            removed = store.delete()
    except ZoomtuneError as exc:
        fail(exc)
    files = ""
    if folder is not None:
        for name in ("trials.csv", "study.json"):
            (folder / name).unlink(missing_ok=True)
        files = f" and its trials.csv and study.json from {folder}/"
    click.echo(f"deleted study {study!r} ({removed} keys){files}")


@main.command(context_settings={"ignore_unknown_options": True})
@broker_option
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 in a container; put it behind authentication).",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(broker: str | None, port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Run the Flower dashboard on the broker, configured exactly as the workers are.

    Flower must share the workers' key prefix, TLS and serializer settings to see their events,
    so it runs with zoomtune's own Celery configuration (needs `pip install zoomtune[flower]`).
    Further Flower options follow, e.g. `--basic-auth=USER:PASSWORD`.
    """
    try:
        settings = Settings.from_env().with_broker(broker)
        if settings.broker_url is None:
            raise ConfigError("no broker: pass --broker URL or set ZOOMTUNE_BROKER_URL")
        try:
            import flower as _flower  # noqa: F401  (only to give a clear error)
        except ImportError as exc:
            raise ConfigError("Flower is not installed: pip install 'zoomtune[flower]'") from exc
        app = make_celery(settings)
    except ZoomtuneError as exc:
        fail(exc)
    click.echo(f"Flower on http://{address}:{port} for broker {redact_url(settings.broker_url)}")
    code = app.start(["flower", f"--port={port}", f"--address={address}", *flower_args])
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
