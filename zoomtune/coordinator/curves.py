"""Learning curves: what each trial reported with `trial.report(step, value)`, against the step.

`coordinator report` draws them into `curves.png` when any trial reported a value: one line per
trial, coloured by round as `history.png` is (round 1 dark, the last round bright). How a trial
ended shows in its line: a COMPLETE trial's is solid; a PRUNED trial's (stopped early) is dashed
and ends in a cross at its last reported step, so the trials that early stopping cut short
stand apart from those that ran to the end; a FAILED or unfinished trial's is dotted.

Lines are drawn as one `LineCollection` per kind, so a study of thousands of trials draws in
about the time of a few (one `plot` call per trial took seconds at that size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.export import StudyRecord

DPI = 100

SOLID, DASHED, DOTTED = "solid", (0, (4, 2)), (0, (1, 1.6))
"""Line styles: COMPLETE, PRUNED, FAILED or unfinished."""


def line_style(status: TrialStatus) -> Any:
    """How a trial's curve is drawn, from how the trial ended."""
    if status is TrialStatus.COMPLETE:
        return SOLID
    if status is TrialStatus.PRUNED:
        return DASHED
    return DOTTED


def plot_curves(record: StudyRecord, colours: Sequence[Any]) -> Any | None:
    """Reported value against step, one line per trial that reported; None when none did.

    `colours` holds one colour per round (round 1 first), as
    `zoomtune.coordinator.plots.round_colours` gives.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    reported = [
        (t, record.reports[t.number]) for t in record.trials if record.reports.get(t.number)
    ]
    if not reported:
        return None
    figure = Figure(figsize=(9, 4.6), dpi=DPI)
    figure.subplots_adjust(left=0.08, right=0.77, top=0.92, bottom=0.11)
    ax = figure.add_subplot()
    # Many overlapping lines stay readable when each is fainter.
    alpha = 0.85 if len(reported) <= 20 else max(0.2, 0.85 * math.sqrt(20 / len(reported)))

    def colour(round_number: int) -> Any:
        return colours[round_number - 1] if 0 < round_number <= len(colours) else "0.5"

    for style in (DOTTED, SOLID, DASHED):
        group = [(t, values) for t, values in reported if line_style(t.status) == style]
        if group:
            ax.add_collection(
                LineCollection(
                    [[(float(step), value) for step, value in values] for _, values in group],
                    colors=[colour(t.round) for t, _ in group],
                    linestyles=style,
                    linewidths=1.1,
                    alpha=alpha,
                )
            )
    ends = [(t, values[-1]) for t, values in reported]
    pruned = [(t, end) for t, end in ends if t.status is TrialStatus.PRUNED]
    others = [(t, end) for t, end in ends if t.status is not TrialStatus.PRUNED]
    if others:
        ax.scatter(
            [step for _, (step, _) in others],
            [value for _, (_, value) in others],
            s=8,
            color=[colour(t.round) for t, _ in others],
            alpha=alpha,
            lw=0,
        )
    if pruned:
        ax.scatter(
            [step for _, (step, _) in pruned],
            [value for _, (_, value) in pruned],
            marker="X",
            s=46,
            color=[colour(t.round) for t, _ in pruned],
            edgecolors="black",
            lw=0.5,
            zorder=4,
        )
    ax.autoscale_view()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    values = [value for _, curve in reported for _, value in curve]
    if min(values) > 0 and max(values) / min(values) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel("step (trial.report)")
    ax.set_ylabel("reported value")
    ax.set_title(f"{record.spec.name}: learning curves of {len(reported)} trials", loc="left")
    ax.grid(alpha=0.25)
    rounds = sorted({t.round for t, _ in reported})
    handles = [Line2D([], [], color=colour(r), lw=2, label=f"round {r}") for r in rounds]
    counts = {
        style: sum(line_style(t.status) == style for t, _ in reported)
        for style in (SOLID, DASHED, DOTTED)
    }
    labels = {SOLID: "complete", DASHED: "pruned at ✕", DOTTED: "failed or unfinished"}
    handles += [
        Line2D(
            [],
            [],
            color="black",
            ls=style,
            lw=1.1,
            marker="X" if style == DASHED else None,
            markevery=[-1],
            label=f"{labels[style]} ({counts[style]})",
        )
        for style in (SOLID, DASHED, DOTTED)
        if counts[style]
    ]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        frameon=False,
    )
    return figure
