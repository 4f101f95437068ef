"""`coordinator dashboard`'s read-only optuna storage, on a study made through the store's own
transitions (fakeredis): what optuna-dashboard reads, and every write refused. The real
processes (redis-server, `worker start`, the dashboard over HTTP) are in test_dashboard.py."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("optuna_dashboard", reason="needs the `dashboard` extra (in the `test` one)")

import fakeredis
import redis
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tests.harness import study_toml
from zoomtune.common.errors import ConfigError, ReadOnly
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import TrialResult
from zoomtune.coordinator.dashboard import dashboard_app
from zoomtune.coordinator.dashboard_source import BrokerSource, RunFolderSource
from zoomtune.coordinator.dashboard_storage import ReadOnlyStorage
from zoomtune.coordinator.dashboard_trials import STUDY_ID
from zoomtune.coordinator.export import StudyRecord, write_run_dir

SPACE = (
    'lr = { type = "float", low = 1e-4, high = 1e-1, scale = "log" }\n'
    'beta = { type = "float", low = 0.9, high = 0.999, scale = "reverse_log" }\n'
    'width = { type = "int", low = 16, high = 256, scale = "log" }\n'
    'layers = { type = "int", low = 1, high = 7, step = 2 }\n'
    'act = { type = "choice", values = ["relu", "tanh"] }'
)
PARAMS = [
    {"lr": 0.01, "beta": 0.95, "width": 32, "layers": 3, "act": "relu"},
    {"lr": 0.001, "beta": 0.99, "width": 64, "layers": 1, "act": "tanh"},
    {"lr": 0.05, "beta": 0.9, "width": 16, "layers": 5, "act": "relu"},
    {"lr": 0.0001, "beta": 0.999, "width": 256, "layers": 7, "act": "tanh"},
    {"lr": 0.002, "beta": 0.93, "width": 128, "layers": 3, "act": "relu"},
]
WORKER: dict[str, Any] = {"worker": "w1@box", "host": "box", "device": "cuda:1", "pid": 7}


def made_study(client: redis.Redis | None = None) -> StudyStore:
    """One round of five trials, left complete (with reports), failed, pruned, running and
    queued, each through the store's own transitions (on fakeredis unless `client` is given)."""
    spec = StudySpec.from_toml(
        study_toml(name="dash", direction="maximize", rounds=2, trials_per_round=5, space=SPACE)
    )
    client = client or fakeredis.FakeRedis(decode_responses=True)
    store = StudyStore(client, "zoomtune:", "dash")
    lock = store.acquire(ttl=60)
    epoch = store.create(lock, spec.to_dict(), spec.resources.max_attempts)
    store.write_round(lock, epoch, 1, spec.space.whole_box().to_dict(spec.space), PARAMS)

    def start(trial: int) -> None:
        payload = {"params": PARAMS[trial], "rungs": []}
        assert store.start(trial, 1, f"t{trial}", payload=payload, lease=60, **WORKER).ok

    for trial in range(4):
        start(trial)
    for step, value in [(1, 0.5), (2, 0.7), (2, 0.75), (3, 0.9)]:
        assert store.report(0, 1, "t0", step, value).owned
    assert store.finish(0, 1, "t0", TrialResult.complete(0.9)) == "ok"
    assert store.finish(1, 1, "t1", TrialResult.failed("boom: diverged")) == "ok"
    assert store.report(2, 1, "t2", 1, 0.2).owned
    assert store.finish(2, 1, "t2", TrialResult.pruned((1, 0.2))) == "ok"
    return store  # trial 3 runs, trial 4 is queued


@pytest.fixture
def store() -> StudyStore:
    return made_study()


@pytest.fixture
def storage(store: StudyStore) -> ReadOnlyStorage:
    return ReadOnlyStorage(BrokerSource(store))


def test_the_pipelined_read_is_the_record_the_other_commands_read(store: StudyStore) -> None:
    assert BrokerSource(store).read() == StudyRecord.from_store(store)


def test_the_study_shows_with_its_name_direction_and_what_optuna_has_no_field_for(
    storage: ReadOnlyStorage,
) -> None:
    [study] = storage.get_all_studies()
    assert (study.study_name, study._study_id) == ("dash", STUDY_ID)
    assert study.directions == [StudyDirection.MAXIMIZE]
    assert storage.get_study_id_from_name("dash") == STUDY_ID
    attrs = storage.get_study_user_attrs(STUDY_ID)
    assert attrs["state"] == "running"
    assert attrs["rounds"] == "1 of 2"
    assert attrs["reverse_log"].startswith("beta (shown on a linear axis")


