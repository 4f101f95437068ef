"""report.html: one static page with the study's summary, warnings, best trial, importance,
round table and the plots written next to it (`coordinator.report` writes it); it references
only those files, so the folder can be copied or served as it is."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from common.trial import TrialStatus
from coordinator.export import StudyRecord

if TYPE_CHECKING:  # report.py writes this page: a runtime import would be circular
    from coordinator.report import Report

HISTORY_PNG = "history.png"
FUNNEL_PNG = "funnel.png"
CURVES_PNG = "curves.png"
IMPORTANCE_PNG = "importance.png"
REPORT_HTML = "report.html"
"""The files of a report folder."""


def report_html(record: StudyRecord, report: Report) -> str:
    """The static page: summary, warnings, best trial, importance, rounds and the plots."""
    spec = record.spec
    e = html.escape
    best = record.best()
    complete = len(record.completed())
    failed = sum(1 for t in record.trials if t.status is TrialStatus.FAILED)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>zoomtune report: {e(spec.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(spec.name)}</h1>",
        f"<p>{e(spec.direction)} the objective <code>{e(spec.objective.name)}</code>; "
        f"state <b>{e(record.state)}</b>; {len(record.rounds)} of {spec.search.rounds} rounds; "
        f"{len(record.trials)} trials ({complete} complete, {failed} failed); seed {spec.seed}."
        "</p>",
    ]
    findings = report.findings
    if findings.warnings:
        items = "".join(f"<li>{e(w.message)}</li>" for w in findings.warnings)
        parts.append(f'<div class="warn"><b>Warnings</b><ul>{items}</ul></div>')
    if best is not None:
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{e(repr(value))}</td></tr>"  # in full, to copy
            for name, value in best.params.items()
        )
        parts.append(
            f"<h2>Best trial</h2><p>trial {best.number} (round {best.round}), "
            f"score <b>{best.score:.6g}</b></p>"
            f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table>"
        )
    parts.append("<h2>Which hyperparameters matter</h2>")
    if findings.importance:
        rows = "".join(
            f"<tr><td>{rank}</td><td>{e(item.name)}</td><td>{item.share:.1%}</td>"
            f'<td><div class="bar" style="width:{item.share * 300:.0f}px"></div></td></tr>'
            for rank, item in enumerate(findings.importance, start=1)
        )
        parts.append(
            f"<table><tr><th>#</th><th>parameter</th><th>share</th><th></th></tr>{rows}</table>"
        )
    else:
        parts.append(f"<p>{e(findings.importance_note or '')}</p>")
    parts.append("<h2>Rounds</h2>" + _rounds_table(record))
    captions = {
        HISTORY_PNG: "Optimization history",
        FUNNEL_PNG: "The search, parameter by parameter (the funnel)",
        CURVES_PNG: "Learning curves (trial.report; pruned trials dashed)",
        IMPORTANCE_PNG: "Importance",
    }
    for name in report.images:
        parts.append(
            f"<h2>{e(captions.get(name, name))}</h2>"
            f'<img src="{e(name)}" alt="{e(captions.get(name, name))}">'
        )
    written = datetime.now(tz=UTC).isoformat(timespec="seconds")
    parts.append(f'<p class="small">written by zoomtune at {e(written)}</p></body></html>')
    return "\n".join(parts) + "\n"


def _rounds_table(record: StudyRecord) -> str:
    e = html.escape
    names = record.spec.space.names
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    rows = []
    for s in record.round_summaries():
        ranges = "".join(f"<td>{e(box_text(s.box_values.get(n)))}</td>" for n in names)
        best = "-" if s.best is None else f"{s.best.score:.6g}"
        rows.append(
            f"<tr><td>{s.number}</td><td>{len(s.trials)}</td>"
            f"<td>{s.count(TrialStatus.COMPLETE)}</td><td>{s.count(TrialStatus.FAILED)}</td>"
            f"<td>{best}</td><td>{share_text(s.volume)}</td>{ranges}</tr>"
        )
    return (
        "<table><tr><th>round</th><th>trials</th><th>complete</th><th>failed</th><th>best</th>"
        f"<th>box share</th>{head}</tr>{''.join(rows)}</table>"
    )


def box_text(entry: Any) -> str:
    """One parameter's part of a stored box, for people: `1e-05 .. 0.01` or `a, b`; a
    parameter the box left out (a child of a pruned choice branch): `pruned`."""
    if entry is None:
        return "pruned"
    if not isinstance(entry, dict) or not entry:
        return "?"
    if "values" in entry:
        return ", ".join(_value(v) for v in entry["values"])
    return f"{_value(entry.get('low'))} .. {_value(entry.get('high'))}"


def share_text(share: float) -> str:
    """A share of the search space as a percentage: `100%`, `12.5%`, `0.0312%`."""
    return f"{share * 100:.3g}%"


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.2em; }
.warn { background: #fff4e0; border-left: 4px solid #f0a000; padding: 0.5em 1em; }
.bar { background: #4c78a8; height: 0.8em; }
.small { color: #888; font-size: small; }
"""
