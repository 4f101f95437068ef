"""The study report: what `coordinator report` writes into a folder.

- `history.png`: every trial's score by trial number, coloured by round, with the best score
  so far as a line (failed trials as crosses along the bottom).
- `funnel.png`: one panel per parameter: score against value (log axes where the parameter's
  scale is log) over the shaded box of every round, and under it the funnel itself: each
  round's box as a bar with that round's trials as ticks, round 1 at the top, so the narrowing
  reads from top to bottom. A conditional parameter's panel shows only the trials in which it
  was active, and no bar for a round whose box pruned its choice branch.
- `curves.png`, when any trial reported intermediate values: the learning curves, one line per
  trial, pruned trials dashed (`coordinator.curves`).
- `importance.png`: each parameter's share of the importance (`coordinator.importance`).
- `report.html`: one static page that shows the plots with the best trial, the warnings, the
  importance ranking and the round table; it references only the files written next to it.

Plots are drawn on plain matplotlib `Figure`s with the Agg canvas (no pyplot, no display), so
a report works headless and leaves no global state behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.parameters import ChoiceParameter, Parameter, Scale
from common.trial import Trial, TrialStatus
from coordinator.curves import plot_curves
from coordinator.edges import EdgeWarning, edge_warnings
from coordinator.export import RoundSummary, StudyRecord
from coordinator.importance import MIN_TRIALS, ParameterImportance, parameter_importance
from coordinator.report_html import (
    CURVES_PNG,
    FUNNEL_PNG,
    HISTORY_PNG,
    IMPORTANCE_PNG,
    REPORT_HTML,
    report_html,
)

DPI = 100
PANEL_COLUMNS = 3
"""Parameters per row of the funnel figure."""


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


# -- plots ---------------------------------------------------------------------------------------


def plot_history(record: StudyRecord) -> Any:
    """Score by trial number, coloured by round, with the best-so-far line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.6), dpi=DPI)
    figure.subplots_adjust(left=0.08, right=0.84, top=0.92, bottom=0.11)
    ax = figure.add_subplot()
    summaries = record.round_summaries()
    colours = round_colours(len(summaries))
    for summary, colour in zip(summaries, colours, strict=True):
        done = _scored(summary.trials)
        ax.scatter(
            [t.number for t, _ in done],
            [score for _, score in done],
            s=22,
            color=colour,
            alpha=0.85,
            edgecolors="none",
            label=f"round {summary.number}",
        )
        if summary.trials and summary.number > 1:
            ax.axvline(summary.trials[0].number - 0.5, color="0.85", lw=0.8, zorder=0)
    failed = [t.number for t in record.trials if t.status is TrialStatus.FAILED]
    if failed:
        ax.scatter(
            failed,
            [0.02] * len(failed),
            transform=ax.get_xaxis_transform(),
            marker="x",
            s=18,
            color="tab:red",
            label=f"failed ({len(failed)})",
        )
    numbers, best = best_so_far(record)
    if numbers:
        ax.step(numbers, best, where="post", color="black", lw=1.4, label="best so far")
    _score_axis(ax, [t.score for t in record.completed() if t.score is not None])
    ax.set_xlabel("trial")
    ax.set_ylabel(f"score ({record.spec.direction})")
    ax.set_title(f"{record.spec.name}: optimization history", loc="left")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return figure


def plot_funnel(record: StudyRecord, order: Sequence[str] = ()) -> Any:
    """One panel per parameter: score against value over each round's box, and the funnel.

    Panels follow `order` (e.g. most important first), then the rest in the space's order.
    """
    from matplotlib.figure import Figure

    space = [record.spec.space[name] for name in order]
    space += [p for p in record.spec.space if p.name not in order]
    columns = min(PANEL_COLUMNS, len(space))
    rows = math.ceil(len(space) / columns)
    height = 4.3 * rows + 0.8
    figure = Figure(figsize=(4.6 * columns, height), dpi=DPI)
    top = 1 - 0.12 / height
    figure.text(0.01, top, f"{record.spec.name}: where each round searched", va="top", size="large")
    figure.text(
        0.01,
        top - 0.28 / height,
        "shaded: each round's box; under each panel the funnel, round 1 at the top, "
        "one tick per trial; ★ the best trial",
        va="top",
        size="small",
        color="0.35",
    )
    # Fixed margins instead of a layout engine: constrained layout took seconds here.
    outer = figure.add_gridspec(
        rows,
        columns,
        left=0.07,
        right=0.98,
        top=1 - 0.8 / height,
        bottom=0.5 / height,
        hspace=0.32,
        wspace=0.3,
    )
    summaries = record.round_summaries()
    colours = round_colours(len(summaries))
    scores = [t.score for t in record.completed() if t.score is not None]
    best = record.best()
    for index, param in enumerate(space):
        inner = outer[index // columns, index % columns].subgridspec(
            2, 1, height_ratios=[3, 1.4], hspace=0.06
        )
        main = figure.add_subplot(inner[0])
        funnel = figure.add_subplot(inner[1], sharex=main)
        _parameter_panel(main, funnel, param, summaries, colours, scores, best)
    return figure


