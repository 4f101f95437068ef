"""A ZoomSearchCV study's payload (estimator, data, splits, scorer) reaches the workers sealed
with an HMAC-SHA256 that only the coordinator and the workers can make; a payload that does not
verify is refused before a byte of it is unpickled, and only workers started with
`worker start --allow-sklearn-payloads` (and the key) load payloads at all."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring

from tests.harness import REPO
from zoomtune.common.cv_reports import FIT_TIME_STEP, SCORE_TIME_STEP, split_results
from zoomtune.common.errors import ConfigError, PayloadRefused
from zoomtune.common.sklearn_payload import (
    KEY_ENV,
    KEY_FILE_ENV,
    MAC_BYTES,
    MAGIC,
    CVPayload,
    key_from_env,
    new_key,
    open_payload,
    seal_payload,
    to_text,
)
from zoomtune.coordinator.embedded import LocalWorkers
from zoomtune.workers.cli import allow_sklearn_cv
from zoomtune.workers.objectives.sklearn_cv import NAME, SklearnCV
from zoomtune.workers.registry import ObjectiveRegistry
from zoomtune.workers.supervisor import Slot, slot_command

STUDY = "zoomsearch-demo"


class TouchOnUnpickle:
    """A pickle that runs a shell command when it is loaded: what a forger would store."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def small_payload() -> CVPayload:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(int)
    splits = ((np.arange(20, 40), np.arange(20)), (np.arange(20), np.arange(20, 40)))
    estimator = LogisticRegression()
    return CVPayload(estimator, x, y, splits, check_scoring(estimator, scoring="accuracy"))


def forged(marker: Path) -> bytes:
    """A payload in the right format whose MAC was made without the key."""
    return MAGIC + b"\0" * MAC_BYTES + pickle.dumps(TouchOnUnpickle(marker))


@dataclass
class FakeTrial:
    """What the objective sees of a trial, with the payload in 'Redis'."""

    stored: str | None
    study: str = STUDY
    options: Mapping[str, Any] = field(default_factory=lambda: {"payload": "redis"})
    reports: list[tuple[int, float]] = field(default_factory=list)

    def report(self, step: int, value: float) -> None:
        self.reports.append((step, value))

    def stored_payload(self) -> str | None:
        return self.stored


def test_a_sealed_payload_opens_with_its_key_for_its_study() -> None:
    key = new_key()
    opened = open_payload(seal_payload(small_payload(), STUDY, key), STUDY, key)
    assert isinstance(opened.estimator, LogisticRegression)
    assert opened.X.shape == (40, 3)
    assert len(opened.splits) == 2


@pytest.mark.parametrize(
    "tamper",
    ["forged", "altered body", "altered mac", "other study", "other key", "no magic", "empty"],
)
def test_a_payload_that_does_not_verify_is_refused_before_unpickling(
    tmp_path: Path, tamper: str
) -> None:
    # Given a key, and a payload that is forged or sealed otherwise, carrying a pickle that would
    # run a command when loaded
    key = new_key()
    marker = tmp_path / "pwned"
    good = seal_payload(CVPayload(TouchOnUnpickle(marker), None, None, (), None), STUDY, key)
    head = len(MAGIC) + MAC_BYTES
    study, with_key = STUDY, key
    sealed = {
        "forged": forged(marker),
        "altered body": good[:head] + good[head:].replace(b"touch", b"touCh"),
        "altered mac": good[: len(MAGIC)] + bytes([good[len(MAGIC)] ^ 1]) + good[len(MAGIC) + 1 :],
        "other study": good,
        "other key": good,
        "no magic": good[len(MAGIC) :],
        "empty": b"",
    }[tamper]
    if tamper == "other study":
        study = "zoomsearch-other"
    if tamper == "other key":
        with_key = new_key()

    # When a worker opens it, it is refused, and the command never ran
    with pytest.raises(PayloadRefused, match="nothing was"):
        open_payload(sealed, study, with_key)
    assert not marker.exists()


def test_the_objective_runs_nothing_from_a_forged_payload(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    trial = FakeTrial(to_text(forged(marker)))
    with pytest.raises(PayloadRefused, match="HMAC does not verify"):
        SklearnCV(new_key())({"C": 1.0}, trial)
    assert not marker.exists()
    assert trial.reports == []


def test_the_objective_reports_each_split_and_returns_the_mean(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "payload"
    path.write_bytes(seal_payload(small_payload(), STUDY, key))
    trial = FakeTrial(None, options={"payload": f"file:{path}"})
    score = SklearnCV(key)({"C": 1.0}, trial)
    results = split_results(trial.reports, 2)
    assert score == pytest.approx(np.mean(results.test_scores))
    assert all(0.5 < s <= 1.0 for s in results.test_scores)
    assert all(t >= 0 for t in results.fit_times + results.score_times)
    assert {step for step, _ in trial.reports} == {0, 1, FIT_TIME_STEP, FIT_TIME_STEP + 1} | {
        SCORE_TIME_STEP,
        SCORE_TIME_STEP + 1,
    }


@pytest.mark.parametrize(
    ("options", "refused_for"),
    [({}, "option payload must be"), ({"payload": "file:relative/path"}, "not absolute")],
)
def test_the_objective_reads_payloads_only_from_where_it_can(
    options: Mapping[str, Any], refused_for: str
) -> None:
    with pytest.raises(PayloadRefused, match=refused_for):
        SklearnCV(new_key())({}, FakeTrial(None, options=options))


def test_workers_register_sklearn_cv_only_when_allowed_and_given_the_key() -> None:
    registry = ObjectiveRegistry.build()
    assert NAME not in registry  # not a built-in: a plain `worker start` never unpickles
    with pytest.raises(ConfigError, match=KEY_ENV):
        allow_sklearn_cv(registry, {})
    allow_sklearn_cv(registry, {KEY_ENV: new_key().hex()})
    assert NAME in registry


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({KEY_ENV: "abc"}, "hex digits"),
        ({KEY_ENV: "ab" * 16}, "at least 32 bytes"),
        ({KEY_ENV: "ab" * 32, KEY_FILE_ENV: "/x"}, "not both"),
        ({KEY_FILE_ENV: "/nonexistent/key"}, "cannot read"),
    ],
)
def test_a_bad_payload_key_is_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        key_from_env(env)


def test_the_key_may_come_from_a_file(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "key"
    path.write_text(key.hex() + "\n")
    assert key_from_env({KEY_FILE_ENV: str(path)}) == key
    assert key_from_env({}) is None


def test_worker_start_allowing_payloads_without_a_key_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)}
    env["ZOOMTUNE_BROKER_URL"] = "redis://127.0.0.1:1/0"
    done = subprocess.run(
        [sys.executable, "-m", "zoomtune.workers.cli", "start", "--allow-sklearn-payloads"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--allow-sklearn-payloads needs the payload key" in done.stderr
    assert "Traceback" not in done.stderr


def test_gpu_slots_and_the_embedded_workers_pass_the_opt_in_on() -> None:
    slot = Slot(name="gpu1", queue="gpu", concurrency=1, device="gpu:1", gpu="1")
    assert "--allow-sklearn-payloads" in slot_command(slot, "n@h", (), "INFO", None, True)
    assert "--allow-sklearn-payloads" not in slot_command(slot, "n@h", (), "INFO")
    local = LocalWorkers("redis://127.0.0.1:1/0", 2, flags=("--allow-sklearn-payloads",))
    assert local.command()[-1] == "--allow-sklearn-payloads"
    assert "--allow-sklearn-payloads" not in LocalWorkers("redis://127.0.0.1:1/0", 2).command()
