"""The study store's Lua scripts as files: one per transition, documented, no state spelt out."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from zoomtune.common.store_scripts import LIBRARY, Scripts, constants, script_text
from zoomtune.common.trial import StudyState, TrialStatus

REPO = Path(__file__).resolve().parent.parent
LUA = REPO / "zoomtune" / "common" / "lua"
SCRIPTS = [f"{field.name}.lua" for field in fields(Scripts)]
STATES = {state.value for state in TrialStatus} | {state.value for state in StudyState}


def test_every_lua_file_is_a_script_or_the_library() -> None:
    on_disk = sorted(path.name for path in LUA.glob("*.lua"))
    assert on_disk == sorted([*SCRIPTS, *LIBRARY])


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_documents_its_keys_and_argv_at_its_top(name: str) -> None:
    text = (LUA / name).read_text()
    lines = text.splitlines()
    header = "\n".join(
        lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]
    )
    assert "-- Returns" in header, f"{name} does not say what it returns"
    for used in sorted(set(re.findall(r"\b(KEYS|ARGV)\[(\d+)\]", text))):
        assert f"{used[0]}[{used[1]}]" in header, f"{name} uses {used} without documenting it"


@pytest.mark.parametrize("name", [*SCRIPTS, *LIBRARY])
def test_no_script_spells_out_a_state(name: str) -> None:
    code = "\n".join(
        line for line in (LUA / name).read_text().splitlines() if not line.startswith("--")
    )
    spelt = {state for state in STATES if f"'{state}'" in code or f'"{state}"' in code}
    assert not spelt, f"{name} spells out {spelt}: use TRIAL.* or STUDY.*"


def test_the_constants_come_from_the_enums() -> None:
    block = constants()
    for status in TrialStatus:
        assert f"{status.name} = '{status.value}'" in block
    for state in StudyState:
        assert f"{state.name} = '{state.value}'" in block
    assert script_text("start_attempt.lua").startswith(block)


def test_both_state_enums_are_str_enums() -> None:
    assert TrialStatus.RUNNING == "running"
    assert StudyState.CANCELLED == "cancelled"


def test_the_scripts_are_package_data() -> None:
    # (tests/test_wheel_install.py runs a study from the installed wheel, which needs them)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "lua/*.lua" in pyproject["tool"]["setuptools"]["package-data"]["zoomtune.common"]
