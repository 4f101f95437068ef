"""`coordinator plan STUDY_FILE`: a dry run that validates the file and shows the rounds, the
budget, the first round's trials and the projected time, and writes nothing anywhere."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tests.harness import study_toml
from zoomtune.common import objectives
from zoomtune.common.redis_client import connect
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.cli import main
from zoomtune.coordinator.plan import StudyPlan
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.coordinator.search import CoarseToFine

pytestmark = pytest.mark.redis


CLUSTER_URL = "redis://redis-host:6379/0"
"""A broker that `plan` never contacts: the test studies' objectives live on cluster workers."""


def plan(tmp_path: Path, toml: str, *args: str, embedded: bool = False) -> tuple[int, str]:
    """`coordinator plan` for a cluster (ZOOMTUNE_BROKER_URL set), or for the embedded default."""
    study_file = tmp_path / "study.toml"
    study_file.write_text(toml)
    broker = None if embedded else os.environ.get("ZOOMTUNE_BROKER_URL", CLUSTER_URL)
    result = CliRunner().invoke(
        main,
        ["plan", str(study_file), *args],
        env={"COLUMNS": "160", "ZOOMTUNE_BROKER_URL": broker},
        catch_exceptions=False,
    )
    return result.exit_code, result.output


def test_plan_shows_rounds_budget_first_round_and_projected_time(tmp_path: Path) -> None:
    toml = study_toml(
        rounds=3, trials_per_round=8, options="{ duration = 30 }", extra="explore = 0.25"
    )
    code, out = plan(tmp_path, toml, "--workers", "3")

    assert code == 0, out
    assert "total budget: 24 trials in 3 rounds" in out
    lines = [line.split() for line in out.splitlines()]
    # round, trials, in the narrowed box, over the whole space
    assert ["│", "1", "│", "8", "│", "0", "│", "8", "│"] in lines
    assert ["│", "2", "│", "8", "│", "6", "│", "2", "│"] in lines
    # The first round's trials are exactly the ones `start` will send (seeded)
    first = CoarseToFine(StudySpec.from_toml(toml)).ask()
    for params in first:
        assert f"{params['x']:.4g}" in out
    # 24 trials x 30 s of worker time; 3 workers run them in 8 waves, the next round running
    # ahead in the slots a round leaves idle (speculation, the default; 9 waves without)
    assert "24 trials x 30s = 12:00" in out
    assert "on 3 worker processes at least 4:00 (rounds overlap" in out


def test_plan_without_a_duration_says_the_time_is_unknown(tmp_path: Path) -> None:
    code, out = plan(tmp_path, study_toml())
    assert code == 0
    assert "projected time: unknown (the objective has no `duration` option)" in out


def test_a_bad_study_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    toml = study_toml(space='x = { type = "float", low = 2.0, high = 1.0 }')
    code, out = plan(tmp_path, toml)
    assert code == 2
    assert "[space.x] low <= high must hold, got (low=2.0, high=1.0)" in out


def test_names_with_a_trailing_newline_are_refused_naming_the_field(tmp_path: Path) -> None:
    code, out = plan(tmp_path, study_toml(name="nl\\n"))
    assert code == 2
    assert "[study] name" in out
    assert "got 'nl\\n'" in out

    code, out = plan(tmp_path, study_toml(space='"x\\n" = { type = "float", low = 0, high = 1 }'))
    assert code == 2
    assert '[space."x\\n"] a parameter name' in out


def test_a_missing_objective_file_is_refused(tmp_path: Path) -> None:
    toml = study_toml().replace('name = "sleepy"', 'name = "sleepy"\nentrypoint = "nope.py:f"')
    code, out = plan(tmp_path, toml)
    assert code == 2
    assert "entrypoint: no file" in out


def test_on_the_embedded_default_an_objective_no_local_worker_has_is_refused(
    tmp_path: Path,
) -> None:
    # Given a study whose objective is neither built in nor given an entrypoint
    toml = study_toml(objective="nosuch-objective")

    # When it is planned for the embedded default (no broker)
    code, out = plan(tmp_path, toml, embedded=True)

    # Then it is refused as bad input, naming the objective and the ways out
    assert code == 2, out
    text = " ".join(out.split())
    assert "[objective] name 'nosuch-objective' is not a built-in objective" in text
    assert 'add entrypoint = "path/to/file.py:function"' in text
    assert "--broker URL or ZOOMTUNE_BROKER_URL" in text
    # ... while a cluster's workers may register it, so there the plan goes ahead
    assert plan(tmp_path, toml)[0] == 0


