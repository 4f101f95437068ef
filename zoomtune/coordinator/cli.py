# Over 400 lines: ten commands, each only options in and a view out; the work is elsewhere.
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
    coordinator dashboard [STUDY] [--port 8080] [--address 127.0.0.1] [--broker URL | --run-dir DIR]

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
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from zoomtune.common.celery_app import check_visibility_timeout, make_celery
from zoomtune.common.errors import ConfigError, StudyExists
from zoomtune.common.exits import STUDY_EXIT_CODES, ExitCode, OneLineErrors, exits_on_error
from zoomtune.common.redact import install_redacting_excepthook
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings, redact_url
from zoomtune.common.store import StudyStore
from zoomtune.common.store_reads import list_studies
from zoomtune.common.store_records import owner_id
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import StudyState
from zoomtune.coordinator.console import output_console
from zoomtune.coordinator.export import study_json, trials_csv
from zoomtune.coordinator.launch import (
    Interrupted,
    Interruption,
    check_embedded_objective,
    delete_command,
    objective_options,
    print_outcome,
    run_embedded,
    run_study,
    study_warnings,
)
from zoomtune.coordinator.plan import StudyPlan
from zoomtune.coordinator.progress import make_progress, notes_from_logging
from zoomtune.coordinator.redis_server import in_use
from zoomtune.coordinator.report import Findings, write_report
from zoomtune.coordinator.rounds import LoopSettings, StudyOutcome
from zoomtune.coordinator.run_folders import RUNS, study_record, study_store
from zoomtune.coordinator.views import findings_view, plan_view, status_view, studies_table

F = TypeVar("F", bound=Callable[..., Any])


def broker_option(function: F) -> F:
    return click.option(
        "--broker",
        envvar="ZOOMTUNE_BROKER_URL",
        metavar="URL",
        help="redis:// or rediss:// URL of the broker (default: $ZOOMTUNE_BROKER_URL).",
    )(function)


@click.group(cls=OneLineErrors)
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
@exits_on_error
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
    with Interruption() as interruption:
        try:
            spec = StudySpec.from_file(study_file)
            settings = Settings.from_env().with_broker(broker)
            embedded = settings.broker_url is None
            for warning in study_warnings(spec, study_file, embedded):
                click.echo(f"warning: {warning}", err=True)
            if not force:
                check_visibility_timeout(settings, spec.resources.timeout, str(study_file))
            if embedded:
                check_embedded_objective(spec, study_file)
            folder = run_dir or RUNS / spec.name
            delete = delete_command(spec.name, folder, settings)
            loop = LoopSettings(tick=tick, lock_ttl=lock_ttl, outage_limit=outage_limit)
            try:
                outcome = _run(
                    spec,
                    study_file,
                    settings,
                    folder,
                    workers,
                    connect_timeout,
                    loop,
                    interruption.check,
                )
            except StudyExists as exc:  # a changed study file: bad input, with the way out
                raise StudyExists(f"{exc}: {delete}") from exc
        except KeyboardInterrupt as exc:
            by = f" by {exc.signal_name}" if isinstance(exc, Interrupted) else ""
            with suppress(OSError):  # after SIGHUP the terminal may be gone
                click.echo(
                    f"interrupted{by}; run the same command again to resume the study", err=True
                )
            sys.exit(ExitCode.INTERRUPTED)
    print_outcome(spec, outcome, folder, delete)
    sys.exit(STUDY_EXIT_CODES.get(outcome.state, ExitCode.FAILED))


def _run(
    spec: StudySpec,
    study_file: Path,
    settings: Settings,
    folder: Path,
    workers: int | None,
    connect_timeout: float,
    loop: LoopSettings,
    watch: Callable[[], None],
) -> StudyOutcome:
    """`start`'s study, on the broker in `settings` or on the embedded default, with progress;
    `watch` runs at every tick of the round loop (it raises to stop the study)."""
    progress = make_progress(maximize=spec.maximize)
    try:
        # Warnings logged by the round loop become notes: timestamped like every other line
        # in a log, printed above the live display on a terminal.
        with notes_from_logging(progress):
            if settings.broker_url is None:
                return run_embedded(
                    spec,
                    study_file,
                    settings,
                    folder,
                    workers,
                    progress,
                    connect_timeout,
                    loop,
                    watch=watch,
                )
            progress.note(f"broker {redact_url(settings.broker_url)}")
            return run_study(spec, settings, folder, progress, connect_timeout, loop, watch=watch)
    finally:
        progress.close()


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
@exits_on_error
def status(study: str | None, broker: str | None, run_dir: Path | None) -> None:
    """Rounds, the search box by round, running trials, the best trial and which
    hyperparameters matter, for STUDY (or the only study in the broker)."""
    record, folder = study_record("status", study, broker, run_dir)
    # A run folder of the embedded default (a cluster study's has no redis/) that no
    # `coordinator start` holds.
    redis_dir = folder / "redis" if folder is not None else None
    unheld = redis_dir is not None and redis_dir.is_dir() and not in_use(redis_dir)
    if unheld and record.state == StudyState.RUNNING:
        message = "interrupted: no `coordinator start` runs it now; the same command resumes it"
        record = replace(record, message=message)
    output_console().print(status_view(record, Findings.of(record)))


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
@exits_on_error
def report(
    study: str | None, output: Path | None, broker: str | None, run_dir: Path | None
) -> None:
    """Plots (history, the funnel of every parameter, importance) and report.html for STUDY."""
    record, folder = study_record("report", study, broker, run_dir)
    directory = output or (folder or RUNS / record.spec.name) / "report"
    written = write_report(record, directory)
    console = output_console()
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
@exits_on_error
def export(
    study: str | None, fmt: str, output: Path | None, broker: str | None, run_dir: Path | None
) -> None:
    """Write STUDY's trials as CSV or its whole record as JSON (the run folder's files).

    STUDY is read from the broker (it may be left out when the broker holds one study), or
    from a run folder with --run-dir (after an embedded run, whose Redis stopped with it).
    """
    record, _ = study_record("export", study, broker, run_dir)
    text = trials_csv(record) if fmt == "csv" else study_json(record)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@main.command(name="list")