def test_every_trial_shows_with_its_state_score_round_worker_and_device(
    storage: ReadOnlyStorage,
) -> None:
    trials = storage.get_all_trials(STUDY_ID)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.RUNNING,
        TrialState.WAITING,
    ]
    assert [t.value for t in trials] == [0.9, None, None, None, None]
    assert [t.params for t in trials] == PARAMS
    for trial in trials[:4]:
        assert trial.user_attrs["round"] == 1
        assert (trial.user_attrs["worker"], trial.user_attrs["device"]) == ("w1@box", "cuda:1")
        assert trial.datetime_start is not None
    assert trials[4].user_attrs == {"round": 1, "attempt": 1}
    assert trials[4].datetime_start is None
    assert trials[1].user_attrs["error"] == "boom: diverged"
    assert (trials[2].user_attrs["last_step"], trials[2].user_attrs["last_value"]) == (1, 0.2)
    assert trials[0].datetime_complete is not None
    assert trials[3].datetime_complete is None


def test_intermediate_values_are_the_reports_the_last_at_a_step_counting(
    storage: ReadOnlyStorage,
) -> None:
    assert storage.get_trial(0).intermediate_values == {1: 0.5, 2: 0.75, 3: 0.9}
    assert storage.get_trial(2).intermediate_values == {1: 0.2}
    assert storage.get_trial(4).intermediate_values == {}


def test_params_keep_their_scale_and_reverse_log_is_linear_over_its_bounds(
    storage: ReadOnlyStorage,
) -> None:
    assert storage.get_trial(0).distributions == {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "beta": FloatDistribution(0.9, 0.999),
        "width": IntDistribution(16, 256, log=True),
        "layers": IntDistribution(1, 7, step=2),
        "act": CategoricalDistribution(["relu", "tanh"]),
    }


def test_the_best_trial_is_zoomtunes_best(storage: ReadOnlyStorage) -> None:
    assert storage.get_best_trial(STUDY_ID).number == 0


def test_unknown_ids_are_key_errors_as_optuna_expects(storage: ReadOnlyStorage) -> None:
    with pytest.raises(KeyError):
        storage.get_all_trials(1)
    with pytest.raises(KeyError):
        storage.get_trial(5)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("other")


@pytest.mark.parametrize(
    ("write", "asked"),
    [
        (lambda s: s.create_new_study([StudyDirection.MINIMIZE], "x"), "creating a study"),
        (lambda s: s.delete_study(STUDY_ID), "deleting the study"),
        (lambda s: s.set_study_user_attr(STUDY_ID, "k", 1), "user attribute 'k'"),
        (lambda s: s.set_study_system_attr(STUDY_ID, "dashboard:note", "n"), "a note?"),
        (lambda s: s.create_new_trial(STUDY_ID), "adding a trial"),
        (lambda s: s.set_trial_param(4, "lr", 0.1, FloatDistribution(0, 1)), "parameter 'lr'"),
        (lambda s: s.set_trial_state_values(3, TrialState.COMPLETE, [1.0]), "trial 3 COMPLETE"),
        (lambda s: s.set_trial_intermediate_value(3, 1, 0.1), "reporting a value"),
        (lambda s: s.set_trial_user_attr(3, "k", 1), "user attribute 'k' of trial 3"),
        (lambda s: s.set_trial_system_attr(3, "k", 1), "system attribute 'k' of trial 3"),
    ],
)
def test_every_write_is_refused_and_the_study_is_unchanged(
    store: StudyStore, storage: ReadOnlyStorage, write: Any, asked: str
) -> None:
    before = StudyRecord.from_store(store)
    with pytest.raises(ReadOnly, match=f"^the dashboard is read-only: .*{re.escape(asked)}"):
        write(storage)
    assert StudyRecord.from_store(store) == before


def test_reads_within_max_age_share_one_read_of_the_record(store: StudyStore) -> None:
    now = [100.0]
    storage = ReadOnlyStorage(BrokerSource(store), max_age=1.0, clock=lambda: now[0])
    storage.get_all_studies()
    storage.get_all_trials(STUDY_ID)
    storage.get_best_trial(STUDY_ID)
    assert storage.reads == 1
    payload = {"params": PARAMS[4], "rungs": []}
    assert store.start(4, 1, "t4", payload=payload, lease=60, **WORKER).ok
    now[0] += 1.0
    assert storage.get_trial(4).state is TrialState.RUNNING  # read again, not a stale copy
    assert storage.reads == 2


def call(app: Any, method: str, path: str, body: Any = None) -> tuple[str, Any]:
    """One request to a WSGI app in-process: its status line and JSON body."""
    data = b"" if body is None else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "HTTP_ACCEPT_ENCODING": "",
        "wsgi.input": io.BytesIO(data),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
    }
    status: list[str] = []
    chunks = app(environ, lambda line, headers, exc_info=None: status.append(line))
    return status[0], json.loads(b"".join(chunks) or b"null")


