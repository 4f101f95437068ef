"""The code base keeps its own rules: ruff and mypy clean, no assert outside tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "zoomtune"
SUBPACKAGES = ("common", "coordinator", "workers")
ALLOWED = {
    "common": {"common"},
    "coordinator": {"common", "coordinator"},
    "workers": {"common", "coordinator", "workers"},
}
"""Which of zoomtune's subpackages each may import: common nothing else, the coordinator never
the workers."""


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def test_the_packages_use_raise_not_assert_for_validation() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert offenders == []


def test_common_and_coordinator_never_import_the_workers() -> None:
    offenders = []
    for path in sources():
        parts = path.relative_to(PACKAGE).parts
        # A module at the package's top (zoomtune/sklearn.py) is user-facing: like the
        # coordinator, it may use common and coordinator, never the workers.
        allowed = ALLOWED[parts[0]] if len(parts) > 1 else ALLOWED["coordinator"]
        for name in imported_names(path):
            top = name.split(".")
            if top[0] == "zoomtune" and len(top) > 1 and top[1] not in allowed:
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_the_code_imports_zoomtune_only_by_its_one_import_name() -> None:
    # `common.x` and `zoomtune.common.x` would be two modules (two enums, two error classes).
    files = [
        *sources(),
        *sorted((REPO / "tests").rglob("*.py")),
        *sorted((REPO / "bench").rglob("*.py")),
    ]
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in imported_names(path)
        if name.split(".")[0] in SUBPACKAGES
    ]
    assert offenders == []


@pytest.mark.slow
def test_ruff_finds_nothing() -> None:
    check = run(sys.executable, "-m", "ruff", "check", ".")
    assert check.returncode == 0, check.stdout + check.stderr
    form = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert form.returncode == 0, form.stdout + form.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
