"""Conditional parameters: `when = { choice = value(s) }` in [space], from file to report."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from scipy.stats import qmc

from tests.harness import study_toml
from tests.records import simulate
from zoomtune.common.errors import ConfigError
from zoomtune.common.parameters import ChoiceParameter, Condition, FloatParameter, IntParameter
from zoomtune.common.space import Box, Interval, SearchSpace
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.export import StudyRecord, box_volume, trials_csv
from zoomtune.coordinator.importance import parameter_importance
from zoomtune.coordinator.narrowing import narrow
from zoomtune.coordinator.plan import StudyPlan
from zoomtune.coordinator.report import FUNNEL_PNG, Findings, write_report
from zoomtune.coordinator.sampling import sample
from zoomtune.coordinator.search import CoarseToFine, explore_count
from zoomtune.coordinator.views import plan_view, status_view

OPTIMIZERS = """
optimizer = { type = "choice", values = ["sgd", "adam"] }
learning_rate = { type = "float", low = 1e-4, high = 1.0, scale = "log" }
momentum  = { type = "float", low = 0.5, high = 0.99, when = { optimizer = "sgd" } }
nesterov  = { type = "choice", values = [true, false], when = { optimizer = "sgd" } }
dampening = { type = "float", low = 0.0, high = 0.5, when = { nesterov = false } }
beta1     = { type = "float", low = 0.5, high = 0.99, when = { optimizer = "adam" } }
beta2     = { type = "float", low = 0.9, high = 0.9999, when = { optimizer = "adam" } }
epsilon = { type = "float", low = 1e-10, high = 1e-6, scale = "log", when = {optimizer = ["adam"]} }
"""
SGD_ONLY = {"momentum", "nesterov", "dampening"}
ADAM_ONLY = {"beta1", "beta2", "epsilon"}


def spec(space: str = OPTIMIZERS, **kwargs: Any) -> StudySpec:
    return StudySpec.from_toml(study_toml(space=space, **kwargs), source="study.toml")


def refusal(space: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        spec(space)
    return list(caught.value.problems)


def optimizer_score(params: Mapping[str, Any]) -> float:
    """Minimised: adam is better, each branch with its own optimum."""
    lr = math.log10(float(params["learning_rate"]))
    if params["optimizer"] == "sgd":
        return 1.0 + (lr + 1) ** 2 + (math.log10(1 - float(params["momentum"])) + 1.5) ** 2
    return (lr + 3) ** 2 + (math.log10(1 - float(params["beta1"])) + 1) ** 2


# --- the study file ------------------------------------------------------------------------


def test_a_condition_is_read_from_the_file_and_written_back() -> None:
    study = spec()
    assert study.space["momentum"].when == Condition("optimizer", ("sgd",))
    assert study.space["dampening"].when == Condition("nesterov", (False,))
    assert study.space["optimizer"].when is None
    assert study.space.to_dict()["epsilon"]["when"] == {"optimizer": "adam"}
    assert StudySpec.from_dict(study.to_dict()) == study


def test_a_condition_may_allow_several_values() -> None:
    study = spec(
        'opt = { type = "choice", values = ["sgd", "adam", "rmsprop"] }\n'
        'lr = { type = "float", low = 0.1, high = 1.0, when = { opt = ["sgd", "rmsprop"] } }'
    )
    space = study.space
    assert space.is_active("lr", {"opt": "rmsprop"})
    assert not space.is_active("lr", {"opt": "adam"})
    assert space.to_dict()["lr"]["when"] == {"opt": ["sgd", "rmsprop"]}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (
            '{ optimiser = "sgd" }',
            "study.toml: [space.m] when: 'optimiser' is not a parameter of the space, got when = "
            "{ optimiser = \"sgd\" }; did you mean 'optimizer'?",
        ),
        (
            '{ lr = "sgd" }',
            "study.toml: [space.m] when: a condition needs a choice parameter, 'lr' is a float "
            'parameter, got when = { lr = "sgd" }',
        ),
        (
            '{ optimizer = ["sgd", "rmsprop"] }',
            "study.toml: [space.m] when: 'rmsprop' is not a value of choice 'optimizer' (values "
            "['sgd', 'adam']), got when = { optimizer = [\"sgd\", \"rmsprop\"] }",
        ),
        (
            "{ optimizer = [] }",
            "study.toml: [space.m] when: the value of a condition is a choice value or a "
            "non-empty list of them, got when = { optimizer = [] }",
        ),
        (
            '{ optimizer = "sgd", lr = 1 }',
            "study.toml: [space.m] when: a condition names exactly one choice parameter and its "
            'value(s), e.g. when = { optimizer = "sgd" }, got when = {"optimizer": "sgd", "lr": 1}',
        ),
    ],
)
def test_a_bad_condition_is_refused_naming_the_file_the_field_and_the_value(
    when: str, expected: str
) -> None:
    problems = refusal(
        'optimizer = { type = "choice", values = ["sgd", "adam"] }\n'
        'lr = { type = "float", low = 0.1, high = 1.0 }\n'
        f'm = {{ type = "float", low = 0.1, high = 0.9, when = {when} }}'
    )
    assert problems == [expected]


def test_conditions_that_form_a_cycle_are_refused() -> None:
    problems = refusal(
        'a = { type = "choice", values = [1, 2], when = { b = 1 } }\n'
        'b = { type = "choice", values = [1, 2], when = { a = 2 } }\n'
        'c = { type = "choice", values = [1, 2], when = { c = 1 } }'
    )
    assert problems == [
        "study.toml: [space.a] when: conditions form a cycle: a -> b -> a",
        "study.toml: [space.b] when: conditions form a cycle: b -> a -> b",
        "study.toml: [space.c] when: conditions form a cycle: c -> c",
    ]


def test_a_search_space_built_in_code_checks_its_conditions_too() -> None:
    with pytest.raises(ConfigError, match="x: when: 'nope' is not a parameter"):
        SearchSpace((FloatParameter("x", 0, 1, when=Condition("nope", ("a",))),))


# --- activity and sampling -----------------------------------------------------------------


def test_activity_follows_the_chain_of_conditions() -> None:
    space = spec().space
    sgd = {"optimizer": "sgd", "nesterov": False}
    assert space.is_active("dampening", sgd)
    assert not space.is_active("dampening", {**sgd, "nesterov": True})
    # nesterov = false does not count once nesterov itself is inactive
    assert not space.is_active("dampening", {**sgd, "optimizer": "adam"})
    assert space.chain("dampening") == "optimizer = 'sgd' and nesterov = False"


def test_a_trial_has_exactly_its_active_parameters() -> None:
    study = spec()
    for params in sample(study.space, 64, np.random.default_rng(1)):
        expected = {"optimizer", "learning_rate"}
        if params["optimizer"] == "sgd":
            expected |= {"momentum", "nesterov"} | (
                {"dampening"} if not params["nesterov"] else set()
            )
        else:
            expected |= ADAM_ONLY
        assert set(params) == expected
        assert study.space.problems(params) == []


def test_the_draw_is_the_unconditional_draw_without_the_inactive_parameters() -> None:
    conditional = spec().space
    flat = SearchSpace(tuple(_without_condition(p) for p in conditional))
    for method in ("random", "sobol", "lhs", "grid"):
        with_when = sample(conditional, 32, np.random.default_rng(5), method=method)
        without = sample(flat, 32, np.random.default_rng(5), method=method)
        for a, b in zip(with_when, without, strict=True):
            assert a == {name: b[name] for name in a}


def _without_condition(param: Any) -> Any:
    if isinstance(param, ChoiceParameter):
        return ChoiceParameter(param.name, param.values)
    if isinstance(param, IntParameter):
        return IntParameter(param.name, param.low, param.high, param.scale, param.step)
    return FloatParameter(param.name, param.low, param.high, param.scale, param.step)


def test_lhs_keeps_each_parameter_stratified_on_its_branch() -> None:
    # Each of the n slices of a coordinate is used once in all, so at most once in a branch.
    study = spec()
    n = 40
    trials = sample(study.space, n, np.random.default_rng(3), method="lhs")
    for name in ("momentum", "beta1", "learning_rate"):
        param = study.space[name]
        slices = [math.floor(param.to_unit(t[name]) * n) for t in trials if name in t]
        assert len(slices) == len(set(slices)), name


def test_sobol_covers_a_branch_more_evenly_than_random_points() -> None:
    space = SearchSpace(
        (
            ChoiceParameter("a_opt", ("sgd", "adam")),
            FloatParameter("b_x", 0.0, 1.0, when=Condition("a_opt", ("sgd",))),
            FloatParameter("c_y", 0.0, 1.0, when=Condition("a_opt", ("sgd",))),
        )
    )

    def discrepancy(method: str, seed: int) -> float:
        trials = sample(space, 128, np.random.default_rng(seed), method=method)
        points = np.array([[t["b_x"], t["c_y"]] for t in trials if "b_x" in t])
        return float(qmc.discrepancy(points))

    sobol = np.median([discrepancy("sobol", seed) for seed in range(10)])
    uniform = np.median([discrepancy("random", seed) for seed in range(10)])
    assert sobol < uniform / 2


def test_a_worker_refuses_an_inactive_parameter_and_does_not_ask_for_it() -> None:
    space = spec().space
    adam = {
        "optimizer": "adam",
        "learning_rate": 0.01,
        "beta1": 0.9,
        "beta2": 0.99,
        "epsilon": 1e-8,
    }
    assert space.problems(adam) == []
    assert space.problems({**adam, "momentum": 0.9}) == [
        "momentum=0.9 is given but inactive (it applies only when optimizer = 'sgd')"
    ]
    assert space.problems({k: v for k, v in adam.items() if k != "beta1"}) == [
        "missing parameter 'beta1'"
    ]


# --- narrowing -----------------------------------------------------------------------------


def narrow_around_best(
    space: SearchSpace,
    previous: Box,
    ranked: list[tuple[dict[str, Any], float]],
    top_k_setting: int | str,
    pruned: Sequence[dict[str, Any]] = (),
) -> Box:
    """`narrow` around the best of `ranked` (best first), the others as runners-up."""
    return narrow(
        space,
        previous,
        ranked[:1],
        margin=0.0,
        min_shrink=0.1,
        min_width=0.02,
        runners_up=ranked[1:],
        top_k_setting=top_k_setting,
        pruned=pruned,
    )


def test_a_conditional_parameter_narrows_around_the_best_trials_where_it_was_active() -> None:
    space = SearchSpace(
        (
            ChoiceParameter("opt", ("sgd", "adam")),
            FloatParameter("m", 0.0, 1.0, when=Condition("opt", ("sgd",))),
            FloatParameter("b", 0.0, 1.0, when=Condition("opt", ("adam",))),
        )
    )
    # adam wins; the best sgd trial (m = 0.8) is only third
    ranked = [
        ({"opt": "adam", "b": 0.2}, 0.1),
        ({"opt": "adam", "b": 0.25}, 0.2),
        ({"opt": "sgd", "m": 0.8}, 0.3),
        ({"opt": "sgd", "m": 0.1}, 0.9),
    ]
    box = narrow_around_best(space, space.whole_box(), ranked, top_k_setting=1)
    m, b = box["m"], box["b"]
    assert isinstance(m, Interval)
    assert isinstance(b, Interval)
    assert m.low <= 0.8 <= m.high
    assert m.width == pytest.approx(0.1)
    assert b.low <= 0.2 <= b.high
    assert b.width == pytest.approx(0.1)


def test_pruned_trials_count_toward_a_conditional_parameters_k() -> None:
    space = SearchSpace(
        (
            ChoiceParameter("opt", ("sgd", "adam")),
            FloatParameter("m", 0.0, 1.0, when=Condition("opt", ("sgd",))),
        )
    )
    # Two completed sgd trials; early stopping pruned 18 more sgd trials below them
    ranked = [({"opt": "sgd", "m": 0.2}, 0.1), ({"opt": "sgd", "m": 0.7}, 0.2)]
    pruned = [{"opt": "sgd", "m": 0.05 * i} for i in range(18)]

    def m_interval(pruned: list[dict[str, Any]]) -> Interval:
        box = narrow_around_best(space, space.whole_box(), ranked, "auto", pruned)
        m = box["m"]
        assert isinstance(m, Interval)
        return m

    # 20 trials had m: k = ceil(sqrt(20) / 4) = 2, so m holds both completed trials, as
    # without early stopping; counted from the 2 completed alone, k = 1
    with_pruned = m_interval(pruned)
    assert with_pruned.low <= 0.2
    assert with_pruned.high >= 0.7
    assert m_interval([]).high < 0.7


def test_a_conditional_parameter_never_active_keeps_its_previous_region() -> None:
    space = SearchSpace(
        (
            ChoiceParameter("opt", ("sgd", "adam")),
            FloatParameter("m", 0.0, 1.0, when=Condition("opt", ("sgd",))),
        )
    )
    previous = Box({"opt": ("sgd", "adam"), "m": Interval(0.2, 0.6)})
    ranked = [({"opt": "adam"}, 0.1), ({"opt": "adam"}, 0.2)]
    box = narrow_around_best(space, previous, ranked, top_k_setting="auto")
    assert box["m"] == Interval(0.2, 0.6)


def test_the_children_of_a_pruned_branch_leave_the_box_with_it() -> None:
    space = spec().space
    box = Box({**space.whole_box().regions, "optimizer": ("adam",)})
    assert set(space.reachable(box)) == set(space.names) - SGD_ONLY
    assert set(box.to_dict(space)) == set(space.names) - SGD_ONLY
    assert box["momentum"] == Interval(0.0, 1.0)  # kept, in case sgd comes back
    # only nesterov = true pruned: dampening leaves, momentum stays
    box = Box({**space.whole_box().regions, "nesterov": (True,)})
    assert set(box.to_dict(space)) == set(space.names) - {"dampening"}
    assert box_volume(space, box) == pytest.approx(0.5)


def test_a_losing_branch_is_pruned_like_any_choice() -> None:
    study = spec(rounds=5, trials_per_round=24, extra="min_shrink = 0.5")
    record = simulate(study, optimizer_score)
    last = record.rounds[-1].box
    assert last["optimizer"] == {"values": ["adam"]}
    assert not SGD_ONLY & set(last)
    best = record.best()
    assert best is not None
    assert best.params["optimizer"] == "adam"


# --- the search as a whole (property tests) -------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    sampler=st.sampled_from(["random", "sobol", "lhs", "grid"]),
    scores=st.lists(st.floats(-1e3, 1e3) | st.none(), min_size=48, max_size=48),
)
def test_every_trial_has_only_its_active_parameters_each_inside_the_round_box(
    seed: int, sampler: str, scores: list[float | None]
) -> None:
    study = spec(seed=seed, rounds=4, trials_per_round=12, extra=f'sampler = "{sampler}"')
    search = CoarseToFine(study)
    space = study.space
    told = iter(scores)
    while batch := search.ask():
        box = search.box
        in_box = len(batch) - explore_count(study.search.explore, len(batch), search.round)
        for params in batch:
            assert space.problems(params) == []  # nothing inactive, nothing active missing
            assert all(space.is_active(name, params) for name in params)
        for params in batch[:in_box]:
            for name, value in params.items():
                region = box[name]
                if isinstance(region, Interval):
                    param = space[name]
                    unit = param.to_unit(value)
                    low, high = param.from_unit(region.low), param.from_unit(region.high)
                    assert low <= value <= high or region.low - 1e-9 <= unit <= region.high + 1e-9
                else:
                    assert value in region
        search.tell([(params, next(told)) for params in batch])


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32), order=st.randoms(use_true_random=False), lag=st.sampled_from([0, 6])
)
def test_the_trials_do_not_depend_on_the_order_results_come_back_in(
    seed: int, order: Any, lag: int
) -> None:
    # One worker tells results in trial order; four tell them in any order: the same study.
    study = spec(seed=seed, rounds=4, trials_per_round=12, extra=f"lag = {lag}")
    in_order = simulate(study, optimizer_score)
    search = CoarseToFine(study)
    running: list[tuple[int, dict[str, Any]]] = []
    while not search.done:
        while search.can_ask():
            first = search.first_trial(search.rounds_asked + 1)
            running += list(enumerate(search.ask_next(), start=first))
        order.shuffle(running)
        number, params = running.pop()
        search.tell_trial(number, optimizer_score(params))
    assert [t.params for t in search.history] == [t.params for t in in_order.trials]
    assert [b.to_dict(study.space) for b in search.boxes] == [dict(r.box) for r in in_order.rounds]


def test_a_space_without_conditions_samples_as_before() -> None:
    plain = StudySpec.from_toml(study_toml())
    assert not plain.space.conditional
    assert plain.space.reachable(plain.space.whole_box()) == plain.space.names


# --- what a study shows --------------------------------------------------------------------


@pytest.fixture(scope="module")
def record() -> StudyRecord:
    return simulate(spec(rounds=3, trials_per_round=16), optimizer_score)


def test_trials_csv_leaves_an_inactive_parameter_empty(record: StudyRecord) -> None:
    rows = list(csv.DictReader(io.StringIO(trials_csv(record))))
    assert len(rows) == 48
    for row in rows:
        sgd = row["params_optimizer"] == "sgd"
        assert (row["params_momentum"] != "") == sgd
        assert (row["params_beta1"] != "") == (not sgd)


def test_study_json_reads_back_with_its_conditions(record: StudyRecord, tmp_path: Path) -> None:
    from zoomtune.coordinator.export import write_run_dir

    write_run_dir(record, tmp_path)
    back = StudyRecord.from_json_file(tmp_path / "study.json")
    assert back.spec == record.spec
    assert [t.params for t in back.trials] == [t.params for t in record.trials]


def test_importance_edges_status_and_report_handle_inactive_parameters(
    record: StudyRecord, tmp_path: Path
) -> None:
    results = [(t.params, float(t.score or 0.0)) for t in record.completed()]
    shares = parameter_importance(record.spec.space, results)
    assert {s.name for s in shares} == set(record.spec.space.names)
    findings = Findings.of(record)
    out = io.StringIO()
    Console(file=out, width=200).print(status_view(record, findings))
    assert "search box by round" in out.getvalue()
    report = write_report(record, tmp_path)
    assert FUNNEL_PNG in report.images


def test_plan_shows_the_parameters_as_a_tree() -> None:
    out = io.StringIO()
    Console(file=out, width=200).print(plan_view(StudyPlan.from_spec(spec()), 2))
    lines = [line for line in out.getvalue().splitlines() if "│" in line]
    names = [line.split("│")[1].strip() for line in lines]
    start = names.index("optimizer")
    assert names[start : start + 7] == [
        "optimizer",
        "└─ beta1",
        "└─ beta2",
        "└─ epsilon",
        "└─ momentum",
        "└─ nesterov",
        "└─ dampening",
    ]
    dampening = lines[start + 6]
    assert "nesterov = False" in dampening


# --- the example ---------------------------------------------------------------------------


def test_the_example_gives_each_solver_only_its_own_parameters_and_the_objective_runs_them() -> (
    None
):
    from zoomtune.workers.objectives.digits import mlp_digits

    example = StudySpec.from_file(Path(__file__).parents[1] / "examples" / "mlp_digits.toml")
    first = CoarseToFine(example).ask()
    solvers = {params["solver"] for params in first}
    assert solvers == {"sgd", "adam"}
    for params in first[:4]:
        if params["solver"] == "sgd":
            assert {"momentum", "lr_schedule"} <= set(params)
            assert not {"beta1", "beta2", "epsilon"} & set(params)
        else:
            assert {"beta1", "beta2", "epsilon"} <= set(params)
            assert not {"momentum", "lr_schedule"} & set(params)
        trial = _Trial()
        assert 0.0 <= mlp_digits(params, trial) <= 1.0


def test_the_digits_objective_refuses_a_solver_it_does_not_take() -> None:
    from zoomtune.workers.objectives.digits import mlp_digits

    with pytest.raises(ValueError, match="solver must be 'sgd' or 'adam', got solver='lbfgs'"):
        mlp_digits({"solver": "lbfgs"}, _Trial())


class _Trial:
    options: Mapping[str, Any] = {"max_iter": 1}

    def report(self, step: int, value: float) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def test_an_edge_warning_judges_a_conditional_parameter_on_the_trials_that_had_it() -> None:
    # SGD wins, and its best momentum is at the upper bound; Adam trials have no momentum
    def score(params: Mapping[str, Any]) -> float:
        lr = math.log10(float(params["learning_rate"]))
        if params["optimizer"] == "adam":
            return 5.0 + (lr + 3) ** 2
        return (lr + 1) ** 2 + 20 * (0.99 - float(params["momentum"]))

    findings = Findings.of(simulate(spec(rounds=4, trials_per_round=16), score))
    assert [(w.name, w.side) for w in findings.warnings] == [("momentum", "upper")]
