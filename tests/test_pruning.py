"""Early stopping's rungs: thresholds from a fixed reference, kept only where they are safe."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.pruning_sim import SimTrial, best_score, simulate, study_spec
from zoomtune.common.study import StudySpec
from zoomtune.common.study_settings import EarlyStopping
from zoomtune.common.trial import Rung, TrialStatus, pruned_at, sorted_curve, value_at
from zoomtune.coordinator.pruning import (
    RECENT_TRIALS,
    STRICT_KEEP,
    ReferenceCurve,
    halving_steps,
    rung_steps,
    rungs_for,
)

HALVING = EarlyStopping(rule="halving", min_step=1, reduction_factor=3, min_trials=8)
MEDIAN = EarlyStopping(rule="median", min_step=1, min_trials=8)
STEPS = 30


def curve(
    trial: int, values: list[float], status: TrialStatus = TrialStatus.COMPLETE
) -> ReferenceCurve:
    """A reference trial that reported values[i] at step i + 1 (and, when COMPLETE, ended with
    the last one as its score)."""
    steps = tuple(range(1, len(values) + 1))
    score = values[-1] if status is TrialStatus.COMPLETE else None
    return ReferenceCurve(trial, status, steps, tuple(values), score)


def predictive(rng: np.random.Generator, n: int, noise: float = 0.01) -> list[ReferenceCurve]:
    """Accuracy-like curves that rise at about the same pace to different plateaus: the early
    ranking predicts the final one, up to noise."""
    curves = []
    for trial in range(n):
        final, tau = rng.uniform(0.5, 0.95), rng.uniform(4, 6)
        values = [final * (1 - math.exp(-t / tau)) + rng.normal(0, noise) for t in range(1, 31)]
        curves.append(curve(trial, values))
    return curves


def crossing(rng: np.random.Generator, n: int, noise: float = 0.01) -> list[ReferenceCurve]:
    """Short-horizon bias: a large learning rate (u near 1) rises sooner and ends lower, so the
    early ranking is the reverse of the final one."""
    curves = []
    for trial in range(n):
        u = rng.uniform(0, 1)
        tau, final = 1 + 30 * (1 - u) ** 2, 0.95 - 0.5 * u**2
        values = [final * (1 - math.exp(-t / tau)) + rng.normal(0, noise) for t in range(1, 31)]
        curves.append(curve(trial, values))
    return curves


def inexact(
    reference: list[ReferenceCurve], maximize: bool = True, worst: int = 4
) -> list[ReferenceCurve]:
    """The same curves with the final values of the `worst` worst trials in reverse order: the
    ranking at a step still predicts the final one (Spearman ~0.8 for 4 of 8 to 9 trials or 16
    of 32, the leaders unchanged), but not exactly, so no rung is tightened to the top
    STRICT_KEEP."""
    sign = 1.0 if maximize else -1.0
    worst_first = sorted(reference, key=lambda c: sign * (c.score or 0.0))[:worst]
    finals = {
        c.trial: w.values[-1] for c, w in zip(worst_first, reversed(worst_first), strict=True)
    }
    out = []
    for c in reference:
        if c.trial in finals:
            values = (*c.values[:-1], finals[c.trial])
            c = ReferenceCurve(c.trial, c.status, c.steps, values, values[-1])
        out.append(c)
    return out


def first_cut(rungs: tuple[Rung, ...], reference: ReferenceCurve, maximize: bool) -> Rung | None:
    """Where a trial with the reference's curve would be pruned, asking after every report."""
    for end in range(1, len(reference.steps) + 1):
        cut = pruned_at(rungs, reference.steps[:end], reference.values[:end], maximize)
        if cut is not None:
            return cut
    return None


def best(reference: list[ReferenceCurve], maximize: bool = True) -> ReferenceCurve:
    sign = 1.0 if maximize else -1.0
    return max(reference, key=lambda c: sign * (c.score or 0.0))


# --- the judging rule shared with the workers ------------------------------------------------


def test_a_curve_is_judged_at_the_first_step_it_reported_at_or_after_the_rung() -> None:
    steps, values = sorted_curve([(2, 0.1), (4, 0.3), (2, 0.2), (8, 0.5)])

    assert (steps, values) == ((2, 4, 8), (0.2, 0.3, 0.5))  # the last value at a step counts
    assert value_at(steps, values, 1) == 0.2
    assert value_at(steps, values, 3) == 0.3
    assert value_at(steps, values, 8) == 0.5
    assert value_at(steps, values, 9) is None


