"""Installing zoomtune adds one import name. The wheel built from this checkout, installed into a
fresh virtual environment, adds only the `zoomtune` package (and its dist-info) to site-packages
and the `coordinator` and `worker` commands to bin/; a worker started from that environment runs
an objective that imports a `common` package of its own, in a real study.

Fast and offline: the wheel is built without build isolation (setuptools, from the test extra)
from a copy of what deploy/Dockerfile copies, so a stale build/ folder in the checkout cannot
leak into it. The fresh environment gets the wheel alone (`--no-deps`); its dependencies come
from this environment's site-packages, added as a plain path by a .pth file. A path line in a
.pth file is not itself a site directory, so the .pth files in it (the editable install's import
hook for this checkout) are never run: the fresh environment can import zoomtune only from the
wheel, which the test checks."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.harness import REPO, CoordinatorProcess, WorkerProcess, study_toml
from zoomtune.coordinator.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SOURCES = ("pyproject.toml", "README.md", "zoomtune")
"""What the wheel is built from: the same files deploy/Dockerfile copies."""

USER_COMMON = '''"""The user's own `common` package, as ML repositories often have."""

OFFSET = 0.25
'''

USER_UTILS = """from common import OFFSET


def shift(x: float) -> float:
    return x - OFFSET
"""

USER_OBJECTIVE = '''"""An objective importing its project's own `common` package by that name."""

from common.utils import shift


def score(params, trial):
    return shift(params["x"]) ** 2 + params["y"]
'''


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; before/after listings kept in it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(root)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=120)
    (wheel,) = root.glob("zoomtune-*.whl")

    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_zoomtune_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    (root / "site-before").write_text("\n".join(sorted(os.listdir(site))))
    (root / "bin-before").write_text("\n".join(sorted(os.listdir(env / "bin"))))
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=120)
    return env


def added(venv: Path, folder: Path, before: str) -> set[str]:
    return set(os.listdir(folder)) - set((venv.parent / before).read_text().splitlines())


def site_packages(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site


def test_the_wheel_adds_one_import_name_and_the_two_commands(venv: Path) -> None:
    assert added(venv, site_packages(venv), "site-before") == {
        "zoomtune",
        "zoomtune-0.1.0.dist-info",
    }
    assert added(venv, venv / "bin", "bin-before") == {"coordinator", "worker"}
    # And the package holds the three parts, not the checkout's folders next to it
    package = site_packages(venv) / "zoomtune"
    assert {p.name for p in package.iterdir() if (p / "__init__.py").exists()} == {
        "common",
        "coordinator",
        "workers",
    }


def test_an_installed_worker_runs_an_objective_that_imports_its_own_common_package(
    venv: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Given a project of the user's with a `common` package and an objective that imports it
    project = tmp_path / "project"
    (project / "common").mkdir(parents=True)
    (project / "common" / "__init__.py").write_text(USER_COMMON)
    (project / "common" / "utils.py").write_text(USER_UTILS)
    (project / "my_objective.py").write_text(USER_OBJECTIVE)
    env = {"PYTHONPATH": str(project)}  # the project's modules importable by name, as in ML repos
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import zoomtune, common; print(zoomtune.__file__)\nprint(common.__file__)",
        ],
        cwd=project,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    ours, theirs = map(Path, where.stdout.split())
    assert ours.is_relative_to(site_packages(venv))
    assert theirs == project / "common" / "__init__.py"

    # When the installed `worker` registers it and the installed `coordinator` runs a study
    worker = WorkerProcess(
        redis_server.url,
        tmp_path / "worker.log",
        objectives=["shifted=my_objective:score"],
        env=env,
        program=[str(venv / "bin" / "worker")],
        cwd=project,
    ).start()
    try:
        worker.wait_ready()
        study_file = project / "study.toml"
        study_file.write_text(study_toml(objective="shifted", rounds=1, trials_per_round=3))
        coordinator = CoordinatorProcess(
            study_file,
            project / "run",
            redis_server.url,
            tmp_path / "coordinator.log",
            cwd=project,
            program=[str(venv / "bin" / "coordinator")],
        )
        assert coordinator.start().wait(120) == 0, coordinator.log()[-3000:] + worker.log()[-3000:]
    finally:
        worker.stop()

    # Then every trial completed with the score that objective computed from its params
    with (project / "run" / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "complete", row
        expected = (float(row["params_x"]) - 0.25) ** 2 + int(row["params_y"])
        assert float(row["score"]) == pytest.approx(expected)