def plot_importance(importance: Sequence[ParameterImportance]) -> Any:
    """Horizontal bars, the most important parameter on top."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    height = max(3.0, 0.45 * len(importance) + 1.4)
    figure = Figure(figsize=(7.5, height), dpi=DPI)
    longest = max(len(i.name) for i in importance)
    figure.subplots_adjust(
        left=min(0.45, 0.04 + 0.012 * longest),
        right=0.97,
        top=1 - 0.45 / height,
        bottom=0.6 / height,
    )
    ax = figure.add_subplot()
    ordered = list(reversed(importance))
    positions = range(len(ordered))
    ax.barh(
        positions,
        [i.share for i in ordered],
        xerr=[i.spread for i in ordered],
        color="tab:blue",
        alpha=0.8,
        error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.3"},
    )
    ax.set_yticks(positions, [i.name for i in ordered])
    for y, item in zip(positions, ordered, strict=True):
        if item.share >= 0.25:  # inside the bar, clear of the error bar
            ax.text(0.01, y, f"{item.share:.0%}", va="center", color="white")
        else:
            ax.text(item.share + item.spread, y, f"  {item.share:.0%}", va="center")
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of the permutation importance (random forest on the warped parameters)")
    ax.set_title("which hyperparameters matter", loc="left")
    ax.grid(axis="x", alpha=0.25)
    return figure


def round_colours(count: int) -> list[Any]:
    """One colour per round, dark (round 1) to bright (the last round)."""
    from matplotlib import colormaps

    return [tuple(c) for c in colormaps["viridis"](np.linspace(0.0, 0.85, max(count, 1)))][:count]


def best_so_far(record: StudyRecord) -> tuple[list[int], list[float]]:
    """The best score after each completed trial, in trial order."""
    numbers: list[int] = []
    best: list[float] = []
    for trial in record.completed():
        score = float(trial.score or 0.0)
        if best:
            score = max(score, best[-1]) if record.spec.maximize else min(score, best[-1])
        numbers.append(trial.number)
        best.append(score)
    return numbers, best


def _parameter_panel(
    main: Any,
    funnel: Any,
    param: Parameter,
    summaries: Sequence[RoundSummary],
    colours: Sequence[Any],
    scores: Sequence[float],
    best: Trial | None,
) -> None:
    choice = isinstance(param, ChoiceParameter)
    for summary, colour in zip(summaries, colours, strict=True):
        spans = _box_spans(param, summary)
        for low, high in spans:
            main.axvspan(low, high, color=colour, alpha=0.07, lw=0)
            funnel.fill_between(
                [low, high], summary.number - 0.38, summary.number + 0.38, color=colour, alpha=0.45
            )
        # A conditional parameter's panel shows only the trials in which it was active.
        done = [(t, score) for t, score in _scored(summary.trials) if param.name in t.params]
        xs = [_x(param, t.params[param.name], t.number) for t, _ in done]
        main.scatter(xs, [score for _, score in done], s=14, color=colour, alpha=0.85, lw=0)
        tried = [
            _x(param, t.params[param.name], t.number)
            for t in summary.trials
            if param.name in t.params
        ]
        funnel.scatter(
            tried, [summary.number] * len(tried), marker="|", s=40, color="black", lw=0.7
        )
    if best is not None and param.name in best.params:
        main.scatter(
            [_x(param, best.params[param.name], best.number)],
            [best.score],
            marker="*",
            s=150,
            color="tab:red",
            edgecolors="white",
            lw=0.6,
            zorder=5,
        )
    _score_axis(main, scores)
    _value_axis(funnel, param)
    main.set_title(_title(param), fontsize="medium", loc="left")
    main.set_ylabel("score")
    main.grid(alpha=0.2)
    main.tick_params(labelbottom=False)
    funnel.set_ylim(len(summaries) + 0.6, 0.4)
    funnel.set_yticks(
        [s.number for s in summaries], [str(s.number) for s in summaries], fontsize="small"
    )
    funnel.set_ylabel("round")
    funnel.set_xlabel(param.name)
    if not choice:
        funnel.grid(axis="x", alpha=0.2)


def _title(param: Parameter) -> str:
    when = "" if param.when is None else f"\nonly when {param.when.describe()}"
    if isinstance(param, ChoiceParameter):
        return f"{param.name} (choice){when}"
    scale = "" if param.scale is Scale.LINEAR else f", {param.scale.value}"
    return f"{param.name} [{param.low:g}, {param.high:g}{scale}]{when}"


def _box_spans(param: Parameter, summary: RoundSummary) -> list[tuple[float, float]]:
    """The x ranges a round's box covers for one parameter (one per kept choice)."""
    if param.name not in summary.box_values and param.when is not None:
        return []  # its choice branch was pruned: it left this round's box
    entry = summary.box_values.get(param.name, {})
    if isinstance(param, ChoiceParameter):
        kept = entry.get("values", list(param.values))
        return [(param.index(v) - 0.4, param.index(v) + 0.4) for v in kept if param.contains(v)]
    low, high = float(entry.get("low", param.low)), float(entry.get("high", param.high))
    if low == high:  # a box one value wide still shows
        pad = (param.high - param.low) * 0.004 or 0.5
        return [(low - pad, high + pad)]
    return [(low, high)]