def test_a_rung_keeps_ties_and_knows_the_direction() -> None:
    rung = Rung(3, 0.5)

    assert (rung.keeps(0.5, maximize=True), rung.keeps(0.5, maximize=False)) == (True, True)
    assert (rung.keeps(0.6, maximize=True), rung.keeps(0.6, maximize=False)) == (True, False)
    assert (rung.keeps(0.4, maximize=True), rung.keeps(0.4, maximize=False)) == (False, True)


def test_a_trial_is_cut_at_the_first_rung_it_fails_and_not_before_reaching_it() -> None:
    rungs = (Rung(1, 0.1), Rung(3, 0.5))

    assert pruned_at(rungs, (1, 2), (0.2, 0.3), maximize=True) is None  # rung 3 not reached
    assert pruned_at(rungs, (1, 2, 3), (0.2, 0.3, 0.4), maximize=True) == Rung(3, 0.5)
    assert pruned_at(rungs, (1,), (0.0,), maximize=True) == Rung(1, 0.1)


# --- which steps carry a rung ------------------------------------------------------------------


def test_halving_rungs_are_at_min_step_times_powers_of_eta_below_the_last_step() -> None:
    assert halving_steps(HALVING, below=30) == [1, 3, 9, 27]
    assert halving_steps(EarlyStopping(min_step=2, reduction_factor=2), below=16) == [2, 4, 8]
    assert halving_steps(EarlyStopping(min_step=0), below=10) == [1, 3, 9]  # 0 counts as 1
    assert rung_steps(HALVING, [1, 2, 3, 27]) == [1, 3, 9]


def test_median_rungs_are_at_every_reported_step_from_min_step_on_but_the_last() -> None:
    assert rung_steps(EarlyStopping(rule="median", min_step=3), [1, 2, 3, 5, 8]) == [3, 5]
    assert rung_steps(EarlyStopping(rule="none"), [1, 2, 3]) == []


def test_no_reference_gives_no_rungs() -> None:
    assert rungs_for(HALVING, [], maximize=True) == ()
    assert rungs_for(MEDIAN, [], maximize=True) == ()


def test_the_none_rule_gives_no_rungs() -> None:
    reference = predictive(np.random.default_rng(0), 32)

    assert rungs_for(EarlyStopping(rule="none"), reference, maximize=True) == ()


# --- thresholds ----------------------------------------------------------------------------


def test_halving_keeps_the_top_third_and_median_the_better_half() -> None:
    # Given 9 trials ranked identically at every step but the last (a predictive reference)
    reference = inexact([curve(i, [i * 0.1 * t / 10 for t in range(1, 11)]) for i in range(1, 10)])

    halving = rungs_for(HALVING, reference, maximize=True)
    median = rungs_for(MEDIAN, reference, maximize=True)

    # Then halving at step 1 lets through the best 9 // 3 = 3 values, median the best 5
    assert [r.step for r in halving] == [1, 3, 9]
    assert halving[0].threshold == pytest.approx(0.07)  # the third best of 0.01..0.09
    assert median[0].threshold == pytest.approx(0.05)
    assert [r.step for r in median] == list(range(1, 10))


def test_minimize_ranks_low_values_first() -> None:
    reference = inexact(
        [curve(i, [i * 0.1 * t for t in range(1, 11)]) for i in range(1, 10)], maximize=False
    )

    halving = rungs_for(HALVING, reference, maximize=False)

    assert halving[0].step == 1
    assert halving[0].threshold == pytest.approx(0.3)  # the third lowest of 0.1..0.9
    assert all(first_cut(halving, c, maximize=False) is None for c in reference[:3])
    assert first_cut(halving, reference[-1], maximize=False) == halving[0]


def test_pruned_reference_trials_count_up_to_where_they_stopped() -> None:
    # Given 8 complete trials and 4 pruned at step 3 with the worst values
    complete = inexact([curve(i, [0.5 + 0.05 * i] * 10) for i in range(8)])
    pruned = [curve(8 + i, [0.1] * 3, TrialStatus.PRUNED) for i in range(4)]

    rungs = {r.step: r for r in rungs_for(HALVING, complete + pruned, maximize=True)}

    # Then at step 1 the cut is the 12 // 3 = 4th best of all 12; at step 9, of the 8 left
    assert rungs[1].threshold == pytest.approx(0.5 + 0.05 * 4)
    assert rungs[9].threshold == pytest.approx(0.5 + 0.05 * 6)


def test_failed_reference_trials_are_ignored() -> None:
    reference = predictive(np.random.default_rng(1), 16)
    failed = [curve(100 + i, [0.0] * 30, TrialStatus.FAILED) for i in range(16)]

    assert rungs_for(HALVING, reference + failed, True) == rungs_for(HALVING, reference, True)


