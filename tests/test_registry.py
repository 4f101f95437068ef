"""The worker's allow-list of objectives."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zoomtune.common.errors import ObjectiveError
from zoomtune.common.objectives import (
    BUILTIN_OBJECTIVES,
    BUILTIN_OPTIONS,
    builtin_option_problems,
    builtin_options,
)
from zoomtune.workers.registry import BUILTINS, ObjectiveRegistry, load_target


def test_builtins_are_registered_and_load_on_first_use() -> None:
    registry = ObjectiveRegistry.build()
    assert set(BUILTINS) <= set(registry.names())
    assert registry.get("branin").__name__ == "branin"


def test_the_coordinators_list_of_built_in_names_is_the_registrys() -> None:
    # The coordinator checks embedded studies against this list without importing workers.
    assert set(BUILTINS) == BUILTIN_OBJECTIVES


def test_an_unknown_name_is_refused_naming_what_is_known() -> None:
    registry = ObjectiveRegistry.build()
    with pytest.raises(ObjectiveError, match=r"'os:system' is not registered .*branin"):
        registry.get("os:system")


def test_an_objective_file_is_registered_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text("def score(params, trial):\n    return 42.0\n")
    registry = ObjectiveRegistry.build({"mine": f"{path}:score"})
    assert registry.get("mine")({}, None) == 42.0


def test_a_module_function_is_registered() -> None:
    registry = ObjectiveRegistry.build({"sq": "math:sqrt"})
    assert registry.get("sq")(16) == 4.0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:f", "cannot import"),
        ("math:no_such_function", "has no function"),
        ("/nonexistent/file.py:f", "not found"),
        ("not a target", "expected 'module:function'"),
    ],
)
def test_a_bad_target_fails_when_the_worker_starts(target: str, message: str) -> None:
    with pytest.raises(ObjectiveError, match=message):
        load_target(target)


@pytest.mark.parametrize("option", ["noequals", "=math:sqrt", "bad name=math:sqrt", "x=math"])
def test_the_objective_option_must_be_name_equals_target(option: str) -> None:
    with pytest.raises(ObjectiveError, match="--objective takes NAME=module:function"):
        ObjectiveRegistry.parse_option(option)


@pytest.mark.parametrize("option", ["mine\n=m:f", "mine=m:f\n"])
def test_an_objective_option_with_a_trailing_newline_is_refused(option: str) -> None:
    with pytest.raises(ObjectiveError, match="--objective takes NAME=module:function"):
        ObjectiveRegistry.parse_option(option)


@dataclass
class RecordingTrial:
    """What a worker passes an objective, keeping the steps it reports."""

    options: dict[str, Any]
    prune_after: int | None = None
    """`should_prune()` says True once this many steps are reported (None: never)."""
    device: str = "cpu"
    number: int = 0
    steps: list[int] = field(default_factory=list)

    def report(self, step: int, value: float) -> None:
        self.steps.append(step)

    def should_prune(self) -> bool:
        return self.prune_after is not None and len(self.steps) >= self.prune_after


FAST_RUN: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (params, options that keep the run short)
    "branin": ({"x1": 1.0, "x2": 2.0}, {}),
    "hartmann6": ({f"x{i}": 0.5 for i in range(1, 7)}, {}),
    "quadratic": ({"x": 0.5}, {}),
    "sleep": ({"x": 0.5}, {}),
    "sklearn-mlp-digits": ({"learning_rate": 0.01}, {"max_iter": 2}),
    "sklearn-svc-digits": ({"C": 1.0, "gamma": 0.001}, {}),
    "synthetic-training": (
        {"learning_rate": 0.01, "width": 64, "depth": 2, "momentum": 0.9, "dropout": 0.1},
        {"scale": 0.0, "epochs": 3},
    ),
    "torch-mlp-digits": ({"learning_rate": 0.01}, {"epochs": 2}),
}


def run_builtin(name: str, trial: RecordingTrial) -> float:
    if name == "torch-mlp-digits":
        pytest.importorskip("torch")
    params, fast = FAST_RUN[name]
    trial.options = {**fast, **trial.options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning after a few epochs
        return float(ObjectiveRegistry.build().get(name)(params, trial))


def test_every_built_in_has_a_model_of_its_options() -> None:
    assert set(BUILTINS) == set(BUILTIN_OPTIONS)


@pytest.mark.parametrize("name", sorted(BUILTIN_OBJECTIVES))
def test_a_built_in_refuses_the_options_plan_refuses(name: str) -> None:
    # `plan` and `start` check a study's options against BUILTIN_OPTIONS[name]; the objective
    # reads them through the same model, so it refuses what they refuse: a name it does not
    # read, and a bad value of each option it does
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        run_builtin(name, RecordingTrial({"colour": 1}))
    assert builtin_option_problems(name, {"colour": 1})
    for option in BUILTIN_OPTIONS[name].model_fields:
        with pytest.raises(ValueError, match=f"option {option}: "):
            run_builtin(name, RecordingTrial({option: "?"}))
        assert builtin_option_problems(name, {option: "?"})


@pytest.mark.parametrize("name", sorted(BUILTIN_OBJECTIVES))
def test_a_built_in_reports_the_steps_plan_expects_and_stops_when_told(name: str) -> None:
    # Given the last step `plan` expects from its options (0: it reports none)
    expected = builtin_options(name, FAST_RUN[name][1])
    assert expected is not None

    # Then it reports every step up to that one
    trial = RecordingTrial({})
    run_builtin(name, trial)
    assert trial.steps == list(range(1, expected.last_step + 1))

    # And asks `should_prune()` after each, stopping when told
    told = RecordingTrial({}, prune_after=1)
    run_builtin(name, told)
    assert told.steps == trial.steps[:1]


def test_quadratic_refuses_a_log_parameter_without_a_positive_optimum() -> None:
    # log10 of the distance needs an optimum above 0 (the default, 0, has no logarithm)
    assert builtin_option_problems("quadratic", {"log": ["lr"]}) == [
        "for the built-in objective 'quadratic': option log names 'lr', whose distance is taken "
        "in log10, but optimum.lr is not given (its default 0 has no logarithm)"
    ]
    assert (
        "optimum.lr must be > 0, got -1.0"
        in builtin_option_problems("quadratic", {"log": ["lr"], "optimum": {"lr": -1.0}})[0]
    )
    assert builtin_option_problems("quadratic", {"log": ["lr"], "optimum": {"lr": 0.01}}) == []
