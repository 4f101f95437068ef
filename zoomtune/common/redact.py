"""Passwords out of everything zoomtune prints: URLs, error messages, log lines, tracebacks.

The broker URL carries the credentials (`redis://USER:PASSWORD@host:6379/0`), and URLs end up
in messages zoomtune writes and in exceptions other libraries raise. `redact_url` is the one
function that hides them; the CLIs pass every error message, log line and traceback they print
through it (`RedactingFormatter`, `install_redacting_excepthook`).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType

REDACTED = "**"

PLACEHOLDER = "PASSWORD"
"""The word that stands for a password in the examples of zoomtune's messages."""

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>`]*)")
"""A URL inside any text: a scheme, then everything up to a space or a quote."""

_QUERY_PASSWORD = re.compile(r"(?P<key>[?&;]password=)[^&#;]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by `**`, safe to print or log.

    The user part runs to the last '@' of the URL, as urllib reads it, so a password with an
    unescaped '@' or '#' is hidden whole (at worst a little more than the password is hidden).
    A `password=` query parameter is hidden too. The placeholder `PASSWORD` of the examples
    in zoomtune's own messages (`redis://:PASSWORD@host:6379/0`) is left as it is.
    """
    return _URL.sub(_redact_one, text)


def _redact_one(match: re.Match[str]) -> str:
    rest = match["rest"]
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password != PLACEHOLDER:
            rest = f"{user}:{REDACTED}@{after}"
    rest = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{REDACTED}", rest)
    return f"{match['scheme']}{rest}"


class RedactingFormatter(logging.Formatter):
    """A log formatter whose lines, tracebacks included, go through `redact_url`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_url(super().format(record))


def print_redacted_exception(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """`sys.excepthook`: Python's traceback for an unexpected error, passwords hidden."""
    sys.stderr.write(redact_url("".join(traceback.format_exception(kind, value, tb))))


def install_redacting_excepthook() -> None:
    """Make every uncaught exception in this process print without passwords."""
    sys.excepthook = print_redacted_exception
