"""What the coordinator's commands print: rich renderables built from records, plans and findings.

The CLI (`zoomtune.coordinator.cli`) only parses options, reads the record and prints one of these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from zoomtune.common.parameters import ChoiceParameter
from zoomtune.common.store_keys import COUNTERS
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import StudyState, Trial, TrialStatus
from zoomtune.coordinator.export import RoundSummary, StudyRecord
from zoomtune.coordinator.plan import StudyPlan
from zoomtune.coordinator.progress import duration_text
from zoomtune.coordinator.report import Findings
from zoomtune.coordinator.report_html import box_text, share_text

BOX_COLUMNS = 5
"""The box-by-round table shows round 1 and the last rounds, at most this many columns."""
PLAN_TRIALS_SHOWN = 50
"""`coordinator plan` lists at most this many of round 1's trials."""


def status_view(record: StudyRecord, findings: Findings) -> RenderableType:
    """`coordinator status`: rounds, the box by round, running trials, best trial, findings."""
    spec = record.spec
    parts: list[RenderableType] = [
        Text.assemble(
            ("study ", "bold"),
            (spec.name, "bold"),
            f" ({spec.direction} {spec.objective.name}): ",
            (record.state, _state_style(record.state)),
            f" - {record.message}" if record.message else "",
        )
    ]
    summaries = record.round_summaries()
    parts.append(_rounds_table(record, summaries))
    if summaries:
        parts.append(_box_table(record, summaries))
    running = [t for t in record.trials if t.status is TrialStatus.RUNNING]
    if running:
        parts.append(_running_table(running))
    parts.append(counters_view(record.counters))
    parts.append(best_view(record))
    parts.append(findings_view(findings))
    return Group(*parts)


def best_view(record: StudyRecord) -> RenderableType:
    best = record.best()
    if best is None:
        return Text("best: no completed trial yet")
    lines = [
        Text.assemble(
            ("best", "bold"),
            f": trial {best.number} (round {best.round}), score ",
            (f"{best.score:.6g}", "bold green"),
        )
    ]
    lines += [Text(f"  {name} = {value!r}") for name, value in best.params.items()]
    return Group(*lines)


def counters_view(counters: Mapping[str, int]) -> RenderableType:
    """The store's counters: deliveries and results it dropped, attempts it sent back, by reason
    (every counter the store keeps, zeros too, in the store's order; then any others)."""
    names = [*COUNTERS, *sorted(set(counters) - set(COUNTERS))]
    line = Text("counters: ", style="bold")
    for index, name in enumerate(names):
        value = int(counters.get(name, 0))
        line.append(", " if index else "")
        line.append(f"{name} {value}", style="yellow" if value else "")
    return line


def findings_view(findings: Findings) -> RenderableType:
    """The importance ranking and the edge warnings."""
    lines: list[RenderableType] = []
    note = findings.importance_note
    if note is not None:
        lines.append(Text(note, style="dim"))
    else:
        lines.append(Text("which hyperparameters matter (permutation importance):", style="bold"))
        for rank, item in enumerate(findings.importance, start=1):
            bar = "█" * round(item.share * 30)
            lines.append(Text(f"  {rank}. {item.name:<24} {item.share:6.1%}  {bar}"))
    for warning in findings.warnings:
        lines.append(Text(f"warning: {warning.message}", style="yellow"))
    return Group(*lines)


def plan_view(plan: StudyPlan, workers: int) -> RenderableType:
    """`coordinator plan`: the rounds, the budget, the first round and the projected time."""
    spec = plan.spec
    search = spec.search
    parts: list[RenderableType] = [
        Text.assemble(
            ("study ", "bold"),
            (spec.name, "bold"),
            f": {spec.direction} {spec.objective.name}, sampler {search.sampler}, seed "
            f"{spec.seed}, top_k {search.top_k!r}, queue {spec.resources.queue}",
        )
    ]
    parts.append(_space_table(spec))
    rounds = Table(
        "round",
        "trials",
        "in the narrowed box",
        "over the whole space",
        title="rounds",
        title_justify="left",
    )
    for r in plan.rounds:
        rounds.add_row(str(r.number), str(r.trials), str(r.in_box), str(r.whole_space))
    parts.append(rounds)
    parts.append(Text(f"total budget: {plan.total_trials} trials in {len(plan.rounds)} rounds"))
    parts.append(Text(plan.overlap_line()))
    parts.extend(Text(line) for line in plan.early_stopping_lines())
    first = plan.first_round
    shown = first[:PLAN_TRIALS_SHOWN]
    parts.append(_trials_table(f"round 1's {len(first)} trials", shown))
    if len(shown) < len(first):
        parts.append(
            Text(f"... and {len(first) - len(shown)} more (the first {len(shown)} are shown)")
        )
    worker_seconds = plan.worker_seconds()
    wall = plan.wall_seconds(workers)
    if worker_seconds is None or wall is None:
        parts.append(
            Text("projected time: unknown (the objective has no `duration` option)", style="dim")
        )
    else:
        parts.append(
            Text(
                f"projected worker time: {plan.total_trials} trials x {plan.trial_seconds:g}s = "
                f"{_span(worker_seconds)}; on {workers} worker processes at least "
                f"{_span(wall)} ("
                + (
                    "rounds overlap: the next one runs ahead while a round's last trials run"
                    if plan.rounds_overlap
                    else "each round waits for its last trial"
                )
                + ")"
            )
        )
    parts.append(Text("nothing was written: `coordinator start` runs it", style="dim"))
    return Group(*parts)


