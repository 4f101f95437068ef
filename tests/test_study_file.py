"""The study file: every mistake is reported with the file, the field and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoomtune.common.errors import ConfigError
from zoomtune.common.parameters import ChoiceParameter, FloatParameter, IntParameter, Scale
from zoomtune.common.study import StudySpec
from zoomtune.common.study_settings import EarlyStopping, SearchSettings

SOURCE = "study.toml"


def study(search: str = "", resources: str = "", space: str = "", study_name: str = "demo") -> str:
    """A valid study file, with extra lines in [search], [resources] and [space]."""
    return f"""
[study]
name = "{study_name}"
direction = "maximize"
seed = 7

[objective]
name = "sklearn-mlp-digits"
options = {{ max_iter = 30 }}

[search]
{search}

[resources]
{resources}

[space]
learning_rate = {{ type = "float", low = 1e-5, high = 1e-1, scale = "log" }}
{space}
"""


def error_for(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        StudySpec.from_toml(text, source=SOURCE)
    return str(caught.value)


def assert_names(message: str, *parts: str) -> None:
    """The message names the file and every given part (the field, the value...)."""
    assert message.startswith(f"{SOURCE}: "), message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --- a valid file ----------------------------------------------------------------------------


def test_a_valid_file_builds_the_space_and_fills_in_the_search_defaults() -> None:
    spec = StudySpec.from_toml(
        study(space='momentum = { type = "float", low = 0.9, high = 0.999, scale = "reverse_log" }')
    )

    assert spec.name == "demo"
    assert spec.maximize
    assert spec.space["momentum"] == FloatParameter("momentum", 0.9, 0.999, Scale.REVERSE_LOG)
    assert spec.search == SearchSettings(
        trials_per_round=(SearchSettings().trials_per_round[0],) * SearchSettings().rounds
    )


def test_early_stopping_defaults_to_conservative_halving() -> None:
    spec = StudySpec.from_toml(study())

    assert spec.early_stopping == EarlyStopping(
        rule="halving", min_step=1, reduction_factor=3, min_trials=8
    )
    assert spec.early_stopping.enabled


def test_early_stopping_is_read_from_its_table() -> None:
    text = study() + '\n[early_stopping]\nrule = "median"\nmin_step = 5\nmin_trials = 12\n'

    spec = StudySpec.from_toml(text)

    assert spec.early_stopping == EarlyStopping(rule="median", min_step=5, min_trials=12)
    assert StudySpec.from_dict(spec.to_dict()) == spec
    assert not StudySpec.from_toml(text.replace('"median"', '"none"')).early_stopping.enabled


def test_trials_per_round_may_list_one_size_per_round() -> None:
    spec = StudySpec.from_toml(study(search="rounds = 3\ntrials_per_round = [32, 16, 8]"))

    assert spec.search.trials_per_round == (32, 16, 8)
    assert spec.search.total_trials == 56


def test_a_spec_round_trips_through_its_dict_form() -> None:
    spec = StudySpec.from_toml(
        study(
            search='sampler = "lhs"\nrounds = 2\ntrials_per_round = [8, 4]\ntop_k = 0.25',
            resources='queue = "gpu"\ntimeout = "90s"',
            space="""
