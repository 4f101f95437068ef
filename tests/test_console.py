"""The console the `coordinator` commands print on: in a pipe or a log, tables keep whole
numbers and words instead of rich's 80-column layout."""

from __future__ import annotations

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


def test_in_a_pipe_a_wide_table_keeps_every_cell_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given stdout that is not a terminal (pytest captures it) and no COLUMNS
    monkeypatch.delenv("COLUMNS", raising=False)

    # Then a table too wide for 80 columns is laid out whole
    out = printed(CELLS)
    assert output_console().width == PIPE_WIDTH
    assert "…" not in out
    row = next(line for line in out.splitlines() if "0.755333" in line)
    assert all(cell in row for cell in CELLS)


def test_columns_still_decide_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert output_console().width == 80
    assert "…" in printed(CELLS)