@pytest.mark.parametrize(
    "objective",
    ['name = "branin"', 'name = "mine"\nentrypoint = "mine.py:score"'],
    ids=["built-in", "entrypoint"],
)
def test_on_the_embedded_default_a_built_in_or_an_entrypoint_is_accepted(
    tmp_path: Path, objective: str
) -> None:
    (tmp_path / "mine.py").write_text("def score(params, trial):\n    return 1.0\n")
    toml = study_toml().replace('name = "sleepy"', objective)
    code, out = plan(tmp_path, toml, embedded=True)
    assert code == 0, out


@pytest.mark.parametrize(
    ("options", "messages"),
    [
        (
            "{ scael = 0.01, epochs = 9 }",
            [
                "study.toml: [objective] options: unknown option 'scael' for the built-in "
                "objective 'synthetic-training'; did you mean 'scale'? it reads curve, epochs, "
                "scale"
            ],
        ),
        (  # (before, every trial failed on these and the study stopped failed)
            '{ scale = -1, curve = "wavy" }',
            [
                "study.toml: [objective] options: option scale for the built-in objective "
                "'synthetic-training': input should be greater than or equal to 0, got -1",
                "study.toml: [objective] options: option curve for the built-in objective "
                "'synthetic-training': input should be 'predictive' or 'crossing', got 'wavy'",
            ],
        ),
    ],
    ids=["unknown option", "bad values"],
)
def test_on_the_embedded_default_options_a_built_in_refuses_are_refused(
    tmp_path: Path, options: str, messages: list[str]
) -> None:
    toml = study_toml(objective="synthetic-training", options=options)
    code, out = plan(tmp_path, toml, embedded=True)

    assert code == 2
    for message in messages:
        assert message in out
    # On a cluster its workers may register their own objective under that name
    assert plan(tmp_path, toml)[0] == 0


@pytest.mark.parametrize(
    ("objective", "options", "message"),
    [
        ("nosuch-objective", "{}", "'nosuch-objective' is not a built-in objective"),
        ("sleep", "{ duration = -1 }", "option duration for the built-in objective 'sleep'"),
    ],
)
def test_start_on_the_embedded_default_refuses_it_before_starting_anything(
    tmp_path: Path, objective: str, options: str, message: str
) -> None:
    study_file = tmp_path / "study.toml"
    study_file.write_text(study_toml(objective=objective, options=options))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["start", str(study_file), "--run-dir", str(run_dir)],
        env={"ZOOMTUNE_BROKER_URL": None},
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not run_dir.exists()  # no Redis, no workers, no run folder


