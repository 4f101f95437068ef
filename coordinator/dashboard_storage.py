"""A read-only optuna storage over a zoomtune study: what optuna-dashboard reads from.

Every read answers from a snapshot of the study (`coordinator.dashboard_trials.OptunaStudy`)
taken from its `RecordSource` at most `max_age` seconds ago: a dashboard request asks the
storage several times (the study, its trials, the best trial), and all of them share one read
of the record. Nothing is copied anywhere else, so the dashboard is never more than `max_age`
seconds behind the source. Every write raises `ReadOnly`: only the coordinator and its workers
write a study's record.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import Any, NoReturn

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from common.errors import ReadOnly
from coordinator.dashboard_source import RecordSource
from coordinator.dashboard_trials import STUDY_ID, OptunaStudy, optuna_study

DEFAULT_MAX_AGE = 1.0
"""Seconds a snapshot of the study answers reads before the record is read again."""


def read_only(action: str) -> ReadOnly:
    """The error for a write the dashboard refuses; `action` says what was asked."""
    return ReadOnly(
        f"the dashboard is read-only: {action} is refused (a zoomtune study is written only by "
        "its coordinator and workers; use `coordinator cancel` or `delete` to change it)"
    )


class ReadOnlyStorage(BaseStorage):
    """optuna's `BaseStorage` over one zoomtune study; every write raises `ReadOnly`."""

    def __init__(
        self,
        source: RecordSource,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.max_age = max_age
        self.clock = clock
        self.reads = 0
        """How many times the record was read (for tests and measurements)."""
        self._lock = threading.Lock()
        self._snapshot: tuple[float, OptunaStudy] | None = None

    def snapshot(self) -> OptunaStudy:
        """The study as read at most `max_age` seconds ago (read now if older)."""
        with self._lock:
            now = self.clock()
            if self._snapshot is None or now - self._snapshot[0] >= self.max_age:
                study = optuna_study(self.source.read())
                self.reads += 1
                self._snapshot = (self.clock(), study)
            return self._snapshot[1]

    # Reads

    def get_all_studies(self) -> list[FrozenStudy]:
        return [self.snapshot().study]

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name != self.snapshot().study.study_name:
            raise KeyError(f"no study named {study_name!r} here")
        return STUDY_ID

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._study(study_id).study.study_name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._study(study_id).directions

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._study(study_id).study.user_attrs)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._study(study_id).study.system_attrs)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        self._trial(self._study(study_id), trial_number)
        return trial_number

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.get_trial(trial_id).number

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._trial(self.snapshot(), trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = [t for t in self._study(study_id).trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _study(self, study_id: int) -> OptunaStudy:
        if study_id != STUDY_ID:
            raise KeyError(f"no study with id {study_id} here")
        return self.snapshot()

    @staticmethod
    def _trial(study: OptunaStudy, trial_id: int) -> FrozenTrial:
        for trial in study.trials:
            if trial.number == trial_id:
                return trial
        raise KeyError(f"no trial with id {trial_id} in study {study.study.study_name!r}")

    # Writes: all refused

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        raise read_only("creating a study")

    def delete_study(self, study_id: int) -> None:
        raise read_only("deleting the study")

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        raise read_only(f"setting the study's user attribute {key!r}")

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        raise read_only(f"setting the study's system attribute {key!r} (a note?)")

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        raise read_only("adding a trial")

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        raise read_only(f"setting parameter {param_name!r} of trial {trial_id}")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        raise read_only(f"telling trial {trial_id} {state.name}")

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        raise read_only(f"reporting a value for trial {trial_id}")

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        raise read_only(f"setting user attribute {key!r} of trial {trial_id}")

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        raise read_only(f"setting system attribute {key!r} of trial {trial_id}")

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> NoReturn:
        raise read_only(f"changing trial {trial_id}")
