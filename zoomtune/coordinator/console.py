"""The rich console the `coordinator` commands print their tables and findings on."""

from __future__ import annotations

import os

from rich.console import Console

PIPE_WIDTH = 200
"""Columns when no terminal is attached (a cluster job's log, cron) and COLUMNS is not set."""


def output_console() -> Console:
    """A console as wide as the terminal; with no terminal at all, `PIPE_WIDTH` columns.

    Rich takes the width from whichever of stdin, stdout and stderr is a terminal (so
    `coordinator status | less` fits the screen), and lays out for 80 columns when none is:
    a cluster job's log would get tables whose numbers are cut short ("2.243…") and cells
    wrapped a word a line. A table takes only the width it needs, so a wide console costs a
    narrow table nothing. COLUMNS, when set, still decides."""
    if os.environ.get("COLUMNS", "").isdigit() or _terminal_attached():
        return Console()
    return Console(width=PIPE_WIDTH)


def _terminal_attached() -> bool:
    """Whether stdin, stdout or stderr is a terminal whose width can be read (a pty that says
    0 columns counts as none: rich would lay out for 80 there)."""
    for fd in (0, 1, 2):
        try:
            if os.get_terminal_size(fd).columns > 0:
                return True
        except OSError:
            continue
    return False