def _x(param: Parameter, value: Any, trial: int) -> float:
    """Where a trial's value goes on the x axis. A choice goes to its index, spread a little
    (by trial number, so the same report draws the same picture) to show how many landed."""
    if isinstance(param, ChoiceParameter):
        return param.index(value) + 0.3 * (((trial * 0.618034) % 1.0) - 0.5)
    return float(value)


def _value_axis(ax: Any, param: Parameter) -> None:
    """The x axis of a parameter: its scale, and its whole original range."""
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
        NullLocator,
    )

    if isinstance(param, ChoiceParameter):
        ax.set_xlim(-0.6, len(param.values) - 0.4)
        ax.set_xticks(range(len(param.values)), [str(v) for v in param.values])
        return
    low, high = float(param.low), float(param.high)
    if param.scale is Scale.LOG:
        ax.set_xscale("log")
        ax.set_xlim(low / (high / low) ** 0.02, high * (high / low) ** 0.02)
        # Plain numbers (20, 50, 100; 1e-05, 0.001), with 2 and 5 only over a short range.
        decades = math.log10(high / low)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    if param.scale is Scale.REVERSE_LOG:
        ax.set_xscale("function", functions=(_reverse_log, _reverse_log_inverse))
        ticks = [low, *(1 - 10.0**-k for k in range(1, 8) if low < 1 - 10.0**-k < high), high]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlim(low, high)
        return
    pad = (high - low) * 0.02 or 0.5
    ax.set_xlim(low - pad, high + pad)
    if not isinstance(param.low, float):  # an int parameter: whole numbers only
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))


def _reverse_log(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log1p(-np.minimum(np.asarray(x, dtype=np.float64), 1 - 1e-15))


def _reverse_log_inverse(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return -np.expm1(-np.asarray(w, dtype=np.float64))


def _score_axis(ax: Any, scores: Sequence[float]) -> None:
    """A log score axis when every score is positive and they span two decades or more."""
    if scores and min(scores) > 0 and max(scores) / min(scores) >= 100:
        ax.set_yscale("log")


def _scored(trials: Sequence[Trial]) -> list[tuple[Trial, float]]:
    """The completed trials with their scores."""
    return [
        (t, t.score) for t in trials if t.status is TrialStatus.COMPLETE and t.score is not None
    ]


def _save(figure: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png")
    os.replace(partial, path)


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
