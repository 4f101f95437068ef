"""The docs hold what the code cites: every fault scenario (S1..S99) and invariant (I1..I9)
named anywhere in the code, tests, deploy files or pages is defined in docs/FAULTS.md, every test
that page names exists, and every relative link in README.md and docs/*.md reaches a file (and,
for `#anchor` links, a heading)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "docs" / "FAULTS.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEARCHED = ["zoomtune", "tests", "bench", "deploy", "examples", ".ci"]
"""Folders whose files may cite a scenario; the top-level pages are searched too."""

CITATION = re.compile(r"\b([SI])([1-9][0-9]?)\b(?:\s*-\s*\1([1-9][0-9]?)\b)?")
"""`S13`, `I4`, or a range `S1-S5` (each id in it is cited)."""
DEFINITION = re.compile(r"^#{2,4} ([SI][1-9][0-9]?)\b", re.MULTILINE)
"""A scenario or invariant is defined by a heading of its own: `### S13: bad objective output`."""
TEST_REFERENCE = re.compile(r"`([\w/]+\.py)::([\w:]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def cited_ids(text: str) -> set[str]:
    """The scenario and invariant ids `text` cites (S1..S99, I1..I9), ranges expanded."""
    found = set()
    for kind, first, last in CITATION.findall(text):
        numbers = range(int(first), int(last or first) + 1)
        found |= {f"{kind}{n}" for n in numbers if kind == "S" or n <= 9}
    return found


def searched_files() -> Iterator[Path]:
    for folder in SEARCHED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path != Path(__file__):
                yield path
    yield from (p for p in ROOT.glob("*.md"))
    yield from (p for p in PAGES if p != FAULTS and p.parent != ROOT)


def citations() -> dict[str, list[str]]:
    """Each cited id, with the files that cite it."""
    cited: dict[str, list[str]] = {}
    for path in searched_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not a text file
        for ident in cited_ids(text):
            cited.setdefault(ident, []).append(str(path.relative_to(ROOT)))
    return cited


def defined_ids() -> set[str]:
    return set(DEFINITION.findall(FAULTS.read_text(encoding="utf-8")))


def test_every_scenario_and_invariant_cited_is_defined_in_faults_md() -> None:
    cited = citations()
    assert {"S1", "S13", "S18", "I1", "I4"} <= set(cited)  # the search finds what is there
    missing = {ident: files for ident, files in cited.items() if ident not in defined_ids()}
    assert missing == {}, f"cited but not defined in docs/FAULTS.md: {missing}"


def test_faults_md_defines_the_scenarios_and_invariants_in_order() -> None:
    text = FAULTS.read_text(encoding="utf-8")
    order = DEFINITION.findall(text)
    scenarios = [int(i[1:]) for i in order if i[0] == "S"]
    invariants = [int(i[1:]) for i in order if i[0] == "I"]
    assert scenarios == list(range(1, len(scenarios) + 1))
    assert invariants == list(range(1, len(invariants) + 1))
    assert len(scenarios) >= 20
    assert len(invariants) >= 4


def defines(path: Path, names: list[str]) -> bool:
    """Whether `path` defines `names[0]`, and within it `names[1]`, ... (classes, functions)."""
    body: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    for name in names:
        found = [
            node
            for node in body
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name
        ]
        if not found:
            return False
        body = found[0].body
    return True


def test_every_test_faults_md_names_exists() -> None:
    references = TEST_REFERENCE.findall(FAULTS.read_text(encoding="utf-8"))
    assert len(references) >= 40
    missing = [
        f"{file}::{names}"
        for file, names in references
        if not (ROOT / "tests" / file).is_file()
        or not defines(ROOT / "tests" / file, names.split("::"))
    ]
    assert missing == []


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a page: lower case, punctuation dropped, spaces '-'."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def broken_links(page: Path) -> list[str]:
    """The relative links of a markdown page that reach no file or no heading."""
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        reached = linked.exists() and (
            not anchor or anchor in heading_anchors(linked.read_text(encoding="utf-8"))
        )
        if not reached:
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_both_docs() -> None:
    targets = LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {"docs/FAULTS.md", "docs/ARCHITECTURE.md"} <= set(targets)


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    assert cited_ids("scenarios S3 and S6-S8, invariants I1-I3; not S3x, I10 or 2S1") == {
        "S3",
        "S6",
        "S7",
        "S8",
        "I1",
        "I2",
        "I3",
    }
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) [web](https://example.com) [self](#title)\n"
        "[gone](missing.md) [no heading](there.md#nowhere)\n# Title\n"
    )
    assert broken_links(page) == ["missing.md", "there.md#nowhere"]


def test_the_readmes_study_file_is_valid_and_its_objective_runs_its_trials() -> None:
    # The example under "## The study file": every trial of it must be one the built-in it
    # names can run (it once had parameters sklearn-mlp-digits refuses, failing every trial)
    from zoomtune.common.study import StudySpec
    from zoomtune.coordinator.search import CoarseToFine
    from zoomtune.workers.objectives.digits import mlp_digits

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The study file") :]
    toml = section[section.index("```toml") + len("```toml") : section.index("```\n", 8)]
    spec = StudySpec.from_toml(toml)
    assert spec.objective.name == "sklearn-mlp-digits"

    class OneEpoch:
        options: ClassVar[dict[str, Any]] = {**spec.objective.options, "max_iter": 1}

        def report(self, step: int, value: float) -> None:
            pass

        def should_prune(self) -> bool:
            return False

    for params in CoarseToFine(spec).ask()[:2]:
        assert 0.0 <= mlp_digits(params, OneEpoch()) <= 1.0
