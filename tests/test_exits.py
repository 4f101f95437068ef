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
from zoomtune.coordinator.cli import main as coordinator_main
from zoomtune.workers.cli import main as worker_main


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


@pytest.mark.parametrize(
    ("main", "args", "expected"),
    [
        (
            coordinator_main,
            ["start", "study.toml", "--workers", "0"],
            "error: Invalid value for '--workers': 0 is not in the range 1<=x<=1024 "
            "(see coordinator start --help)",
        ),
        (coordinator_main, ["plan"], "error: Missing argument 'STUDY_FILE'"),
        (coordinator_main, ["strat"], "error: No such command 'strat'"),
        (worker_main, ["start", "--concurrency", "x"], "error: Invalid value for '--concurrency'"),
    ],
)
def test_a_usage_error_is_one_line_and_exits_2(
    main: click.Group, args: list[str], expected: str
) -> None:
    command = "coordinator" if main is coordinator_main else "worker"
    done = CliRunner().invoke(main, args, prog_name=command)

    assert done.exit_code == ExitCode.BAD_INPUT
    [line] = done.output.splitlines()
    assert line.startswith(expected), line
    assert "Usage:" not in done.output


def test_help_still_exits_0() -> None:
    done = CliRunner().invoke(coordinator_main, ["--help"])
    assert done.exit_code == 0
    assert "Usage:" in done.output
