"""A zoomtune study as optuna sees one: the `FrozenStudy` and `FrozenTrial`s that
`coordinator dashboard` hands optuna-dashboard (pure functions of a `StudyRecord`).

- Parameters keep their scale: `float`/`int` become `FloatDistribution`/`IntDistribution` with
  the same bounds, `log` and `step`; a choice becomes a `CategoricalDistribution`. optuna has no
  `reverse_log` scale: such a parameter shows as a linear `FloatDistribution` over its bounds
  (its values are exact; only the plots' axes are linear, not spread like zoomtune samples
  them), and the study's user attribute `reverse_log` lists those parameters.
- States: queued -> WAITING, running -> RUNNING, complete -> COMPLETE (the score is the value),
  failed -> FAIL, pruned -> PRUNED (no value: zoomtune keeps a pruned trial's score empty, its
  last reported step and value are user attributes).
- Intermediate values are the trial's reports (`trial.report(step, value)`): the last value
  reported at each step counts, as in `coordinator report`'s curves.
- User attributes: `round` and `attempt`, and when known `worker`, `device`, `host`, `error`,
  `last_step` and `last_value`.

The study's id and each trial's id are fixed: one study (id `STUDY_ID`) whose trial ids are its
trial numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from zoomtune.common.parameters import ChoiceParameter, FloatParameter, Parameter, Scale
from zoomtune.common.space import SearchSpace
from zoomtune.common.trial import Trial, TrialStatus, sorted_curve
from zoomtune.coordinator.export import StudyRecord

STUDY_ID = 0
"""The id of the one study the dashboard shows."""

STATES = {
    TrialStatus.QUEUED: TrialState.WAITING,
    TrialStatus.RUNNING: TrialState.RUNNING,
    TrialStatus.COMPLETE: TrialState.COMPLETE,
    TrialStatus.FAILED: TrialState.FAIL,
    TrialStatus.PRUNED: TrialState.PRUNED,
}


@dataclass(frozen=True)
class OptunaStudy:
    """Everything the read-only storage answers from: one study and its trials, by number."""

    study: FrozenStudy
    trials: tuple[FrozenTrial, ...]

    @property
    def directions(self) -> list[StudyDirection]:
        return list(self.study.directions)


def distribution(param: Parameter) -> BaseDistribution:
    """The optuna distribution closest to `param` (reverse_log: linear over the same bounds)."""
    if isinstance(param, ChoiceParameter):
        return CategoricalDistribution(list(param.values))
    log = param.scale is Scale.LOG
    if isinstance(param, FloatParameter):
        return FloatDistribution(param.low, param.high, log=log, step=param.step)
    return IntDistribution(param.low, param.high, log=log, step=param.step)


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    return {param.name: distribution(param) for param in space}


def direction(maximize: bool) -> StudyDirection:
    return StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE


def frozen_trial(
    trial: Trial,
    reports: Sequence[tuple[int, float]],
    space: Mapping[str, BaseDistribution],
) -> FrozenTrial:
    """`trial` as optuna's record of it (its id is its number)."""
    steps, values = sorted_curve(reports)
    return FrozenTrial(
        number=trial.number,
        state=STATES[trial.status],
        value=trial.completed_score,
        datetime_start=_datetime(trial.started_at),
        datetime_complete=_datetime(trial.finished_at) if trial.status.is_finished() else None,
        params=dict(trial.params),
        distributions={name: space[name] for name in trial.params if name in space},
        user_attrs=trial_attrs(trial),
        system_attrs={},
        intermediate_values=dict(zip(steps, values, strict=True)),
        trial_id=trial.number,
    )


def trial_attrs(trial: Trial) -> dict[str, Any]:
    """The user attributes a trial shows: its round and attempt, and what else is known."""
    attrs: dict[str, Any] = {"round": trial.round, "attempt": trial.attempt}
    known = {
        "worker": trial.worker,
        "device": trial.device,
        "host": trial.host,
        "error": trial.error,
        "last_step": trial.last_step,
        "last_value": trial.last_value,
    }
    attrs.update({key: value for key, value in known.items() if value is not None})
    return attrs


def study_attrs(record: StudyRecord) -> dict[str, Any]:
    """The study's user attributes: what zoomtune knows of it that optuna has no field for."""
    spec = record.spec
    attrs: dict[str, Any] = {
        "state": record.state,
        "objective": spec.objective.name,
        "seed": spec.seed,
        "rounds": f"{len(record.rounds)} of {spec.search.rounds}",
        "sampler": spec.search.sampler,
    }
    reverse = [p.name for p in spec.space if _scale(p) is Scale.REVERSE_LOG]
    if reverse:
        note = "shown on a linear axis: optuna has no reverse-log scale"
        attrs["reverse_log"] = f"{', '.join(reverse)} ({note})"
    if record.message:
        attrs["message"] = record.message
    return attrs


def optuna_study(record: StudyRecord) -> OptunaStudy:
    """The study of `record` with every trial, in trial-number order."""
    space = distributions(record.spec.space)
    study = FrozenStudy(
        study_name=record.spec.name,
        direction=direction(record.spec.maximize),
        user_attrs=study_attrs(record),
        system_attrs={},
        study_id=STUDY_ID,
    )
    trials = tuple(
        frozen_trial(trial, record.reports.get(trial.number, ()), space)
        for trial in sorted(record.trials, key=lambda t: t.number)
    )
    return OptunaStudy(study, trials)


def _scale(param: Parameter) -> Scale | None:
    return None if isinstance(param, ChoiceParameter) else param.scale


def _datetime(seconds: float | None) -> datetime | None:
    """A Redis time (seconds since the epoch) as the local naive datetime optuna records."""
    return None if seconds is None else datetime.fromtimestamp(seconds)
