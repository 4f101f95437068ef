"""The rich console the `coordinator` commands print their tables and findings on."""

from __future__ import annotations

import os

from rich.console import Console

PIPE_WIDTH = 200
"""Columns when the output is not a terminal (a pipe, a log file) and COLUMNS is not set."""


def output_console() -> Console:
    """A console as wide as the terminal; in a pipe or a file, `PIPE_WIDTH` columns.

    Rich lays out for 80 columns when stdout is not a terminal, so `coordinator status | less`
    or a cluster job's log would get tables whose numbers are cut short ("2.243…") and cells
    wrapped a word a line. A table takes only the width it needs, so a wide console costs a
    narrow one nothing. COLUMNS, when set, still decides."""
    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=PIPE_WIDTH)