def studies_table(rows: Sequence[Mapping[str, str]]) -> RenderableType:
    """`coordinator list`: one row per study's meta record (plus its name)."""
    if not rows:
        return Text("no studies in this broker")
    table = Table("study", "state", "rounds", "trials", "created", "message")
    for meta in rows:
        state = meta.get("state", "?")
        table.add_row(
            meta["name"],
            Text(state, style=_state_style(state)),
            meta.get("rounds", "0"),
            meta.get("trials", "0"),
            _time(meta.get("created_at")),
            meta.get("message", ""),
        )
    return table


def _rounds_table(record: StudyRecord, summaries: Sequence[RoundSummary]) -> Table:
    table = Table(
        "round",
        "trials",
        "complete",
        "running",
        "queued",
        "failed",
        "pruned",
        "best",
        "box",
        title=f"rounds ({len(summaries)} of {record.spec.search.rounds} written)",
        title_justify="left",
    )
    ahead = {r.number for r in record.rounds if r.provisional}
    for s in summaries:
        table.add_row(
            f"{s.number} (ahead)" if s.number in ahead else str(s.number),
            str(len(s.trials)),
            str(s.count(TrialStatus.COMPLETE)),
            str(s.count(TrialStatus.RUNNING)),
            str(s.count(TrialStatus.QUEUED)),
            str(s.count(TrialStatus.FAILED)),
            str(s.count(TrialStatus.PRUNED)),
            "-" if s.best is None else f"{s.best.score:.6g}",
            f"{share_text(s.volume)} of the space",
        )
    return table


def _space_table(spec: StudySpec) -> Table:
    """The parameters as a tree: a conditional parameter sits under the choice it depends on,
    with the values that make it active in the `when` column."""
    conditional = spec.space.conditional
    columns = ["parameter", "type", "range", "scale", *(["when"] if conditional else [])]
    table = Table(*columns, title="search space", title_justify="left")
    for depth, param in spec.space.tree():
        name = "   " * (depth - 1) + "└─ " + param.name if depth else param.name
        when = [param.when.describe() if param.when else ""] if conditional else []
        if isinstance(param, ChoiceParameter):
            table.add_row(name, "choice", ", ".join(map(str, param.values)), "", *when)
        else:
            kind = "int" if isinstance(param.low, int) else "float"
            table.add_row(name, kind, f"{param.low:g} .. {param.high:g}", param.scale.value, *when)
    return table


def _box_table(record: StudyRecord, summaries: Sequence[RoundSummary]) -> Table:
    shown = list(summaries)
    if len(shown) > BOX_COLUMNS:
        shown = [shown[0], *shown[-(BOX_COLUMNS - 1) :]]
    table = Table(
        "parameter",
        *(f"round {s.number}" for s in shown),
        title="search box by round",
        title_justify="left",
    )
    for name in record.spec.space.names:
        table.add_row(name, *(box_text(s.box_values.get(name)) for s in shown))
    return table


def _running_table(running: Sequence[Trial]) -> Table:
    table = Table(
        "trial",
        "round",
        "attempt",
        "worker",
        "device",
        "host",
        "started",
        title="running trials",
        title_justify="left",
    )
    for t in running:
        table.add_row(
            str(t.number),
            str(t.round),
            str(t.attempt),
            t.worker or "?",
            t.device or "?",
            t.host or "?",
            _time(t.started_at),
        )
    return table


def _trials_table(title: str, trials: Sequence[Mapping[str, object]]) -> Table:
    names = sorted({name for params in trials for name in params})
    table = Table("#", *names, title=title, title_justify="left")
    for index, params in enumerate(trials):
        # An inactive conditional parameter is absent from the trial: an empty cell.
        table.add_row(str(index), *(_cell(params[n]) if n in params else "" for n in names))
    return table


def _span(seconds: float) -> str:
    """`12.5s` under a minute, else `m:ss` or `h:mm:ss`."""
    return f"{seconds:.3g}s" if seconds < 60 else duration_text(seconds)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _time(value: float | str | None) -> str:
    if value is None or value == "":
        return ""
    stamp = datetime.fromtimestamp(float(value), tz=UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _state_style(state: str) -> str:
    styles: dict[str, str] = {
        StudyState.COMPLETE: "green",
        StudyState.RUNNING: "cyan",
        StudyState.FAILED: "red",
        StudyState.CANCELLED: "yellow",
    }
    return styles.get(state, "")