@broker_option
@exits_on_error
def list_command(broker: str | None) -> None:
    """The studies in the broker, with their state."""
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
    output_console().print(studies_table(rows))


@main.command()
@click.argument("study")
@click.option("--reason", default=None, help="Why; stored with the study and its trials.")
@broker_option
@run_dir_option
@exits_on_error
def cancel(study: str, reason: str | None, broker: str | None, run_dir: Path | None) -> None:
    """Stop STUDY for good: no more rounds, its queued trials never run.

    Running trials may finish and their results are recorded (a running trial whose worker is
    lost fails instead of going back to the queue). The coordinator running the study stops
    within a second with exit code 3. A cancelled study does not start again.
    """
    text = f"cancelled by `coordinator cancel` on {owner_id()}"
    if reason:
        text += f": {reason}"
    with study_store("cancel", study, broker, run_dir) as (store, _):
        done = store.cancel(text)
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
@exits_on_error
def plan(study_file: Path, workers: int | None, broker: str | None) -> None:
    """Validate STUDY_FILE and show what `start` would run; writes nothing, connects nowhere."""
    spec = StudySpec.from_file(study_file)
    objective_options(spec, study_file)  # the entry point file must exist
    settings = Settings.from_env().with_broker(broker)
    embedded = settings.broker_url is None
    if embedded:
        check_embedded_objective(spec, study_file)
    study_plan = StudyPlan.from_spec(spec, embedded=embedded)
    console = output_console()
    console.print(plan_view(study_plan, workers or os.cpu_count() or 1))
    for warning in study_warnings(spec, study_file, embedded):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    try:
        check_visibility_timeout(settings, spec.resources.timeout)
    except ConfigError as exc:
        console.print(f"[yellow]warning: `start` will refuse this study:[/] {exc}", highlight=False)


@main.command()
@click.argument("study")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@broker_option
@run_dir_option
@exits_on_error
def delete(study: str, yes: bool, broker: str | None, run_dir: Path | None) -> None:
    """Remove STUDY and all its trials from the broker, or from its run folder (its Redis data,
    trials.csv and study.json), so that `coordinator start` begins it afresh."""
    with study_store("delete", study, broker, run_dir) as (store, folder):
        if not yes:
            click.confirm(f"delete study {study!r} and all its trials?", abort=True)
        store.acquire(ttl=5)  # refuses while a coordinator runs the study
        removed = store.delete()
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
@exits_on_error
def flower(broker: str | None, port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Run the Flower dashboard on the broker, configured exactly as the workers are.

    Flower must share the workers' key prefix, TLS and serializer settings to see their events,
    so it runs with zoomtune's own Celery configuration (needs `pip install zoomtune[flower]`).
    Further Flower options follow, e.g. `--basic-auth=USER:PASSWORD`.
    """
    settings = Settings.from_env().with_broker(broker)
    if settings.broker_url is None:
        raise ConfigError("no broker: pass --broker URL or set ZOOMTUNE_BROKER_URL")
    try:
        import flower as _flower  # noqa: F401  (only to give a clear error)
    except ImportError as exc:
        raise ConfigError("Flower is not installed: pip install 'zoomtune[flower]'") from exc
    app = make_celery(settings)
    click.echo(f"Flower on http://{address}:{port} for broker {redact_url(settings.broker_url)}")
    code = app.start(["flower", f"--port={port}", f"--address={address}", *flower_args])
    sys.exit(code or 0)


@main.command()
@click.argument("study", required=False)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 in a container; put it behind authentication).",
)
@broker_option
@run_dir_option
@exits_on_error
def dashboard(
    study: str | None, port: int, address: str, broker: str | None, run_dir: Path | None
) -> None:
    """optuna-dashboard on STUDY (or the only study there), live and read-only.

    Every trial shows with its params, state, score, intermediate values, round, worker and
    device (needs `pip install 'zoomtune[dashboard]'`). On a broker it follows the study's
    record; on a run folder, its study.json (rewritten after each round while the study runs).
    """
    try:  # an optional extra: imported only here, so that every other command works without
        from zoomtune.coordinator.dashboard import serve_study
    except ImportError as exc:
        if exc.name not in ("optuna", "optuna_dashboard"):
            raise
        raise ConfigError(
            f"{exc.name} is not installed: pip install 'zoomtune[dashboard]'"
        ) from exc

    try:
        serve_study(study, broker, run_dir, address, port, click.echo)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    main()
