"""On the embedded default, the commands that read a study work on its run folder as they do on a
broker, and every command they suggest works there too.

Without a broker, a command finds the study in `--run-dir DIR`, else in `runs/STUDY`, else in
the only run folder under `runs/`; `cancel` and `delete` reach the study's Redis in the run
folder (the running coordinator's, or a private redis-server started on the folder meanwhile).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner

from tests.harness import REPO, CoordinatorProcess, study_toml
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.cli import main
from zoomtune.coordinator.export import StudyRecord, write_run_dir
from zoomtune.coordinator.launch import delete_command, print_outcome
from zoomtune.coordinator.rounds import StudyOutcome

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOML = study_toml(
    objective="sleep",
    rounds=1,
    trials_per_round=4,
    options="{ duration = 0.2 }",
    space='x = { type = "float", low = 0.0, high = 1.0 }',
)
ENV = {"PYTHONPATH": str(REPO), "COLUMNS": "200"}


def cli(cwd: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`coordinator ...` as a user types it in `cwd`, with no broker anywhere."""
    env = {**os.environ, **ENV}
    env.pop("ZOOMTUNE_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "zoomtune.coordinator.cli", *shlex.split(command)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start(cwd: Path, toml: str, name: str) -> CoordinatorProcess:
    """`coordinator start study.toml` in `cwd`, its run folder the default runs/demo."""
    study_file = cwd / f"{name}.toml"
    study_file.write_text(toml)
    process = CoordinatorProcess(
        study_file, Path("runs/demo"), None, cwd / f"{name}.log", env=ENV, cwd=cwd
    )
    process.start()
    try:
        process.wait(180)
    finally:
        process.stop()
    return process


def words(text: str) -> str:
    return " ".join(text.split())


def test_every_study_command_works_on_the_run_folder_and_suggests_what_works(
    tmp_path: Path,
) -> None:
    # Given a study that ran on the embedded default
    first = start(tmp_path, TOML, "study")
    assert first.process is not None
    assert first.process.returncode == 0, first.log()[-3000:]

    # Then `status` with no argument reads the only run folder under runs/
    status = cli(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert "study demo (minimize sleep): complete" in status.stdout
    # ... and the other commands find the study by its name
    exported = cli(tmp_path, "export demo --format json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["state"] == "complete"
    report = cli(tmp_path, "report")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "runs" / "demo" / "report" / "report.html").exists()
    cancel = cli(tmp_path, "cancel demo")
    assert cancel.returncode == 1
    assert "study 'demo' is already complete; there is nothing to cancel" in cancel.stderr

    # When the study file changes under the same name
    changed = TOML.replace("seed = 3", "seed = 4")
    refused = start(tmp_path, changed, "changed")

    # Then it is refused as bad input, naming a delete command for this run folder
    assert refused.process is not None
    assert refused.process.returncode == 2, refused.log()[-3000:]
    suggested = "coordinator delete demo --run-dir runs/demo --yes"
    assert suggested in words(refused.log())

    # And that command works: it removes the study and its files from the run folder
    deleted = cli(tmp_path, suggested.removeprefix("coordinator "))
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted study 'demo'" in deleted.stdout
    assert not (tmp_path / "runs" / "demo" / "study.json").exists()
    gone = cli(tmp_path, "status demo")
    assert gone.returncode == 1
    assert "no study named 'demo' in runs/demo" in gone.stderr

    # And the changed study then starts afresh
    fresh = start(tmp_path, changed, "fresh")
    assert fresh.process is not None
    assert fresh.process.returncode == 0, fresh.log()[-3000:]
    assert "starting study 'demo'" in fresh.log()

    # When there are several run folders, `status` lists the command that picks each
    other = tmp_path / "runs" / "other"
    other.mkdir()
    shutil.copy(tmp_path / "runs" / "demo" / "study.json", other)
    several = cli(tmp_path, "status")
    assert several.returncode == 2
    assert "2 run folders under runs/; pick one:" in several.stderr
    assert "coordinator status --run-dir runs/demo" in several.stderr
    assert "coordinator status --run-dir runs/other" in several.stderr


@pytest.mark.parametrize("state", ["failed", "cancelled"])
def test_a_study_that_stays_failed_or_cancelled_says_how_to_start_it_afresh(
    capsys: pytest.CaptureFixture[str], state: str
) -> None:
    spec = StudySpec.from_toml(TOML)
    outcome = StudyOutcome(state, "round 1: 0 completed trials", None)
    embedded = delete_command("demo", Path("runs/demo"), Settings())
    print_outcome(spec, outcome, Path("runs/demo"), embedded)
    text = words(capsys.readouterr().out)
    assert f"the study stays {state}; to run it afresh: " in text
    assert "coordinator delete demo --run-dir runs/demo --yes, then start it again" in text
    cluster = delete_command("demo", Path("runs/demo"), Settings(broker_url="redis://h:6379/0"))
    assert cluster == "coordinator delete demo --yes"


def test_status_of_a_cluster_studys_run_folder_does_not_call_it_interrupted(
    tmp_path: Path,
) -> None:
    # Given the run folder of a study running on a cluster: no redis/ folder (its Redis is the
    # cluster's), so no lock there says whether a coordinator runs it
    store = StudyStore(fakeredis.FakeRedis(decode_responses=True), "zoomtune:", "demo")
    lock = store.acquire(ttl=30)
    store.create(lock, StudySpec.from_toml(study_toml()).to_dict(), max_attempts=3)
    write_run_dir(StudyRecord.from_store(store), tmp_path / "run")

    # When `status` reads it
    result = CliRunner().invoke(
        main,
        ["status", "--run-dir", str(tmp_path / "run")],
        env={"COLUMNS": "200", "ZOOMTUNE_BROKER_URL": None},
    )

    # Then it is running, not interrupted
    assert result.exit_code == 0, result.output
    assert "running" in result.output
    assert "interrupted" not in result.output
