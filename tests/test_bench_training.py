"""bench/training.py's pure parts: the study file it writes and what it measures of a run."""

from __future__ import annotations

import math

import pytest

from bench.training import (
    Case,
    Run,
    TrialSpan,
    cases,
    final_score_of,
    parse_configs,
    study_document,
    toml_text,
)
from zoomtune.common.study import StudySpec

CASE = Case(16, 6, pruning=False, curve="predictive")


def test_the_study_file_it_writes_is_a_valid_study_of_the_configuration() -> None:
    document = study_document("run-1", 3, CASE, epochs=27, scale=0.04, extras=())
    spec = StudySpec.from_toml(toml_text(document))
    assert (spec.name, spec.seed, spec.maximize) == ("run-1", 3, True)
    assert spec.search.total_trials == 96
    assert spec.objective.name == "synthetic-training"
    assert spec.objective.options == {"epochs": 27, "scale": 0.04, "curve": "predictive"}
    assert {p.name for p in spec.space} == {
        "learning_rate",
        "width",
        "depth",
        "momentum",
        "dropout",
    }


def test_extras_are_merged_into_the_study_file_as_given() -> None:
    extras = ["search = { explore = 0.1 }", "[resources]\ntimeout = '20m'", ""]
    document = study_document("run-1", 0, CASE, epochs=27, scale=0.04, extras=extras)
    assert document["search"] == {"rounds": 6, "trials_per_round": 16, "explore": 0.1}
    assert document["resources"] == {"timeout": "20m"}
    spec = StudySpec.from_toml(toml_text(document))
    assert spec.search.explore == 0.1


def test_a_run_measures_busy_slot_seconds_over_slots_times_wall() -> None:
    spans = (
        TrialSpan(start=10.0, finish=14.0, epochs=27, final=0.9, work=3.5),
        TrialSpan(start=10.0, finish=12.0, epochs=3, final=None, work=1.5),
        TrialSpan(start=12.0, finish=14.0, epochs=27, final=0.8, work=2.0),
    )
    run = Run("optuna", CASE, 0, slots=2, epochs_per_trial=27, spans=spans, elapsed=5.0)
    assert run.wall == 4.0
    assert run.utilization == pytest.approx(8.0 / (2 * 4.0))
    assert run.work_utilization == pytest.approx(7.0 / (2 * 4.0))
    assert run.epochs == 57
    assert run.epochs_share == pytest.approx(57 / 81)
    assert run.best == 0.9


def test_only_trials_that_ran_every_epoch_have_a_final_score() -> None:
    assert final_score_of({1: 0.2, 2: 0.5, 3: 0.9}, epochs=3) == 0.9
    assert final_score_of({1: 0.2, 2: 0.95}, epochs=3) is None  # stopped after epoch 2
    run = Run("zoomtune", CASE, 0, 1, 27, (TrialSpan(0, 1, 3, None, 1.0),), 1.0)
    assert math.isnan(run.best)


def test_the_matrix_has_runs_without_pruning_per_configuration_and_with_it_per_curve() -> None:
    matrix = cases(parse_configs("16x6, 8x12"), parse_configs("16x6"), ["predictive", "crossing"])
    assert [c.key for c in matrix] == [
        "16x6",
        "8x12",
        "16x6-predictive-prune",
        "16x6-crossing-prune",
    ]
    assert matrix[3].unpruned() == matrix[0]
    with pytest.raises(SystemExit, match="TRIALSxROUNDS"):
        parse_configs("16*6")
