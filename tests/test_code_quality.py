"""The code base keeps its own rules: ruff and mypy clean, no assert outside tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "coordinator", "workers")


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


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
        if path.relative_to(REPO).parts[0] == "workers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            allowed_top = (
                {"common"}
                if path.relative_to(REPO).parts[0] == "common"
                else {"common", "coordinator"}
            )
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top not in allowed_top:
                    offenders.append(f"{path.relative_to(REPO)} imports {name}")
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