def test_plan_writes_nothing_to_the_broker(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a broker that other studies may use, set in the environment
    monkeypatch.setenv("ZOOMTUNE_BROKER_URL", redis_server.url)
    client = connect(redis_server.url)
    client.set("someone-else", "1")
    before = client.dbsize()

    # When a study is planned
    code, out = plan(tmp_path, study_toml(rounds=2, trials_per_round=4))

    # Then nothing was written and nothing was queued
    assert code == 0, out
    assert client.dbsize() == before
    assert client.keys("zoomtune:*") == []
    assert not (tmp_path / "runs").exists()


def test_the_projected_wall_time_counts_rounds_as_waves() -> None:
    spec = StudySpec.from_toml(
        study_toml(
            rounds=2, trials_per_round=5, options="{ duration = 2.0 }", extra="speculate = false"
        )
    )
    study_plan = StudyPlan.from_spec(spec)
    assert study_plan.worker_seconds() == 20.0
    assert study_plan.wall_seconds(workers=2) == 12.0  # 3 waves per round
    assert study_plan.wall_seconds(workers=100) == 4.0
    with pytest.raises(ValueError, match="workers must be >= 1"):
        study_plan.wall_seconds(0)


def test_plan_shows_when_rounds_go_out_and_which_have_nothing_to_narrow_from(
    tmp_path: Path,
) -> None:
    # Given rolling rounds whose lag (10) is more than round 1 (8 trials): round 2 has no
    # finished trial to narrow from, round 3 narrows from trials 0-5
    code, out = plan(tmp_path, study_toml(rounds=3, trials_per_round=8, extra="lag = 10"))

    assert code == 0, out
    lines = [line.split() for line in out.splitlines()]
    assert ["│", "2", "│", "8", "│", "0", "│", "8", "│"] in lines
    assert ["│", "3", "│", "8", "│", "0", "│", "8", "│"] not in lines
    text = " ".join(out.split())  # however the terminal wraps it
    assert "rolling rounds (lag 10): a round is narrowed from, and waits for, every earlier" in text
    assert "up to 3 rounds ahead on a guess (speculate)" in text
    barrier = " ".join(plan(tmp_path, study_toml(extra="speculate = false"))[1].split())
    assert "every earlier trial (lag 0); no round runs ahead" in barrier


def test_with_rounds_that_overlap_the_projected_wall_time_counts_all_trials_as_waves() -> None:
    # Speculation (the default) runs the next round ahead in the slots a round leaves idle
    spec = StudySpec.from_toml(
        study_toml(rounds=2, trials_per_round=5, options="{ duration = 2.0 }")
    )
    study_plan = StudyPlan.from_spec(spec)
    assert study_plan.rounds_overlap
    assert study_plan.wall_seconds(workers=2) == 10.0  # 5 waves of 2 trials
    assert study_plan.wall_seconds(workers=100) == 4.0  # a round still needs the one before it


def test_plan_shows_the_early_stopping_rule_and_where_its_rungs_can_be(tmp_path: Path) -> None:
    code, out = plan(tmp_path, study_toml())

    assert code == 0, out
    assert "early stopping: halving (reduction_factor 3): rungs at steps 1, 3, 9, 27, 81" in out
    assert "the thresholds are known only once results exist" in out

    median = study_toml() + '\n[early_stopping]\nrule = "median"\nmin_step = 5\n'
    assert "a rung at every reported step from 5 on" in plan(tmp_path, median)[1]
    off = study_toml() + '\n[early_stopping]\nrule = "none"\n'
    assert "early stopping: none" in plan(tmp_path, off)[1]


def test_on_the_embedded_default_plan_shows_a_built_ins_rungs_before_its_last_step(
    tmp_path: Path,
) -> None:
    training = study_toml(objective="synthetic-training", options="{ epochs = 20 }")
    code, out = plan(tmp_path, training, embedded=True)
    assert code == 0, out
    assert "rungs at steps 1, 3, 9 (before 20, the last step it reports)" in out
    assert "warning" not in out

    branin = plan(tmp_path, study_toml(objective="branin"), embedded=True)[1]
    assert "the built-in objective 'branin' reports no steps: no trial is stopped early" in branin


def test_on_the_embedded_default_plan_warns_when_min_step_leaves_a_built_in_no_rung(
    tmp_path: Path,
) -> None:
    late = "\n[early_stopping]\nmin_step = 20\n"
    toml = study_toml(objective="synthetic-training", options="{ epochs = 20 }") + late
    code, out = plan(tmp_path, toml, embedded=True)

    assert code == 0, out  # a warning, not a refusal
    assert "but no rung: min_step 20 is not before step 20" in out
    warning = " ".join(out[out.index("warning:") :].split())
    assert warning == (
        f"warning: {tmp_path / 'study.toml'}: [early_stopping] min_step 20 is at or past the "
        "last step the built-in objective 'synthetic-training' reports (its last epoch, 20), "
        "and a rung must come before it: no trial will be stopped early; lower min_step below "
        '20, give it more epochs, or set rule = "none"'
    )


def test_a_built_in_of_one_epoch_is_warned_about_whatever_min_step(tmp_path: Path) -> None:
    toml = study_toml(objective="synthetic-training", options="{ epochs = 1 }")
    code, out = plan(tmp_path, toml, embedded=True)

    assert code == 0, out
    text = " ".join(out.split())
    assert "but no rung: 'synthetic-training' reports one step (a single epoch)" in text
    assert "reports one step (a single epoch), and a rung must come before the last: no trial " \
        'will be stopped early; give it more epochs, or set rule = "none"' in text  # fmt: skip
    assert "min_step" not in text


def test_on_a_cluster_plan_does_not_presume_what_the_workers_run_under_a_built_ins_name(
    tmp_path: Path,
) -> None:
    # A cluster's workers may register an objective of their own as 'branin'
    late = "\n[early_stopping]\nmin_step = 20\n"
    code, out = plan(tmp_path, study_toml(objective="branin") + late)
    assert code == 0, out
    assert "reports no steps" not in out
    assert "rungs at steps 20, 60, 180, 540, 1620, ... below the last step the trials report" in (
        " ".join(out.split())
    )
    assert "warning" not in out

    # but says what the built-in would do with options it refuses
    code, out = plan(tmp_path, study_toml(objective="branin", options="{ duration = -1 }"))
    assert code == 0, out
    assert (
        "warning: " + str(tmp_path / "study.toml") + ": [objective] options: if the workers run "
        "the built-in, every trial fails: option duration for the built-in objective 'branin': "
        "input should be greater than or equal to 0, got -1"
    ) in " ".join(out.split())


def test_on_the_embedded_default_an_installed_packages_objective_is_accepted_as_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a package that registers 'their-model' and its own 'branin' (entry points), which
    # the local workers load over the built-in
    def installed(group: str) -> list[SimpleNamespace]:
        assert group == objectives.ENTRY_POINT_GROUP
        return [SimpleNamespace(name="their-model"), SimpleNamespace(name="branin")]

    monkeypatch.setattr(objectives, "entry_points", installed)

    # Then a study may name either, with options the built-in would refuse
    assert plan(tmp_path, study_toml(objective="their-model"), embedded=True)[0] == 0
    code, out = plan(
        tmp_path, study_toml(objective="branin", options="{ colour = 1 }"), embedded=True
    )
    assert code == 0, out
    assert "reports no steps" not in out
    assert "warning" not in out


def test_an_objective_of_the_users_own_gets_no_warning_about_its_steps(tmp_path: Path) -> None:
    # Its steps are known only from its runs, even under a built-in's name
    (tmp_path / "mine.py").write_text("def score(params, trial):\n    return 1.0\n")
    own = study_toml(objective="synthetic-training").replace(
        "options = {}", 'options = { epochs = 1 }\nentrypoint = "mine.py:score"'
    )
    code, out = plan(tmp_path, own + "\n[early_stopping]\nmin_step = 30\n", embedded=True)
    assert code == 0, out
    assert "warning" not in out
    assert "below the last step the trials report" in " ".join(out.split())


def test_plan_lists_at_most_50_of_round_1s_trials_and_says_how_many_more(tmp_path: Path) -> None:
    code, out = plan(tmp_path, study_toml(rounds=1, trials_per_round=200))

    assert code == 0, out
    assert "round 1's 200 trials" in out
    assert "... and 150 more (the first 50 are shown)" in out
    indices = [line.split()[1] for line in out.splitlines() if line.startswith("│")]
    assert "49" in indices
    assert "50" not in indices


def test_plan_warns_on_a_huge_budget_naming_the_total_and_the_field(tmp_path: Path) -> None:
    code, out = plan(tmp_path, study_toml(rounds=1000, trials_per_round=1000))

    assert code == 0, out  # a warning, not a refusal
    warning = " ".join(out[out.index("warning:") :].split())
    assert "[search] trials_per_round x rounds asks for 1,000,000 trials in total" in warning
    assert "more than 100,000" in warning


def test_an_ordinary_budget_gets_no_warning(tmp_path: Path) -> None:
    toml = study_toml(rounds=10, trials_per_round=10_000)  # 100,000: the limit itself
    assert StudySpec.from_toml(toml).budget_warning() is None
    code, out = plan(tmp_path, study_toml(rounds=2, trials_per_round=8))
    assert code == 0, out
    assert "trials in total" not in out


def test_the_huge_budget_warning_names_the_study_file() -> None:
    spec = StudySpec.from_toml(study_toml(rounds=2, trials_per_round=[100_000, 5]))
    warning = spec.budget_warning("study.toml")
    assert warning is not None
    assert warning.startswith("study.toml: [search] trials_per_round x rounds asks for 100,005")
    assert "up to 100,000 trials each" in warning


def test_start_warns_on_a_huge_budget_before_anything_else(tmp_path: Path) -> None:
    study_file = tmp_path / "study.toml"
    toml = study_toml(objective="nosuch-objective", rounds=1000, trials_per_round=200)
    study_file.write_text(toml)
    result = CliRunner().invoke(
        main,
        ["start", str(study_file), "--run-dir", str(tmp_path / "run")],
        env={"ZOOMTUNE_BROKER_URL": None},
        catch_exceptions=False,
    )
    # (refused afterwards for its objective, so that nothing starts)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"warning: {study_file}: [search] trials_per_round x rounds asks for 200,000" in text