def test_the_dashboards_api_lists_the_study_and_its_trials(storage: ReadOnlyStorage) -> None:
    app = dashboard_app(storage)
    status, studies = call(app, "GET", "/api/studies")
    assert status.startswith("200")
    assert [s["study_name"] for s in studies["study_summaries"]] == ["dash"]
    status, detail = call(app, "GET", f"/api/studies/{STUDY_ID}")
    assert status.startswith("200")
    assert [t["state"] for t in detail["trials"]] == [
        "Complete",
        "Fail",
        "Pruned",
        "Running",
        "Waiting",
    ]
    assert detail["has_intermediate_values"] is True
    assert [t["number"] for t in detail["best_trials"]] == [0]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", f"/api/studies/{STUDY_ID}/note", {"version": 1, "body": "hi"}),
        ("PUT", f"/api/studies/{STUDY_ID}/3/note", {"version": 1, "body": "hi"}),
        ("POST", "/api/trials/3/tell", {"state": "Complete", "values": [1.0]}),
        ("POST", "/api/trials/3/user-attrs", {"user_attrs": {"k": 1}}),
        ("POST", "/api/studies", {"study_name": "x", "directions": ["minimize"]}),
        ("POST", f"/api/studies/{STUDY_ID}/rename", {"study_name": "y"}),
        ("DELETE", f"/api/studies/{STUDY_ID}", None),
    ],
)
def test_a_write_through_the_api_is_refused_with_the_reason(
    store: StudyStore, storage: ReadOnlyStorage, method: str, path: str, body: Any
) -> None:
    before = StudyRecord.from_store(store)
    status, reply = call(dashboard_app(storage), method, path, body)
    assert status.startswith("403")
    assert reply["reason"].startswith(f"the dashboard is read-only: {method} {path} is refused")
    assert StudyRecord.from_store(store) == before


def test_a_run_folder_is_read_again_when_its_study_json_changes(
    store: StudyStore, tmp_path: Path
) -> None:
    write_run_dir(StudyRecord.from_store(store), tmp_path)
    storage = ReadOnlyStorage(RunFolderSource(tmp_path, "dash"), max_age=0.0)
    assert storage.get_trial(4).state is TrialState.WAITING
    payload = {"params": PARAMS[4], "rungs": []}
    assert store.start(4, 1, "t4", payload=payload, lease=60, **WORKER).ok
    write_run_dir(StudyRecord.from_store(store), tmp_path)
    assert storage.get_trial(4).state is TrialState.RUNNING


def test_a_run_folder_without_study_json_or_of_another_study_is_a_clear_error(
    store: StudyStore, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"has no study\.json"):
        RunFolderSource(tmp_path).read()
    write_run_dir(StudyRecord.from_store(store), tmp_path)
    with pytest.raises(ConfigError, match="holds study 'dash', not 'other'"):
        RunFolderSource(tmp_path, "other").read()


def test_finished_trials_kept_between_reads_are_dropped_when_the_study_is_made_afresh(
    store: StudyStore,
) -> None:
    # Given a source that has read the study with its trial 0 complete
    source = BrokerSource(store)
    spec = StudySpec.from_dict(store.spec())
    assert source.read().trials[0].score == 0.9
    # When the study is deleted and started afresh, its trial 0 finishing with another score
    store.delete()
    lock = store.acquire(ttl=60)
    epoch = store.create(lock, spec.to_dict(), spec.resources.max_attempts)
    store.write_round(lock, epoch, 1, spec.space.whole_box().to_dict(spec.space), PARAMS[:1])
    payload = {"params": PARAMS[0], "rungs": []}
    assert store.start(0, 1, "new", payload=payload, lease=60, **WORKER).ok
    assert store.finish(0, 1, "new", TrialResult.complete(0.1)) == "ok"
    # Then the source reads the new trial, not the one it kept
    assert source.read() == StudyRecord.from_store(store)
    assert source.read().trials[0].score == 0.1


def dashboard_cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from zoomtune.coordinator.cli import main

    result = CliRunner().invoke(main, ["dashboard", *args], env={"ZOOMTUNE_BROKER_URL": ""})
    return result.exit_code, result.output


def test_without_the_extra_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As if optuna-dashboard were not installed: importing it fails, and the command's module
    # is imported afresh.
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    monkeypatch.delitem(sys.modules, "zoomtune.coordinator.dashboard", raising=False)
    code, out = dashboard_cli("--run-dir", str(tmp_path))
    assert (code, out) == (
        2,
        "error: optuna_dashboard is not installed: pip install 'zoomtune[dashboard]'\n",
    )


def test_a_run_folder_without_study_json_is_refused_before_serving(tmp_path: Path) -> None:
    code, out = dashboard_cli("--run-dir", str(tmp_path))
    assert code == 2
    assert out.startswith(f"error: {tmp_path} has no study.json (yet: the coordinator writes it")


def test_a_port_in_use_is_refused_with_the_way_out(store: StudyStore, tmp_path: Path) -> None:
    import socket

    write_run_dir(StudyRecord.from_store(store), tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = dashboard_cli("--run-dir", str(tmp_path), "--port", str(port))
    assert code == 2
    assert out == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): pick another --port\n"
    )
