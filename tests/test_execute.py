"""What a worker does with one delivered message (in-process, on fakeredis)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import fakeredis
import pytest

from tests.harness import study_toml
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Rung, TrialMessage, TrialStatus
from zoomtune.workers.execute import WorkerRuntime, execute, score_result
from zoomtune.workers.registry import ObjectiveRegistry

SPACE = 'x = { type = "float", low = 0.0, high = 1.0 }\ny = { type = "int", low = 1, high = 8 }'


def make_runtime(
    objective: Callable[..., Any],
    *,
    retry_failed: bool = False,
    rungs: Sequence[Sequence[float]] = (),
    space: str = SPACE,
    trials: Sequence[dict[str, Any]] = ({"x": 0.5, "y": 2}, {"x": 0.25, "y": 7}),
    rungs_since: Sequence[Sequence[float]] | None = None,
) -> WorkerRuntime:
    """A worker runtime with `objective` registered as "obj" and one study with 2 trials
    (written with early-stopping `rungs`, [[step, threshold], ...]; with `rungs_since`, written
    ahead with `rungs` and then given these in place, as when a round run ahead is revised)."""
    client = fakeredis.FakeRedis(decode_responses=True)
    resources = 'heartbeat = "0.5s"\nlease = "3s"\nmax_attempts = 2'
    if retry_failed:
        resources += "\nretry_failed = true"
    spec = StudySpec.from_toml(
        study_toml(objective="obj", space=space, resources=resources, options="{ alpha = 2 }")
    )
    store = StudyStore(client, "zoomtune:", spec.name)
    lock = store.acquire(30)
    epoch = store.create(lock, spec.to_dict(), spec.resources.max_attempts)
    stored_rungs = [Rung(int(step), float(threshold)) for step, threshold in rungs]
    ahead = rungs_since is not None
    store.write_round(lock, epoch, 1, {}, list(trials), stored_rungs, provisional=ahead)
    if rungs_since is not None:
        since = [Rung(int(step), float(threshold)) for step, threshold in rungs_since]
        store.revise_round(lock, epoch, 1, {}, list(trials), since, provisional=True)
    registry = ObjectiveRegistry(targets={"obj": "unused:obj"})
    registry._loaded["obj"] = objective
    return WorkerRuntime(Settings(broker_url="redis://unused"), registry, "w1@host", _client=client)


def test_a_parameter_inactive_in_the_trial_is_refused_and_never_asked_for() -> None:
    # Given a study where x applies only to branch "a"; trial 1 is a "b" trial, without x
    space = (
        'branch = { type = "choice", values = ["a", "b"] }\n'
        'x = { type = "float", low = 0.0, high = 1.0, when = { branch = "a" } }\n'
        'y = { type = "int", low = 1, high = 8 }'
    )
    b_trial = {"branch": "b", "y": 7}
    ran: list[dict[str, Any]] = []

    def objective(params: dict[str, Any], trial: Any) -> float:
        ran.append(params)
        return 1.0

    trials = [{"branch": "a", "x": 0.5, "y": 2}, b_trial]
    runtime = make_runtime(objective, space=space, trials=trials)
    # When a message for it carries an x anyway, it is dropped without running anything
    with_x = TrialMessage("demo", 1, 1, "obj", {**b_trial, "x": 0.3}).to_dict()
    assert execute(with_x, runtime) == "bad_params"
    assert ran == []
    # And the trial as sampled, without x, runs
    assert execute(TrialMessage("demo", 1, 1, "obj", b_trial).to_dict(), runtime) == "ok"
    assert ran == [b_trial]


def message(trial: int = 0, attempt: int = 1, **changes: Any) -> dict[str, Any]:
    params = {0: {"x": 0.5, "y": 2}, 1: {"x": 0.25, "y": 7}}.get(trial, {"x": 0.5, "y": 2})
    body = TrialMessage("demo", trial, attempt, "obj", params).to_dict()
    body.update(changes)
    return body


def trial_of(runtime: WorkerRuntime, number: int = 0) -> Any:
    return runtime.store("demo").trial(number)


def test_a_valid_message_runs_the_objective_with_params_and_options() -> None:
    seen: dict[str, Any] = {}

    def objective(params: dict[str, Any], trial: Any) -> float:
        seen.update(params=params, options=dict(trial.options), device=trial.device)
        return params["x"] * 2

    runtime = make_runtime(objective)
    assert execute(message(), runtime) == "ok"
    assert seen == {"params": {"x": 0.5, "y": 2}, "options": {"alpha": 2}, "device": "cpu"}
    trial = trial_of(runtime)
    assert (trial.status, trial.score, trial.worker) == (TrialStatus.COMPLETE, 1.0, "w1@host")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not a dict", "malformed"),
        ({"study": "demo"}, "malformed"),
        (message(objective="os:system"), "malformed"),
        (message(objective="obj\n"), "malformed"),
        (message(study="demo\n"), "malformed"),
        (message(objective="other"), "unknown_objective"),
        (message(params={"x": 5.0, "y": 2}), "bad_params"),
        (message(params={"x": 0.5, "y": 2, "z": 1}), "bad_params"),
        (message(params={"x": 0.5}), "bad_params"),
        (message(study="nosuch"), "unknown_study"),
        (message(trial=99), "unknown_trial"),
        (message(attempt=5), "ahead"),
        (message(params={"x": 0.25, "y": 7}), "forged"),  # trial 1's params, in the space
        (message(params={"x": "a" * 70_000, "y": 2}), "malformed"),
        (message(rungs=[[3, 0.5], [1, 0.2]]), "malformed"),
        (message(rungs=[[1, 0.5], [1, 0.2]]), "malformed"),
        (message(rungs=[[-1, 0.5]]), "malformed"),
        (message(rungs=[[True, 0.5]]), "malformed"),
        (message(rungs=[[1.5, 0.5]]), "malformed"),
        (message(rungs=[[1, math.nan]]), "malformed"),
        (message(rungs=[[1, math.inf]]), "malformed"),
        (message(rungs=[[1, "0.5"]]), "malformed"),
        (message(rungs=[[1, 0.5, 2]]), "malformed"),
        (message(rungs={"1": 0.5}), "malformed"),
        (message(rungs=[[s, 0.5] for s in range(1001)]), "malformed"),
        (message(rung=[]), "malformed"),
    ],
)
def test_a_bad_message_is_dropped_without_running_anything(body: Any, why: str) -> None:
    ran: list[bool] = []
    runtime = make_runtime(lambda params, trial: ran.append(True) or 0.0)
    assert execute(body, runtime) == why
    assert ran == []
    assert trial_of(runtime).status is TrialStatus.QUEUED


def test_a_worker_without_the_studys_objective_records_why_on_the_trial() -> None:
    # Given a worker on which the study's objective "obj" is not registered
    runtime = make_runtime(lambda params, trial: 0.0)
    runtime.registry.targets.clear()
    after = runtime.store("demo").last_event_id()

    # When it is delivered a trial of the study
    assert execute(message(), runtime) == "unknown_objective"

    # Then the trial stays queued for a worker that has it, marked with the reason
    trial = trial_of(runtime)
    assert trial.status is TrialStatus.QUEUED
    assert trial.last_error is not None
    assert "objective 'obj' is not registered on worker w1@host" in trial.last_error
    [event] = runtime.store("demo").events(after, block=0.1)
    assert (event.type, event.trial, event.fields["worker"]) == ("rejected", 0, "w1@host")


def test_a_forged_message_to_a_worker_without_the_objective_stops_nothing() -> None:
    # Given a worker without the study's objective, and a message for the queued trial's
    # attempt with params the trial does not have
    runtime = make_runtime(lambda params, trial: 0.0)
    runtime.registry.targets.clear()
    after = runtime.store("demo").last_event_id()

    # When it is delivered
    assert execute(message(params={"x": 0.75, "y": 2}), runtime) == "unknown_objective"

    # Then no rejection is recorded (it would stop the coordinator), and the forgery is counted
    assert trial_of(runtime).last_error is None
    assert runtime.store("demo").events(after, block=0.05) == []
    assert runtime.store("demo").counters()["forged_messages"] == 1


def test_a_message_naming_another_objective_than_the_studys_is_dropped_without_a_mark() -> None:
    runtime = make_runtime(lambda params, trial: 0.0)
    after = runtime.store("demo").last_event_id()
    assert execute(message(objective="other"), runtime) == "unknown_objective"
    assert trial_of(runtime).last_error is None
    assert runtime.store("demo").events(after, block=0.05) == []


def test_a_second_delivery_of_a_finished_trial_does_not_run_again() -> None:
    calls: list[int] = []
    runtime = make_runtime(lambda params, trial: calls.append(1) or 1.0)
    assert execute(message(), runtime) == "ok"
    assert execute(message(), runtime) == "finished"
    assert calls == [1]
    assert runtime.store("demo").counters()["duplicate_deliveries"] == 1


@pytest.mark.parametrize(
    ("returned", "reason"),
    [
        (math.nan, "objective returned NaN"),
        (math.inf, "objective returned inf"),
        (-math.inf, "objective returned -inf"),
        ("0.9", "objective returned str '0.9', expected a number"),
        (None, "objective returned NoneType None, expected a number"),
        (True, "objective returned bool True, expected a number"),
        ({"accuracy": 0.9}, "objective returned a mapping without a 'score' key"),
        ("x" * 10_000_000, "objective returned str 'xxxx"),
    ],
)
def test_a_bad_return_value_fails_the_trial_with_the_reason(returned: Any, reason: str) -> None:
    runtime = make_runtime(lambda params, trial: returned)
    execute(message(), runtime)
    trial = trial_of(runtime)
    assert trial.status is TrialStatus.FAILED
    assert trial.score is None
    assert trial.error.startswith(reason)
    assert len(trial.error) < 200


def test_a_mapping_with_a_score_and_numpy_numbers_are_accepted() -> None:
    import numpy as np

    assert score_result({"score": np.float32(0.5), "extra": 1}).score == 0.5
    assert score_result(np.int64(3)).score == 3.0


def test_an_exception_fails_the_trial_naming_it_and_where() -> None:
    def objective(params: dict[str, Any], trial: Any) -> float:
        raise ValueError("learning rate too high")

    runtime = make_runtime(objective)
    execute(message(), runtime)
    error = trial_of(runtime).error
    assert error.startswith("ValueError: learning rate too high (at ")
    assert "test_execute.py" in error


def test_a_failure_is_retried_as_a_new_attempt_only_when_the_study_asks() -> None:
    runtime = make_runtime(lambda params, trial: math.nan, retry_failed=True)
    assert execute(message(), runtime) == "requeued"
    trial = trial_of(runtime)
    assert (trial.status, trial.attempt, trial.last_error) == (
        TrialStatus.QUEUED,
        2,
        "objective returned NaN",
    )
    assert execute(message(attempt=2), runtime) == "ok"  # the last attempt is not retried
    assert trial_of(runtime).status is TrialStatus.FAILED


def test_intermediate_values_are_recorded() -> None:
    def objective(params: dict[str, Any], trial: Any) -> float:
        trial.report(1, 0.5)
        trial.report(2, 0.25)
        return 0.25

    runtime = make_runtime(objective)
    execute(message(), runtime)
    assert runtime.store("demo").reports(0) == [(1, 0.5), (2, 0.25)]


def test_reporting_a_non_finite_value_fails_the_trial() -> None:
    runtime = make_runtime(lambda params, trial: trial.report(1, math.nan))
    execute(message(), runtime)
    assert "reported values must be finite" in trial_of(runtime).error


# --- early stopping: trial.should_prune() ------------------------------------------------------


def reports_and_asks(values: list[float]) -> Callable[..., Any]:
    """Reports values[i] at step i + 1 and returns at once when told to prune."""

    def objective(params: dict[str, Any], trial: Any) -> float:
        for step, value in enumerate(values, start=1):
            trial.report(step, value)
            if trial.should_prune():
                return -1.0  # whatever it returns, the trial is pruned
        return values[-1]

    return objective


def test_a_trial_worse_than_a_rung_is_pruned_at_that_step() -> None:
    # Given a minimizing study and a rung at step 2 that keeps values <= 0.5
    runtime = make_runtime(reports_and_asks([0.9, 0.8, 0.7, 0.6]), rungs=[[2, 0.5]])

    assert execute(message(rungs=[[2, 0.5]]), runtime) == "ok"

    trial = trial_of(runtime)
    assert (trial.status, trial.score) == (TrialStatus.PRUNED, None)
    assert (trial.last_step, trial.last_value) == (2, 0.8)
    assert runtime.store("demo").reports(0) == [(1, 0.9), (2, 0.8)]


def test_a_message_sent_before_its_rungs_changed_in_place_runs_on_the_new_ones() -> None:
    # Given a trial of a round run ahead, sent with no rungs, whose round then got a rung at
    # step 1 (its message stays in the queue as it was); an objective that asks only at step 2
    def asks_late(params: dict[str, Any], trial: Any) -> float:
        trial.report(1, 0.9)
        trial.report(2, 0.8)
        if trial.should_prune():
            return -1.0
        return 0.8

    runtime = make_runtime(asks_late, rungs=[], rungs_since=[[1, 0.5]])

    # When a worker runs the old message
    assert execute(message(rungs=[]), runtime) == "ok"

    # Then it ran on the new rungs from its start (pruned where it asked), and is final as it
    # is: nothing left to judge against rungs it did not run with
    trial = trial_of(runtime)
    assert (trial.status, trial.last_step) == (TrialStatus.PRUNED, 2)
    assert runtime.store("demo").to_judge([0]) == set()


def test_a_message_with_loosened_rungs_runs_on_the_stored_ones() -> None:
    # Given a trial (of a study that minimizes) stored with a rung at step 2, and its message
    # with that rung loosened (a forger keeping a trial alive)
    runtime = make_runtime(reports_and_asks([0.3, 0.8, 0.2]), rungs=[[2, 0.5]])

    # When a worker runs it
    assert execute(message(rungs=[[2, 1.0]]), runtime) == "ok"

    # Then it is pruned where the stored rung says
    trial = trial_of(runtime)
    assert (trial.status, trial.last_step, trial.last_value) == (TrialStatus.PRUNED, 2, 0.8)


def test_a_trial_as_good_as_every_rung_completes() -> None:
    runtime = make_runtime(reports_and_asks([0.9, 0.5, 0.3, 0.2]), rungs=[[2, 0.5], [3, 0.3]])

    execute(message(rungs=[[2, 0.5], [3, 0.3]]), runtime)

    trial = trial_of(runtime)
    assert (trial.status, trial.score, trial.last_step) == (TrialStatus.COMPLETE, 0.2, None)


def test_a_trial_is_judged_at_its_first_report_at_or_after_a_rung() -> None:
    def every_other_step(params: dict[str, Any], trial: Any) -> float:
        for step in (2, 4, 6):
            trial.report(step, 1.0)
            if trial.should_prune():
                return 0.0
        return 1.0

    runtime = make_runtime(every_other_step, rungs=[[3, 0.5]])

    execute(message(rungs=[[3, 0.5]]), runtime)

    assert (trial_of(runtime).status, trial_of(runtime).last_step) == (TrialStatus.PRUNED, 4)


def test_an_objective_that_never_asks_is_never_pruned() -> None:
    def reports_only(params: dict[str, Any], trial: Any) -> float:
        trial.report(1, 0.9)
        return 0.9

    runtime = make_runtime(reports_only, rungs=[[1, 0.1]])

    execute(message(rungs=[[1, 0.1]]), runtime)

    assert trial_of(runtime).status is TrialStatus.COMPLETE


def test_a_pruned_trial_that_then_raises_is_still_pruned_and_never_retried() -> None:
    def raises_when_pruned(params: dict[str, Any], trial: Any) -> float:
        trial.report(1, 0.9)
        if trial.should_prune():
            raise RuntimeError("pruned")  # as Optuna users write `raise TrialPruned()`
        return 0.9

    runtime = make_runtime(raises_when_pruned, retry_failed=True, rungs=[[1, 0.1]])

    assert execute(message(rungs=[[1, 0.1]]), runtime) == "ok"

    trial = trial_of(runtime)
    assert (trial.status, trial.attempt, trial.error) == (TrialStatus.PRUNED, 1, None)


def test_should_prune_is_true_once_the_attempt_lost_its_trial_and_its_result_is_dropped() -> None:
    asked: list[bool] = []

    def loses_its_lease(params: dict[str, Any], trial: Any) -> float:
        trial.report(1, 0.1)
        asked.append(trial.should_prune())
        # The reaper takes the trial away (its lease expired) between two reports
        store = runtime.store("demo")
        store.client.hset(store.keys.trial(0), mapping={"status": "queued", "attempt": 2})
        trial.report(2, 0.1)
        asked.append(trial.should_prune())
        return 0.1

    runtime = make_runtime(loses_its_lease)

    assert execute(message(), runtime) == "stale"

    assert asked == [False, True]
    assert (trial_of(runtime).status, trial_of(runtime).attempt) == (TrialStatus.QUEUED, 2)
