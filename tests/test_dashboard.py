"""`coordinator dashboard` for real: a redis-server, a `worker start` daemon and `coordinator
start` running a study, and the dashboard (its own process, on a free port) read over HTTP while
the trials finish; a write through its API is refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("optuna_dashboard", reason="needs the `dashboard` extra (in the `test` one)")

from tests.harness import (
    REPO,
    CoordinatorProcess,
    WorkerProcess,
    objective_option,
    study_toml,
    wait_until,
)
from tests.test_dashboard_storage import made_study
from zoomtune.common.redis_client import connect
from zoomtune.common.store import StudyStore
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.dashboard_trials import STUDY_ID
from zoomtune.coordinator.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# Each trial reports 3 steps, 0.5 s apart: over a second a trial, 8 trials one after another on
# one worker; none is pruned.
LIVE = study_toml(
    name="live",
    objective="prunable",
    direction="minimize",
    rounds=2,
    trials_per_round=4,
    options="{ steps = 3, step_seconds = 0.5 }",
    space='x = { type = "float", low = 0.01, high = 1.0, scale = "log" }\n'
    'y = { type = "int", low = 1, high = 8 }',
    extra='[early_stopping]\nrule = "none"  # every trial completes, whatever the default rule',
)
STATES = {"queued": "Waiting", "running": "Running", "complete": "Complete", "failed": "Fail"}


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def send(url: str, method: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def listening(url: str) -> bool:
    try:
        get(url)
    except (urllib.error.URLError, ConnectionError):
        return False
    return True


@pytest.fixture
def dashboard_port() -> int:
    return free_port()


def start_dashboard(
    broker_url: str, port: int, log: Path, study: str = "live"
) -> subprocess.Popen[bytes]:
    """`coordinator dashboard STUDY --port PORT` as a user types it, on the broker."""
    env = {**os.environ, "ZOOMTUNE_BROKER_URL": broker_url}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zoomtune.coordinator.cli", "dashboard", study, "--port",
            str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        redis_server.url, tmp_path / "worker.log", objectives=[objective_option("prunable")]
    ).start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def test_the_dashboard_shows_a_running_study_live_and_refuses_writes(
    redis_server: RedisServer, worker: WorkerProcess, tmp_path: Path, dashboard_port: int
) -> None:
    # Given a study running on a real worker
    study_file = tmp_path / "live.toml"
    study_file.write_text(LIVE)
    coordinator = CoordinatorProcess(
        study_file, tmp_path / "run", redis_server.url, tmp_path / "coord.log"
    ).start()
    client = connect(redis_server.url)
    store = StudyStore(client, "zoomtune:", "live")
    dashboard: subprocess.Popen[bytes] | None = None
    try:
        wait_until(store.exists, timeout=60, what="the study to be created")

        # When the dashboard is started on it, as the README says
        dashboard = start_dashboard(redis_server.url, dashboard_port, tmp_path / "dash.log")
        base = f"http://127.0.0.1:{dashboard_port}"
        wait_until(lambda: listening(f"{base}/api/studies"), 30, what="the dashboard to listen")
        assert [s["study_name"] for s in get(f"{base}/api/studies")["study_summaries"]] == ["live"]

        # Then its trials appear as they finish, beside one still running
        def states() -> list[str]:
            return [t["state"] for t in get(f"{base}/api/studies/{STUDY_ID}")["trials"]]

        def live() -> bool:
            """A view taken while the study runs: some trials complete, one running (a view
            taken between two trials, or at a round's end, shows none running: look again)."""
            shown = states()
            return "Running" in shown and 0 < shown.count("Complete") < 8

        wait_until(live, timeout=60, interval=0.2, what="some trials complete, one running")
        assert coordinator.process is not None
        assert coordinator.process.poll() is None
        assert coordinator.wait(120) == 0, coordinator.log()[-3000:]
        wait_until(lambda: states().count("Complete") == 8, 15, what="all 8 trials shown")

        # And each shows as the store records it: params with their scale, state, score,
        # intermediate values, round, worker and device
        detail = get(f"{base}/api/studies/{STUDY_ID}")
        records = {t.number: t for t in store.trials()}
        for shown in detail["trials"]:
            record = records[shown["number"]]
            assert shown["state"] == STATES[record.status]
            assert record.status is TrialStatus.COMPLETE
            assert shown["values"] == [record.score]
            params = {p["name"]: p for p in shown["params"]}
            assert float(params["x"]["param_external_value"]) == record.params["x"]
            assert int(params["y"]["param_external_value"]) == record.params["y"]
            assert params["x"]["distribution"]["log"] is True
            assert params["y"]["distribution"]["type"] == "IntDistribution"
            steps = [(v["step"], v["value"]) for v in shown["intermediate_values"]]
            assert steps == [(step, value) for step, value in store.reports(record.number)]
            attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
            assert attrs["round"] == str(record.round)
            assert (attrs["worker"], attrs["device"]) == (record.worker, record.device)
        assert {shown["number"] for shown in detail["trials"]} == set(records)
        best = min(records.values(), key=lambda t: t.score or 0.0)
        assert [t["number"] for t in detail["best_trials"]] == [best.number]

        # And a write through its API (a note, a tell) is refused with the reason
        for method, path, body in [
            ("PUT", f"/api/studies/{STUDY_ID}/note", {"version": 1, "body": "note"}),
            ("POST", "/api/trials/0/tell", {"state": "Fail"}),
        ]:
            code, reply = send(base + path, method, body)
            assert code == 403
            assert reply["reason"].startswith("the dashboard is read-only: ")
        assert store.trial(0).status is TrialStatus.COMPLETE
        assert "Traceback" not in (tmp_path / "dash.log").read_text()
    finally:
        if dashboard is not None:
            stop(dashboard)
        coordinator.stop()
        client.close()


def test_the_dashboard_on_a_missing_study_says_so(
    redis_server: RedisServer, tmp_path: Path, dashboard_port: int
) -> None:
    process = start_dashboard(redis_server.url, dashboard_port, tmp_path / "dash.log")
    try:
        code = process.wait(60)
    finally:
        stop(process)
    out = (tmp_path / "dash.log").read_text()
    assert code == 1, out
    assert out.startswith("error: no study named 'live' in this broker"), out


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def rendered_text(url: str, profile: Path) -> str:
    """The page's text once headless Chromium has run its scripts (for up to 15 s of page
    time), tags and styles left out, whitespace collapsed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    html = re.sub(r"<style[^>]*>.*?</style>", " ", done.stdout, flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="no chromium: `apt-get install chromium` for the browser test",
)
def test_a_browser_shows_every_trial_with_its_state_curve_and_worker(
    redis_server: RedisServer, tmp_path: Path, dashboard_port: int
) -> None:
    # Given a study whose five trials are complete, failed, pruned, running and queued
    client = connect(redis_server.url)
    made_study(client)
    client.close()
    dashboard = start_dashboard(redis_server.url, dashboard_port, tmp_path / "dash.log", "dash")
    try:
        base = f"http://127.0.0.1:{dashboard_port}"
        wait_until(lambda: listening(f"{base}/api/studies"), 30, what="the dashboard to listen")

        # When a real browser opens the study's trials
        profile = tmp_path / "chromium-profile"
        profile.mkdir()
        text = rendered_text(f"{base}/dashboard/studies/{STUDY_ID}/trials", profile)
    finally:
        stop(dashboard)

    # Then the page lists each trial in its state, and the best one with its curve and worker
    assert "dash (id=0)" in text, text[:2000]
    assert "5 Trials" in text
    for shown in [
        "Trial 0 Complete Best Trial",
        "Trial 1 Fail",
        "Trial 2 Pruned",
        "Trial 3 Running",
        "Trial 4 Waiting",
        "Value 0.9",
        "Intermediate Values 1 0.5 2 0.75 3 0.9",
        "Parameter act relu beta 0.95 layers 3 lr 0.01 width 32",
        "User Attributes round 1 attempt 1 worker w1@box device cuda:1",
    ]:
        assert shown in text, text[:2000]
