"""The console the `coordinator` commands print on: in a log with no terminal, tables keep
whole numbers and words instead of rich's 80-column layout; on a terminal, they fit it."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from rich.table import Table

from zoomtune.coordinator.console import PIPE_WIDTH, output_console

CELLS = ["0.755333", "9.15% of the space", "-0.3569 .. 7.893", "1.003 .. 3.498"] * 2


def printed(cells: list[str]) -> str:
    table = Table(*(f"column {i}" for i in range(len(cells))))
    table.add_row(*cells)
    console = output_console()
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def no_terminal(fd: int = 1) -> os.terminal_size:
    raise OSError(25, "Inappropriate ioctl for device")


def a_terminal_on(fd: int, columns: int) -> Callable[[int], os.terminal_size]:
    """`os.get_terminal_size` where only `fd` is a terminal, `columns` wide."""

    def size(asked: int = 1) -> os.terminal_size:
        if asked != fd:
            raise OSError(25, "Inappropriate ioctl for device")
        return os.terminal_size((columns, 40))

    return size


@pytest.fixture(autouse=True)
def no_width_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def test_with_no_terminal_a_wide_table_keeps_every_cell_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no terminal on stdin, stdout or stderr (a cluster job's log) and no COLUMNS
    monkeypatch.setattr(os, "get_terminal_size", no_terminal)

    # Then a table too wide for 80 columns is laid out whole
    out = printed(CELLS)
    assert output_console().width == PIPE_WIDTH
    assert "…" not in out
    row = next(line for line in out.splitlines() if "0.755333" in line)
    assert all(cell in row for cell in CELLS)


def test_piped_from_a_terminal_the_output_fits_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `coordinator status | less`: stdout is a pipe, but stderr is the terminal
    monkeypatch.setattr(os, "get_terminal_size", a_terminal_on(2, 100))
    assert output_console().width == 100


def test_a_terminal_that_says_it_has_no_columns_counts_as_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "get_terminal_size", a_terminal_on(1, 0))
    assert output_console().width == PIPE_WIDTH


def test_columns_still_decide_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "get_terminal_size", no_terminal)
    monkeypatch.setenv("COLUMNS", "80")
    assert output_console().width == 80
    assert "…" in printed(CELLS)
    monkeypatch.setenv("COLUMNS", "")  # set, but to nothing rich can read
    assert output_console().width == PIPE_WIDTH
