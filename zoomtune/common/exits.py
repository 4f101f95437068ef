"""Exit codes of the `coordinator` and `worker` commands, and the one way errors become them.

Both command lines print a zoomtune error as one `error: ...` line on stderr (passwords in URLs
hidden) and exit with the code of the table below, so a script, systemd or Kubernetes can tell
bad input from a failure the same way for every command:

    0    done (`coordinator start`: the study is complete)
    1    failed: the study failed, or an error stopped the command (a lost broker, a locked
         study, a worker that cannot start, no GPU where one was asked for)
    2    bad input: a study file, an option, a setting or a broker URL (click's own usage
         errors, as one `error:` line too: `OneLineErrors`), or a changed study file under a
         name already used
    3    the study was cancelled (`coordinator cancel`)
    130  interrupted by SIGINT, SIGTERM or SIGHUP (run `coordinator start` again to resume)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from zoomtune.common.errors import ConfigError, StudyExists, ZoomtuneError
from zoomtune.common.redact import redact_url
from zoomtune.common.trial import StudyState


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    CANCELLED = 3
    INTERRUPTED = 130


STUDY_EXIT_CODES = {
    StudyState.COMPLETE: ExitCode.OK,
    StudyState.FAILED: ExitCode.FAILED,
    StudyState.CANCELLED: ExitCode.CANCELLED,
}
"""`coordinator start`'s exit code for each state a study ends in."""

BAD_INPUT: tuple[type[ZoomtuneError], ...] = (ConfigError, StudyExists)
"""The errors that mean the user gave something wrong; every other zoomtune error exits 1."""


def exit_code(exc: ZoomtuneError) -> ExitCode:
    """The exit code for an error that stopped a command."""
    return ExitCode.BAD_INPUT if isinstance(exc, BAD_INPUT) else ExitCode.FAILED


def fail(exc: ZoomtuneError) -> NoReturn:
    """Print `exc` for people, passwords hidden, and exit with its code."""
    click.echo(f"error: {redact_url(str(exc))}", err=True)
    sys.exit(exit_code(exc))


class OneLineErrors(click.Group):
    """A command group whose usage errors (a bad option value, a missing argument, an unknown
    command) are one `error: ...` line on stderr with exit code 2, like every other error of
    these commands, rather than click's usage, hint and message on three lines."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            return super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message().rstrip('.')}{where}", err=True)
            sys.exit(ExitCode.BAD_INPUT)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:  # e.g. "no" to a confirmation
            click.echo("Aborted!", err=True)
            sys.exit(ExitCode.FAILED)


P = ParamSpec("P")
R = TypeVar("R")


def exits_on_error(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a click command's function: a zoomtune error it raises ends the command with
    `fail` (under the decorator that registers the command, so click sees the wrapper)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ZoomtuneError as exc:
            fail(exc)

    return wrapper


__all__ = [
    "BAD_INPUT",
    "STUDY_EXIT_CODES",
    "ExitCode",
    "OneLineErrors",
    "exit_code",
    "exits_on_error",
    "fail",
]
