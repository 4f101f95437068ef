"""Where a command finds its study: a broker, or a run folder of the embedded default.

`status`, `report`, `export`, `cancel` and `delete` take `--run-dir DIR`, else the broker (when
one is given), else runs/STUDY, else the only run folder under runs/. A run folder is read from
its study.json; a command that must write (cancel, delete) starts a private redis-server on the
folder's data for the command (`zoomtune.coordinator.redis_server.run_folder_broker`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from zoomtune.common.errors import ConfigError, StudyNotFound
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.store_reads import list_studies
from zoomtune.coordinator.export import StudyRecord
from zoomtune.coordinator.redis_server import holds_study_data, run_folder_broker

RUNS = Path("runs")
"""Where `coordinator start` puts run folders by default: runs/<study name>."""


def run_folders() -> list[Path]:
    """The run folders under runs/: those with a study.json or the embedded default's Redis."""
    if not RUNS.is_dir():
        return []
    return sorted(
        d for d in RUNS.iterdir() if (d / "study.json").is_file() or (d / "redis").is_dir()
    )


def find_run_dir(
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
    folders = run_folders()
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
def study_store(
    command: str, study: str | None, broker: str | None, run_dir: Path | None
) -> Iterator[tuple[StudyStore, Path | None]]:
    """The study's store and its run folder (None on a broker): a run folder's is the Redis of
    the coordinator running it, else a private redis-server started on the folder meanwhile."""
    folder = find_run_dir(command, study, broker, run_dir)
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


def study_record(
    command: str, study: str | None, broker: str | None, run_dir: Path | None
) -> tuple[StudyRecord, Path | None]:
    """The study's record and its run folder (None on a broker). A run folder is read from its
    study.json, unless a coordinator is running the study (then from its Redis: the study.json
    lags up to a round behind) or there is no study.json yet."""
    folder = find_run_dir(command, study, broker, run_dir)
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
    with study_store(command, study, broker, folder) as (store, _):
        return StudyRecord.from_store(store), folder