units = { type = "int", low = 8, high = 512, scale = "log" }
layers = { type = "int", low = 1, high = 6, step = 1 }
dropout = { type = "float", low = 0.0, high = 0.5, step = 0.1 }
act = { type = "choice", values = ["relu", "tanh", 1, true] }
""",
        )
    )

    again = StudySpec.from_dict(spec.to_dict())

    assert again == spec
    assert again.space["units"] == IntParameter("units", 8, 512, Scale.LOG)
    assert again.space["act"] == ChoiceParameter("act", ("relu", "tanh", 1, True))


def test_a_file_is_read_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(study().replace("seed = 7", 'seed = 7\ndescription = "réglage fin"'), "utf-8")

    assert StudySpec.from_file(path).description == "réglage fin"


# --- one test per mistake --------------------------------------------------------------------


def test_low_above_high() -> None:
    message = error_for(study(space='x = { type = "float", low = 3.0, high = 1.0 }'))

    assert_names(message, "[space.x]", "low <= high", "low=3.0", "high=1.0")


def test_log_scale_with_low_at_or_below_zero() -> None:
    message = error_for(study(space='c = { type = "float", low = 0.0, high = 1.0, scale = "log" }'))

    assert_names(message, "[space.c]", "log scale needs low > 0", "low=0.0")


def test_reverse_log_outside_zero_to_one() -> None:
    message = error_for(
        study(space='b = { type = "float", low = 0.5, high = 1.0, scale = "reverse_log" }')
    )

    assert_names(message, "[space.b]", "reverse_log", "0 <= low <= high < 1", "high=1.0")


def test_empty_choices() -> None:
    message = error_for(study(space='act = { type = "choice", values = [] }'))

    assert_names(message, "[space.act]", "at least one value", "values=[]")


def test_duplicate_choice_values() -> None:
    message = error_for(study(space='act = { type = "choice", values = ["relu", "tanh", "relu"] }'))

    assert_names(message, "[space.act]", "distinct", "'relu' twice")


def test_unknown_parameter_type_suggests_the_closest() -> None:
    message = error_for(study(space='x = { type = "flaot", low = 0.0, high = 1.0 }'))

    assert_names(message, "[space.x] type", "'flaot'", "did you mean 'float'?")


def test_misspelt_key_suggests_the_closest() -> None:
    message = error_for(study(space='x = { type = "float", low = 0.0, hihg = 1.0 }'))

    assert_names(message, "[space.x]", "unknown key 'hihg'", "did you mean 'high'?")


def test_misspelt_search_key_suggests_the_closest() -> None:
    message = error_for(study(search="min_shrinks = 0.5"))

    assert_names(message, "[search]", "unknown key 'min_shrinks'", "did you mean 'min_shrink'?")


def test_a_section_given_as_a_value_is_named_as_a_table() -> None:
    message = error_for('early_stopping = "halving"\n' + study())
    assert_names(message, "[early_stopping] must be a table", "got 'halving'")
    assert "_EarlyStoppingSection" not in message
    options = error_for(study().replace("options = { max_iter = 30 }", "options = 3"))
    assert_names(options, "[objective] options: expected a table", "got 3")
    entry = error_for(study(space="momentum = 0.9"))
    assert_names(entry, "[space.momentum] must be a table", "got 0.9")


def test_unknown_section_suggests_the_closest() -> None:
    message = error_for(study() + "\n[serach]\nrounds = 3\n")

    assert_names(message, "unknown section [serach]", "did you mean [search]?")


def test_top_k_larger_than_a_round() -> None:
    message = error_for(study(search="trials_per_round = 8\ntop_k = 9"))

    assert_names(message, "[search] top_k", "first round (8)", "top_k=9")


def test_a_lag_that_leaves_no_round_anything_to_narrow_from() -> None:
    # 3 rounds of 8: the last round starts at trial 16, so a lag of 16 narrows nothing
    message = error_for(study(search="rounds = 3\ntrials_per_round = 8\nlag = 16"))
    assert_names(message, "[search] lag", "lag 16", "below 16", "random search")
    spec = StudySpec.from_toml(study(search="rounds = 3\ntrials_per_round = 8\nlag = 15"))
    assert spec.search.lag == 15


@pytest.mark.parametrize("fraction", ["1.5", "0.0", "-0.25"])
def test_top_k_fraction_outside_zero_to_one(fraction: str) -> None:
    message = error_for(study(search=f"top_k = {fraction}"))

    assert_names(message, "[search] top_k", "a float in (0, 1]", f"got {float(fraction)!r}")


def test_top_k_unknown_word() -> None:
    message = error_for(study(search='top_k = "best"'))

    assert_names(message, "[search] top_k", "'auto'", "got 'best'")


def test_rounds_below_one() -> None:
    message = error_for(study(search="rounds = 0"))

    assert_names(message, "[search] rounds", "greater than or equal to 1", "got 0")


def test_trials_per_round_list_of_the_wrong_length() -> None:
    message = error_for(study(search="rounds = 3\ntrials_per_round = [16, 8]"))

    assert_names(message, "[search] trials_per_round", "rounds=3", "2 entries [16, 8]")
    assert "lag" not in message  # the default lag is fine; only the list is wrong
    single = error_for(study(search="rounds = 3\ntrials_per_round = [10]"))
    assert "lag" not in single


def test_unknown_sampler() -> None:
    message = error_for(study(search='sampler = "sobel"'))

    assert_names(message, "[search] sampler", "'sobol'", "got 'sobel'")


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("margin = nan", "margin"),
        ("min_shrink = inf", "min_shrink"),
        ("explore = 1.0", "explore"),
        ("min_width = 0.0", "min_width"),
    ],
)
def test_search_knobs_outside_their_range(line: str, field: str) -> None:
    message = error_for(study(search=line))

    assert_names(message, f"[search] {field}", f"got {line.split(' = ')[1]}")


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ('rule = "halvng"', ("[early_stopping] rule", "'halving', 'median' or 'none'", "'halvng'")),
        ("rule = 1", ("[early_stopping] rule", "'halving'", "got 1")),
        ("min_step = -1", ("[early_stopping] min_step", "greater than or equal to 0", "got -1")),
        ("min_step = 1.5", ("[early_stopping] min_step", "valid integer", "got 1.5")),
        ("reduction_factor = 1", ("[early_stopping] reduction_factor", "equal to 2", "got 1")),
        ("reduction_factor = true", ("[early_stopping] reduction_factor", "got True")),
        ("min_trials = 1", ("[early_stopping] min_trials", "equal to 2", "got 1")),
        ('min_trials = "8"', ("[early_stopping] min_trials", "valid integer", "got '8'")),
        ("min_steps = 2", ("[early_stopping]", "unknown key 'min_steps'", "'min_step'?")),
    ],
)
def test_early_stopping_mistakes(line: str, parts: tuple[str, ...]) -> None:
    message = error_for(study() + f"\n[early_stopping]\n{line}\n")

    assert "\n" not in message, message  # one problem, one line
    assert_names(message, *parts)


def test_misspelt_early_stopping_table_suggests_the_closest() -> None:
    message = error_for(study() + '\n[early_stoping]\nrule = "none"\n')

    assert_names(message, "unknown section [early_stoping]", "did you mean [early_stopping]?")


@pytest.mark.parametrize("bound", ["nan", "inf", "-inf"])
def test_nan_and_infinite_bounds(bound: str) -> None:
    message = error_for(study(space=f'x = {{ type = "float", low = 0.0, high = {bound} }}'))

    assert_names(message, "[space.x]", "high must be a finite number", f"high={float(bound)!r}")


def test_non_integer_bounds_of_an_int_parameter() -> None:
    message = error_for(study(space='layers = { type = "int", low = 1.5, high = 4 }'))

    assert_names(message, "[space.layers] low", "valid integer", "got 1.5")


def test_unknown_queue() -> None:
    message = error_for(study(resources='queue = "tpu"'))

    assert_names(message, "[resources] queue", "'cpu' or 'gpu'", "got 'tpu'")


def test_unreadable_duration() -> None:
    message = error_for(study(resources='timeout = "10 minutes"'))

    assert_names(message, "[resources] timeout", "'30s' or '10m'", "got '10 minutes'")


def test_bad_study_name() -> None:
    message = error_for(study(study_name="my study!"))

    assert_names(message, "[study] name", "letters, digits", "got 'my study!'")


def test_duplicate_toml_key_points_at_the_line() -> None:
    # tomllib reports the position but not the key, so the message gives the line and column.
    text = study().replace("seed = 7", "seed = 7\nseed = 8")

    message = error_for(text)

    assert_names(message, "invalid TOML", "line 6", "given twice?")


def test_a_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    raw = study().replace("demo", "caf\xe9").encode("latin-1")
    path.write_bytes(raw)

    with pytest.raises(ConfigError) as caught:
        StudySpec.from_file(path)

    offset = raw.index(b"\xe9")
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset {offset})"


def test_every_problem_is_reported_at_once() -> None:
    text = study(
        search="trials_per_round = 4\ntop_k = 5",
        space='x = { type = "float", low = 3.0, high = 1.0 }\nc = { type = "choice", values = [] }',
    )

    with pytest.raises(ConfigError) as caught:
        StudySpec.from_toml(text, source=SOURCE)

    assert [problem.split("]")[0] for problem in caught.value.problems] == [
        f"{SOURCE}: [space.x",
        f"{SOURCE}: [space.c",
        f"{SOURCE}: [search",
    ]


# --- names are matched whole: no trailing newline slips through ----------------------------


def test_a_study_name_with_a_trailing_newline_is_refused() -> None:
    # `re.match(r"^...$")` would accept it: `$` also matches before a final newline, and the
    # study would run in a folder `runs/nl\n/` that `coordinator status nl` cannot find.
    message = error_for(study(study_name="nl\\n"))

    assert_names(message, "[study] name", "got 'nl\\n'")


def test_an_objective_name_or_entrypoint_with_a_trailing_newline_is_refused() -> None:
    text = study().replace('name = "sklearn-mlp-digits"', 'name = "sklearn-mlp-digits\\n"')
    assert_names(error_for(text), "[objective] name", "got 'sklearn-mlp-digits\\n'")

    text = study().replace(
        'name = "sklearn-mlp-digits"', 'name = "mine"\nentrypoint = "my_objective.py:score\\n"'
    )
    assert_names(error_for(text), "[objective] entrypoint", "got 'my_objective.py:score\\n'")


def test_a_parameter_name_with_a_trailing_newline_is_refused() -> None:
    message = error_for(study(space='"x\\n" = { type = "float", low = 0.0, high = 1.0 }'))

    assert_names(message, '[space."x\\n"]', "parameter name", "got 'x\\n'")
    assert "\n" not in message  # one problem, one line
