"""`coordinator report`'s folder: valid PNG plots and a report.html that shows them."""

from __future__ import annotations

import dataclasses
import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.harness import study_toml
from tests.records import NN_SPACE, nn_like, simulate
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.export import StudyRecord, write_run_dir
from zoomtune.coordinator.report import (
    CURVES_PNG,
    FUNNEL_PNG,
    HISTORY_PNG,
    IMPORTANCE_PNG,
    REPORT_HTML,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking that it decodes completely."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.01, f"{path.name} is blank"
    return width, height


def assert_reasonable_png(path: Path) -> None:
    width, height = png_size(path)
    assert 500 <= width <= 2500, (path.name, width)
    assert 250 <= height <= 2500, (path.name, height)
    assert 5_000 < path.stat().st_size < 2_000_000, (path.name, path.stat().st_size)


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def references(html_file: Path) -> list[str]:
    parser = References()
    parser.feed(html_file.read_text(encoding="utf-8"))
    return parser.found


def assert_complete_report(directory: Path, images: list[str]) -> str:
    """Every image is a valid PNG, and report.html shows exactly those, all present."""
    for name in images:
        assert_reasonable_png(directory / name)
    html_file = directory / REPORT_HTML
    refs = references(html_file)
    assert sorted(refs) == sorted(images)
    assert all((directory / ref).is_file() for ref in refs)
    return html_file.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def nn_record() -> StudyRecord:
    spec = StudySpec.from_toml(
        study_toml(name="nn", direction="maximize", rounds=4, trials_per_round=16, space=NN_SPACE)
    )
    return simulate(spec, nn_like)


def test_a_report_has_the_three_plots_and_a_page_that_shows_them(
    nn_record: StudyRecord, tmp_path: Path
) -> None:
    report = write_report(nn_record, tmp_path / "report")

    assert report.images == (HISTORY_PNG, FUNNEL_PNG, IMPORTANCE_PNG)
    page = assert_complete_report(report.directory, list(report.images))
    best = nn_record.best()
    assert best is not None
    assert f"trial {best.number} (round {best.round})" in page
    assert f"{best.score:.6g}" in page
    assert page.count("<tr><td>") >= 4 + len(nn_record.spec.space)  # rounds, best params
    assert "learning_rate" in page.split("Which hyperparameters matter")[1].split("</tr>")[1]
    assert report.findings.importance[0].name == "learning_rate"
    assert sorted(p.name for p in tmp_path.joinpath("report").iterdir()) == sorted(
        [*report.images, REPORT_HTML]
    )


def test_the_page_carries_the_edge_warnings(tmp_path: Path) -> None:
    # Given a study whose best learning rates pile up at the upper bound 0.01
    space = NN_SPACE.replace("high = 1.0, scale", "high = 0.01, scale")
    spec = StudySpec.from_toml(
        study_toml(direction="maximize", rounds=4, trials_per_round=16, space=space)
    )
    report = write_report(simulate(spec, nn_like), tmp_path)
    page = (tmp_path / REPORT_HTML).read_text()
    assert [w.name for w in report.findings.warnings] == ["learning_rate"]
    assert "learning_rate: the best trials are at the upper edge 0.01 of its range" in page


def test_without_enough_trials_there_is_no_importance_plot(tmp_path: Path) -> None:
    # Given a report folder with an importance plot from an earlier, larger study
    (tmp_path / IMPORTANCE_PNG).write_bytes(b"stale")
    spec = StudySpec.from_toml(study_toml(rounds=1, trials_per_round=4))
    record = simulate(spec, lambda p: (p["x"] - 0.3) ** 2)

    report = write_report(record, tmp_path)

    assert report.images == (HISTORY_PNG, FUNNEL_PNG)
    page = assert_complete_report(tmp_path, [HISTORY_PNG, FUNNEL_PNG])
    assert "importance needs at least 8 completed trials (this study has 4)" in page
    assert not (tmp_path / IMPORTANCE_PNG).exists()


def test_values_from_the_study_are_escaped_in_the_page(tmp_path: Path) -> None:
    space = (
        'x = { type = "float", low = 0, high = 1 }\nkind = { type = "choice", values = ["<b>"] }'
    )
    spec = StudySpec.from_toml(study_toml(rounds=1, trials_per_round=4, space=space))
    write_report(simulate(spec, lambda p: p["x"]), tmp_path)
    page = (tmp_path / REPORT_HTML).read_text()
    assert "&lt;b&gt;" in page
    assert "<td><b></td>" not in page


def test_a_study_with_failed_trials_and_a_minimised_log_score_still_draws(
    tmp_path: Path,
) -> None:
    # Scores spanning decades get a log axis; failed trials are drawn as crosses
    spec = StudySpec.from_toml(study_toml(rounds=2, trials_per_round=12))
    record = simulate(
        spec, lambda p: None if p["y"] == 8 else 10 ** (6 * abs(p["x"] - 0.3)) - 0.999
    )
    assert any(t.score is None for t in record.trials)
    report = write_report(record, tmp_path)
    assert_complete_report(tmp_path, list(report.images))


def with_curves(record: StudyRecord, pruned: set[int]) -> StudyRecord:
    """`record` as if every trial had reported a rising curve, those in `pruned` cut short and
    recorded as PRUNED (the way early stopping ends a trial)."""
    curves, trials = {}, []
    for t in record.trials:
        steps = range(1, 4 if t.number in pruned else 11)
        curves[t.number] = tuple((s, (t.score or 0.0) * s / 10) for s in steps)
        trials.append(
            dataclasses.replace(t, status=TrialStatus.PRUNED) if t.number in pruned else t
        )
    return dataclasses.replace(record, trials=tuple(trials), reports=curves)


def test_reported_values_are_drawn_as_learning_curves(
    nn_record: StudyRecord, tmp_path: Path
) -> None:
    # Given a study whose trials reported values, a few of them pruned
    record = with_curves(nn_record, pruned={1, 5, 9})

    # When the run folder is written and the report drawn from it
    write_run_dir(record, tmp_path / "run")
    study = json.loads((tmp_path / "run" / "study.json").read_text())
    back = StudyRecord.from_json_file(tmp_path / "run" / "study.json")
    report = write_report(back, tmp_path / "report")

    # Then study.json holds each trial's reports, and they read back as they were
    assert study["trials"][1]["reports"] == [
        [s, pytest.approx(s / 10 * (record.trials[1].score or 0.0))] for s in range(1, 4)
    ]
    assert back.reports == record.reports
    assert [t["status"] for t in study["trials"]].count("pruned") == 3
    # And the report has a curves plot, linked from the page
    assert report.images == (HISTORY_PNG, FUNNEL_PNG, CURVES_PNG, IMPORTANCE_PNG)
    page = assert_complete_report(report.directory, list(report.images))
    assert "Learning curves" in page


def test_without_reported_values_there_is_no_curves_plot_and_no_link(
    nn_record: StudyRecord, tmp_path: Path
) -> None:
    # Given a report folder with a curves plot from an earlier study that reported values
    (tmp_path / CURVES_PNG).write_bytes(b"stale")

    report = write_report(nn_record, tmp_path)

    assert CURVES_PNG not in report.images
    assert not (tmp_path / CURVES_PNG).exists()
    assert CURVES_PNG not in (tmp_path / REPORT_HTML).read_text()
    assert_complete_report(tmp_path, list(report.images))
