"""One process of distributed Optuna, the baseline of bench/training.py.

    python -m bench.optuna_worker SETTINGS_JSON

It loads the study from `optuna.storages.JournalStorage(JournalRedisBackend(url))` with TPE
(`constant_liar=True`, seeded with seed * 1000 + index) and, if asked, the
`SuccessiveHalvingPruner` (with the settings' `min_resource` and `reduction_factor`), says it
is ready, waits for the start signal, then runs trials until the run's shared counter in Redis
passes `trials` (an INCR per trial, so that the processes together run exactly that many).
Each trial is the built-in `synthetic-training` objective itself, given an adapter that turns
its `trial.report(step, value)` and `trial.should_prune()` into Optuna's; a trial told to
prune is told PRUNED.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from bench.methods import from_optuna, optuna_distribution
from zoomtune.common.study import StudySpec
from zoomtune.workers.objectives.training import synthetic_training


@dataclass
class OptunaTrial:
    """What the objective sees of an Optuna trial: `options`, `report`, `should_prune`."""

    trial: Any
    options: Mapping[str, Any]
    pruned: bool = False

    def report(self, step: int, value: float) -> None:
        self.trial.report(value, step)

    def should_prune(self) -> bool:
        self.pruned = bool(self.trial.should_prune())
        return self.pruned


@dataclass(frozen=True)
class WorkerSettings:
    url: str
    journal_prefix: str
    study: str
    index: int
    seed: int
    trials: int
    pruning: bool
    min_resource: int | str
    reduction_factor: int
    study_document: dict[str, Any]
    """The zoomtune study of the same run: its space and objective options are used here."""
    ready_key: str
    go_key: str
    count_key: str


def run(settings: WorkerSettings) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    spec = StudySpec.from_dict(settings.study_document)
    options = dict(spec.objective.options)
    distributions = {param.name: optuna_distribution(param) for param in spec.space}
    storage = JournalStorage(JournalRedisBackend(settings.url, prefix=settings.journal_prefix))
    sampler = optuna.samplers.TPESampler(
        seed=settings.seed * 1000 + settings.index, constant_liar=True
    )
    pruner: Any = (
        optuna.pruners.SuccessiveHalvingPruner(
            min_resource=settings.min_resource, reduction_factor=settings.reduction_factor
        )
        if settings.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(
        study_name=settings.study, storage=storage, sampler=sampler, pruner=pruner
    )
    client = redis.Redis.from_url(settings.url)
    client.rpush(settings.ready_key, settings.index)
    client.blpop([settings.go_key], timeout=0)
    while int(client.incr(settings.count_key)) <= settings.trials:
        trial = study.ask(distributions)
        adapter = OptunaTrial(trial, options)
        value = synthetic_training(from_optuna(spec.space, trial.params), adapter)
        if adapter.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    client.close()


def main() -> None:
    run(WorkerSettings(**json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
