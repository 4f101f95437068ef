"""The study report: what `coordinator report` writes into a folder.

- `history.png`: every trial's score by trial number, coloured by round, with the best score
  so far as a line (failed trials as crosses along the bottom).
- `funnel.png`: one panel per parameter: score against value (log axes where the parameter's
  scale is log) over the shaded box of every round, and under it the funnel itself: each
  round's box as a bar with that round's trials as ticks, round 1 at the top, so the narrowing
  reads from top to bottom. A conditional parameter's panel shows only the trials in which it
  was active, and no bar for a round whose box pruned its choice branch.
- `curves.png`, when any trial reported intermediate values: the learning curves, one line per
  trial, pruned trials dashed (`zoomtune.coordinator.curves`).
- `importance.png`: each parameter's share of the importance (`zoomtune.coordinator.importance`).
- `report.html`: one static page that shows the plots with the best trial, the warnings, the
  importance ranking and the round table; it references only the files written next to it.

Plots are drawn on plain matplotlib `Figure`s with the Agg canvas (no pyplot, no display), so
a report works headless and leaves no global state behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoomtune.coordinator.curves import plot_curves
from zoomtune.coordinator.edges import EdgeWarning, edge_warnings
from zoomtune.coordinator.export import StudyRecord
from zoomtune.coordinator.importance import MIN_TRIALS, ParameterImportance, parameter_importance
from zoomtune.coordinator.plots import plot_funnel, plot_history, plot_importance, round_colours
from zoomtune.coordinator.report_html import (
    CURVES_PNG,
    FUNNEL_PNG,
    HISTORY_PNG,
    IMPORTANCE_PNG,
    REPORT_HTML,
    report_html,
)


@dataclass(frozen=True)
class Findings:
    """What the completed trials say: importance and edge warnings (shared by status)."""

    importance: tuple[ParameterImportance, ...]
    warnings: tuple[EdgeWarning, ...]
    completed: int

    @classmethod
    def of(cls, record: StudyRecord) -> Findings:
        completed = record.completed()
        results = [(t.params, float(t.score or 0.0)) for t in completed]
        importance = parameter_importance(record.spec.space, results)
        return cls(
            importance=tuple(importance),
            warnings=tuple(edge_warnings(record.spec, record.trials, importance)),
            completed=len(completed),
        )

    @property
    def importance_note(self) -> str | None:
        """Why there is no importance ranking, when there is none."""
        if self.importance:
            return None
        return (
            f"importance needs at least {MIN_TRIALS} completed trials "
            f"(this study has {self.completed})"
        )


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote, and the findings it shows."""

    directory: Path
    images: tuple[str, ...]
    findings: Findings

    @property
    def html(self) -> Path:
        return self.directory / REPORT_HTML

    @property
    def files(self) -> tuple[Path, ...]:
        return (*(self.directory / name for name in self.images), self.html)


def write_report(record: StudyRecord, directory: Path) -> Report:
    """Draw the plots and write report.html into `directory` (created if missing)."""
    findings = Findings.of(record)
    directory.mkdir(parents=True, exist_ok=True)
    images = [HISTORY_PNG, FUNNEL_PNG]
    _save(plot_history(record), directory / HISTORY_PNG)
    order = [item.name for item in findings.importance]
    _save(plot_funnel(record, order), directory / FUNNEL_PNG)
    curves = plot_curves(record, round_colours(len(record.rounds)))
    if curves is not None:
        _save(curves, directory / CURVES_PNG)
        images.append(CURVES_PNG)
    elif (directory / CURVES_PNG).exists():
        (directory / CURVES_PNG).unlink()  # stale from an earlier report
    if findings.importance:
        _save(plot_importance(findings.importance), directory / IMPORTANCE_PNG)
        images.append(IMPORTANCE_PNG)
    elif (directory / IMPORTANCE_PNG).exists():
        (directory / IMPORTANCE_PNG).unlink()  # stale from an earlier report
    report = Report(directory, tuple(images), findings)
    _write_text(directory / REPORT_HTML, report_html(record, report))
    return report


def _save(figure: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png")
    os.replace(partial, path)


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
