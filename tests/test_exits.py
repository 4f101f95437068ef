"""One table of exit codes for both command lines (zoomtune/common/exits.py)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from zoomtune.common.errors import (
    BrokerError,
    ConfigError,
    GpuError,
    StudyExists,
    StudyLocked,
    WorkersExited,
    ZoomtuneError,
)
from zoomtune.common.exits import STUDY_EXIT_CODES, ExitCode, exit_code, exits_on_error


@pytest.mark.parametrize("error", [ConfigError("bad"), StudyExists("changed study file")])
def test_bad_input_exits_2(error: ZoomtuneError) -> None:
    assert exit_code(error) == ExitCode.BAD_INPUT == 2


@pytest.mark.parametrize(
    "error", [BrokerError("gone"), StudyLocked("held"), GpuError("none"), WorkersExited("x")]
)
def test_every_other_error_exits_1(error: ZoomtuneError) -> None:
    assert exit_code(error) == ExitCode.FAILED == 1


def test_a_study_ends_with_the_code_of_its_state() -> None:
    assert STUDY_EXIT_CODES == {"complete": 0, "failed": 1, "cancelled": 3}
    assert ExitCode.INTERRUPTED == 130


def test_a_command_that_raises_prints_one_line_with_the_password_hidden_and_exits() -> None:
    @click.command()
    @exits_on_error
    def command() -> None:
        raise ConfigError("cannot use redis://:hunter2@h:6379/0: bad thing")

    done = CliRunner().invoke(command, [])
    assert done.exit_code == 2
    assert done.output.splitlines() == ["error: cannot use redis://:**@h:6379/0: bad thing"]
    assert "Traceback" not in done.output