def test_thresholds_come_from_the_recent_reference_trials() -> None:
    # Given 40 old trials far below 32 recent ones (a later round in a narrower box)
    rng = np.random.default_rng(3)
    old = [curve(i, [0.1 + 0.001 * i] * 9 + [0.1 + 0.001 * i]) for i in range(40)]
    recent = inexact(
        [curve(40 + i, [0.5 + 0.01 * i + rng.normal(0, 0.001)] * 10) for i in range(RECENT_TRIALS)],
        worst=RECENT_TRIALS // 2,
    )

    rungs = rungs_for(HALVING, old + recent, maximize=True)

    # Then the cut at step 1 keeps the top 32 // 3 = 10 of the recent values, not the top 24
    # of all 72 (which every recent trial would pass)
    top = sorted((c.at(1) or 0.0 for c in recent), reverse=True)
    assert rungs[0].step == 1
    assert rungs[0].threshold == pytest.approx(top[RECENT_TRIALS // 3 - 1])


def test_tightening_judges_the_ranking_on_the_latest_completed_trials_at_the_step() -> None:
    # Given 12 complete trials ranked at every step as at the end, then 28 trials (a round that
    # pruned well) cut at step 3 below all of them: only 4 of the 32 latest trials are COMPLETE
    complete = [curve(i, [(0.5 + 0.02 * i) * t / 10 for t in range(1, 11)]) for i in range(12)]
    pruned = [
        curve(12 + i, [0.01 * t + 0.0001 * i for t in range(1, 4)], TrialStatus.PRUNED)
        for i in range(RECENT_TRIALS - 4)
    ]

    rungs = {r.step: r for r in rungs_for(HALVING, complete + pruned, maximize=True)}

    # Then the 12 latest COMPLETE trials that reached steps 1 and 3 show the ranking there is
    # exact, and those rungs keep only the top STRICT_KEEP of the 32 latest values (not 32 // 3)
    for step in (1, 3):
        values = sorted((c.at(step) or 0.0 for c in (complete + pruned)[-32:]), reverse=True)
        assert rungs[step].threshold == pytest.approx(values[STRICT_KEEP - 1])


def test_the_median_rule_takes_every_reference_trial_and_is_never_tightened() -> None:
    # Given 40 old trials below 32 recent ones, all ranked at every step as at the end
    old = [curve(i, [0.1 + 0.001 * i] * 10) for i in range(40)]
    recent = [curve(40 + i, [0.5 + 0.01 * i] * 10) for i in range(RECENT_TRIALS)]

    rungs = rungs_for(MEDIAN, old + recent, maximize=True)

    # Then its cut is the median of all 72 values at the step
    everything = [c.at(1) or 0.0 for c in old + recent]
    assert rungs[0].threshold == pytest.approx(float(np.median(everything)))


def test_where_the_ranking_at_a_step_is_the_final_one_a_rung_keeps_only_the_top_two() -> None:
    # Given 9 trials ranked identically at every step, to the end
    reference = [curve(i, [i * 0.1 * t / 10 for t in range(1, 11)]) for i in range(1, 10)]

    rungs = rungs_for(HALVING, reference, maximize=True)

    # Then each rung lets through the best STRICT_KEEP values of the reference at its step
    assert [r.step for r in rungs] == [1, 3, 9]
    for rung in rungs:
        values = sorted((c.at(rung.step) or 0.0 for c in reference), reverse=True)
        assert rung.threshold == pytest.approx(values[STRICT_KEEP - 1])
    assert first_cut(rungs, best(reference), maximize=True) is None
    assert first_cut(rungs, reference[-3], maximize=True) == rungs[0]


# --- the safety check ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", [HALVING, MEDIAN], ids=["halving", "median"])
def test_predictive_curves_get_rungs_from_the_first_step(rule: EarlyStopping) -> None:
    for seed in range(10):
        reference = predictive(np.random.default_rng(seed), 16)

        rungs = rungs_for(rule, reference, maximize=True)

        assert rungs, f"seed {seed}"
        assert rungs[0].step <= 3, f"seed {seed}: {rungs}"
        assert first_cut(rungs, best(reference), maximize=True) is None


@pytest.mark.parametrize("rule", [HALVING, MEDIAN], ids=["halving", "median"])
def test_on_crossing_curves_early_rungs_are_dropped_and_the_winner_survives(
    rule: EarlyStopping,
) -> None:
    for seed in range(10):
        reference = crossing(np.random.default_rng(seed), 16)

        rungs = rungs_for(rule, reference, maximize=True)

        # Where the early ranking is inverted there is no rung at all
        assert all(r.step >= 9 for r in rungs), f"seed {seed}: {rungs}"
        # And the final best of the reference would never be pruned
        assert first_cut(rungs, best(reference), maximize=True) is None


def test_without_the_safety_check_crossing_curves_would_kill_the_winner() -> None:
    """What the check prevents: halving's plain threshold at step 1 cuts the eventual best."""
    reference = crossing(np.random.default_rng(0), 16)
    values = sorted((c.at(1) or 0.0 for c in reference), reverse=True)
    plain = Rung(1, values[len(values) // 3 - 1])

    assert not plain.keeps(best(reference).at(1) or 0.0, maximize=True)


def test_a_rung_needs_min_trials_completed_reference_trials() -> None:
    reference = predictive(np.random.default_rng(2), 7)

    assert rungs_for(HALVING, reference, maximize=True) == ()
    assert rungs_for(EarlyStopping(min_trials=7), reference, maximize=True) != ()


def test_a_rung_that_would_cut_a_leader_is_dropped() -> None:
    # Given a perfectly ranked reference but for the final best trial, worst until step 9
    reference = [curve(i, [0.1 * i + 0.001 * t for t in range(1, 31)]) for i in range(1, 16)]
    late = curve(99, [0.0] * 9 + [5.0] * 21)

    rungs = rungs_for(HALVING, [*reference, late], maximize=True)

    # Then only rungs at which it is already ahead are kept (rho alone would keep step 1)
    assert [r.step for r in rungs] == [27]
    assert first_cut(rungs, late, maximize=True) is None


def test_constant_values_at_a_step_say_nothing_and_give_no_rung() -> None:
    reference = [curve(i, [0.5] * 5 + [0.1 * i] * 5) for i in range(12)]

    assert [r.step for r in rungs_for(MEDIAN, reference, maximize=True)] == [6, 7, 8, 9]


# --- determinism ---------------------------------------------------------------------------


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 48),
    rule=st.sampled_from([HALVING, MEDIAN]),
    maximize=st.booleans(),
)
def test_the_rungs_depend_on_the_reference_set_not_on_its_order(
    seed: int, n: int, rule: EarlyStopping, maximize: bool
) -> None:
    rng = np.random.default_rng(seed)
    reference = (predictive if seed % 2 else crossing)(rng, n, noise=0.03)
    shuffled = list(reference)
    random.Random(seed).shuffle(shuffled)

    rungs = rungs_for(rule, reference, maximize)

    assert rungs_for(rule, shuffled, maximize) == rungs
    assert rungs_for(rule, reference, maximize) == rungs
    assert [r.step for r in rungs] == sorted({r.step for r in rungs})
    assert all(math.isfinite(r.threshold) for r in rungs)
    if reference:
        assert first_cut(rungs, best(reference, maximize), maximize) is None


def test_the_median_rule_keeps_at_most_max_rungs() -> None:
    reference = [curve(i, [0.001 * i * t for t in range(1, 3001)]) for i in range(1, 10)]

    rungs = rungs_for(MEDIAN, reference, maximize=True)

    assert 0 < len(rungs) <= 1000
    assert rungs[0].step == 1


# --- whole studies (bench/pruning_sim.py: the coordinator's rule over synthetic training) ---


def study(seed: int, q: int, rounds: int, curve_kind: str, rule: str, lag: int = 0) -> StudySpec:
    return study_spec(
        seed,
        q,
        rounds,
        curve_kind,
        27,
        {"search": {"lag": lag}, "early_stopping": {"rule": rule}},
    )


def epochs_share(trials: list[SimTrial]) -> float:
    return sum(t.epochs for t in trials) / (27 * len(trials))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_predictive_curves_a_study_runs_under_half_its_epochs_and_keeps_its_best(
    seed: int,
) -> None:
    plain = simulate(study(seed, 16, 6, "predictive", "none"))
    pruned = simulate(study(seed, 16, 6, "predictive", "halving"))

    assert epochs_share(plain) == 1.0
    assert epochs_share(pruned) < 0.47
    assert best_score(pruned) >= best_score(plain) - 0.002


@pytest.mark.parametrize("shape", [(16, 6), (8, 12), (32, 3)], ids=["16x6", "8x12", "32x3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_crossing_curves_no_pruned_trial_would_have_ended_best(
    seed: int, shape: tuple[int, int]
) -> None:
    trials = simulate(study(seed, *shape, "crossing", "halving"))

    # (t.final: the score a pruned trial would have ended with, had it run every epoch)
    assert all(t.final < best_score(trials) for t in trials if t.score is None)


@pytest.mark.parametrize("curve_kind", ["predictive", "crossing"])
@pytest.mark.parametrize("lag", [0, 4])
def test_the_pruned_set_is_the_same_in_any_finish_order(curve_kind: str, lag: int) -> None:
    spec = study(0, 8, 6, curve_kind, "halving", lag)
    in_order = simulate(spec)

    for order in range(5):
        assert simulate(spec, random.Random(order)) == in_order, f"order {order}"
    assert any(t.score is None for t in in_order)
