"""Whoever can write to Redis must not be able to run code on a worker or change a study's
record (docs/FAULTS.md S16, S17). Messages carry data only (JSON), name an objective from the
worker's allow-list, and are checked against the study's space; results are fenced by attempt
and lease token; nothing read from Redis is unpickled or imported.

The attacks are made with raw redis-py against a real redis-server and real worker processes.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import pickle
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from tests.faults.invariants import live_group_members
from tests.harness import (
    CoordinatorProcess,
    WorkerProcess,
    objective_option,
    study_toml,
    wait_until,
)
from tests.objectives import deterministic_score
from zoomtune.common.celery_app import make_celery
from zoomtune.common.settings import QUEUES, TASK_NAME, Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.store_keys import Keys
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import TrialResult, TrialStatus
from zoomtune.coordinator.redis_server import RedisServer, free_port
from zoomtune.workers.intake import MAX_ENCODED_BODY, GuardTrialQueues, allow_only_trials, refusal
from zoomtune.workers.transport import (
    REFUSED,
    TlsTrialQueueTransport,
    TrialQueueQoS,
    TrialQueueTransport,
    envelope_problem,
    read_unacked,
)

PREFIX = "zoomtune:"
QUEUE_KEY = f"{PREFIX}{QUEUES['cpu']}"
REPO = Path(__file__).resolve().parent.parent


class TouchOnUnpickle:
    """A pickle that runs a shell command when it is loaded: what an attacker would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def kombu_envelope(
    body: bytes,
    *,
    task: str = TASK_NAME,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
) -> str:
    """A message as kombu stores it in a Redis list, for Celery's task protocol 2."""
    task_id = str(uuid.uuid4())
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": {
                "lang": "py",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "eta": None,
                "expires": None,
                "timelimit": [None, None],
                "argsrepr": "",
                "kwargsrepr": "",
                "origin": "attacker@nowhere",
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUES["cpu"]},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def task_body(*args: object) -> bytes:
    """A JSON protocol-2 body: (args, kwargs, embed)."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps([list(args), {}, embed]).encode()


def trial_message(trial: int = 0, **changes: object) -> dict[str, object]:
    message: dict[str, object] = {
        "study": "demo",
        "trial": trial,
        "attempt": 1,
        "objective": "sleepy",
        "params": {"x": 0.5, "y": 3},
    }
    message.update(changes)
    return message


@pytest.fixture
def study(real_client: redis.Redis) -> StudyStore:
    """Study "demo" with one round of two QUEUED trials, written as a coordinator would."""
    spec = StudySpec.from_toml(study_toml(rounds=1, trials_per_round=2), source="test")
    store = StudyStore(real_client, PREFIX, "demo")
    lock = store.acquire(ttl=600)
    epoch = store.create(lock, spec.to_dict(), spec.resources.max_attempts)
    store.write_round(lock, epoch, 1, {}, [{"x": 0.25, "y": 2}, {"x": 0.75, "y": 6}])
    return store


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerProcess]:
    started = WorkerProcess(
        redis_server.url, tmp_path / "worker.log", objectives=[objective_option("sleepy")]
    ).start()
    try:
        yield started.wait_ready()
    finally:
        started.stop()


@pytest.mark.redis
@pytest.mark.slow
def test_s16_a_worker_drops_malicious_messages_without_running_code_or_dying(
    real_client: redis.Redis, study: StudyStore, worker: WorkerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    exploit = pickle.dumps(TouchOnUnpickle(marker))
    # The exploit is real: loading it in a throwaway process creates its marker file.
    control = tmp_path / "control"
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=pickle.dumps(TouchOnUnpickle(control)),
        check=True,
        timeout=30,
    )
    assert control.exists()

    # Given crafted messages pushed straight into the worker's queue with raw redis-py
    attacks = {
        "pickle": kombu_envelope(
            exploit, content_type="application/x-python-serialize", content_encoding="binary"
        ),
        "unknown task": kombu_envelope(task_body(f"touch {marker}"), task="os.system"),
        "module:function objective": kombu_envelope(
            task_body(trial_message(objective="os:system"))
        ),
        "unregistered objective": kombu_envelope(task_body(trial_message(objective="os.system"))),
        "params out of bounds": kombu_envelope(task_body(trial_message(params={"x": 5.0, "y": 3}))),
        "unknown param": kombu_envelope(
            task_body(trial_message(params={"x": 0.5, "y": 3, "__class__": "os"}))
        ),
        "oversized": kombu_envelope(task_body(trial_message(params={"x": "A" * 200_000, "y": 3}))),
        "not a trial": kombu_envelope(task_body(f"rm -rf {tmp_path}")),
    }
    for envelope in attacks.values():
        real_client.lpush(QUEUE_KEY, envelope)

    # When the worker has taken them all
    expected_log = [
        "ContentDisallowed",  # the pickle is refused before anything decodes it
        "refused a message for task 'os.system'",  # from its headers, body unread
        "bad objective name 'os:system'",
        "objective 'os.system' is not registered on this worker",
        "params outside the study's space",
        "__class__",
        "a trial message is at most 65536 bytes",  # refused before its body is decoded
        "a trial message must be a JSON object",
    ]
    wait_until(
        lambda: all(text in worker.log() for text in expected_log),
        timeout=60,
        what="the worker to log every dropped message",
    )

    # Then no code ran, the worker is alive, and the study did not change
    assert not marker.exists()
    assert tmp_path.exists()
    assert worker.alive()
    assert [t.status for t in study.trials()] == [TrialStatus.QUEUED, TrialStatus.QUEUED]
    assert study.meta()["trials"] == "2"
    assert real_client.llen(QUEUE_KEY) == 0

    # And the same worker still runs an honest trial sent the same way
    honest = trial_message(trial=0, params={"x": 0.25, "y": 2})
    real_client.lpush(QUEUE_KEY, kombu_envelope(task_body(honest)))
    trial = wait_until(
        lambda: (t := study.trial(0)).status.is_finished() and t,
        timeout=60,
        what="the honest trial to finish",
    )
    assert trial.status is TrialStatus.COMPLETE
    assert trial.score == pytest.approx(deterministic_score(honest["params"]))  # type: ignore[arg-type]
    assert study.trial(1).status is TrialStatus.QUEUED


@pytest.mark.redis
@pytest.mark.slow
def test_s17_forged_and_stale_results_written_during_a_round_are_ignored(
    redis_server: RedisServer, real_client: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    workers = [
        WorkerProcess(
            redis_server.url, tmp_path / f"worker{i}.log", objectives=[objective_option("sleepy")]
        ).start()
        for i in range(2)
    ]
    study_file = tmp_path / "study.toml"
    study_file.write_text(study_toml(rounds=2, trials_per_round=4, options="{ duration = 0.8 }"))
    coordinator = CoordinatorProcess(
        study_file, tmp_path / "run", redis_server.url, tmp_path / "coordinator.log"
    )
    try:
        for worker in workers:
            worker.wait_ready()
        coordinator.start()
        store = StudyStore(real_client, PREFIX, "demo")
        keys = Keys(PREFIX, "demo")
        running = wait_until(
            lambda: (
                store.exists() and [t for t in store.trials() if t.status is TrialStatus.RUNNING]
            ),
            timeout=60,
            what="a running trial",
        )
        victim = running[0]

        # Given forged writes with raw redis-py while the round runs:
        # a "finished" event for every trial, claiming a winning score (events are only hints),
        for number in [*range(4), 999]:
            real_client.xadd(
                keys.events,
                {"type": "finished", "trial": number, "attempt": 1, "status": "complete"},
            )
        # results through the fenced script with a guessed token, a future attempt and for an
        # unknown trial,
        forged = TrialResult.complete(-1000.0)
        assert store.finish(victim.number, 1, "guessed-token", forged) == "forged"
        assert store.finish(victim.number, 2, "guessed-token", forged) == "stale"
        assert store.finish(999, 1, "guessed-token", forged) == "unknown_trial"
        # Celery result records with an exc_module payload and a pickle (there is no result
        # backend: nothing may read them),
        payload = {
            "status": "FAILURE",
            "result": {
                "exc_type": "system",
                "exc_module": "os",
                "exc_message": [f"touch {marker}"],
            },
            "task_id": "x",
        }
        real_client.set(f"{PREFIX}celery-task-meta-x", json.dumps(payload))
        real_client.set(f"{PREFIX}celery-task-meta-y", pickle.dumps(TouchOnUnpickle(marker)))
        # and a second delivery of the victim's message, straight into the queue.
        duplicate = trial_message(victim.number, params=dict(victim.params))
        real_client.lpush(QUEUE_KEY, kombu_envelope(task_body(duplicate)))

        # When the study runs to its end
        assert coordinator.wait(180) == 0, coordinator.log()[-3000:]

        # A result for a trial that is already finished is dropped too
        assert store.finish(victim.number, 1, "guessed-token", forged) == "finished"
    finally:
        coordinator.stop()
        for worker in workers:
            worker.stop()

    # Then every trial finished once, with the score of its own params (I1, I2)
    trials = store.trials()
    assert [t.number for t in trials] == list(range(8))
    for trial in trials:
        assert trial.status is TrialStatus.COMPLETE
        assert trial.attempt == 1
        assert trial.score == pytest.approx(deterministic_score(trial.params))
    study = json.loads((tmp_path / "run" / "study.json").read_text())
    assert study["best"]["score"] == pytest.approx(min(t.score for t in trials if t.score))
    # And the forgeries were counted, and none ran code
    counters = store.counters()
    assert counters["forged_results"] >= 2  # the guessed token and the unknown trial
    assert counters["stale_results"] >= 1
    assert counters["late_results"] >= 1
    assert counters["duplicate_deliveries"] >= 1
    assert not marker.exists()


def test_both_sides_accept_json_only() -> None:
    app = make_celery(Settings(broker_url="redis://127.0.0.1:1/0"))
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.result_accept_content == ["json"]
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json",) * 3
    assert app.control.mailbox.accept == ["json"]  # remote control messages too


# What may turn bytes from Redis into code. Only the registry imports, and only targets the
# operator gave when the worker started (never a name from a message).
UNPICKLERS = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
IMPORTERS = {"importlib"}
BUILTIN_CALLS = {"eval", "exec", "compile", "__import__"}  # as bare names (not re.compile)
DYNAMIC_CALLS = {"symbol_by_name", "instantiate"}  # celery's and kombu's name -> object
IMPORTER_CALLS = {"import_module", "spec_from_file_location", "load_target"}
REGISTRY = "zoomtune/workers/registry.py"
SCRIPT_LOADER = "zoomtune/common/store_scripts.py"
"""Reads the store's Lua files with importlib.resources, anchored on its own package's name."""
PACKAGE_DATA = "importlib.resources"
ENTRY_POINT_LISTER = "zoomtune/common/objectives.py"
"""Lists the names of the objectives installed packages register, with importlib.metadata, and
never loads one (the test below pins it to no `.load`): names from the environment, not Redis."""
ENTRY_POINTS = "importlib.metadata"
PAYLOAD_LOADER = "zoomtune/common/sklearn_payload.py"
"""The one exception to "nothing read from Redis is unpickled": a ZoomSearchCV study's payload
(estimator and data), unpickled only after its HMAC-SHA256 verifies with a key that only the
coordinator and the workers hold, only by workers started with --allow-sklearn-payloads. The
test below pins that file to exactly one `pickle.loads`, behind `hmac.compare_digest`."""


def dangerous_uses(
    tree: ast.AST,
    *,
    may_import: bool,
    may_read_data: bool = False,
    may_unpickle: bool = False,
    may_list_entry_points: bool = False,
) -> list[str]:
    """Modules and calls in `tree` that could turn data into code."""
    found = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        for module in modules:
            root = module.split(".")[0]
            if may_read_data and module == PACKAGE_DATA:
                continue
            if may_list_entry_points and module == ENTRY_POINTS:
                continue
            if may_unpickle and module == "pickle":
                continue
            if root in UNPICKLERS or (root in IMPORTERS and not may_import):
                found.append(f"line {node.lineno}: imports {module}")
        if isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else None
            if isinstance(function, ast.Attribute):
                name = function.attr
                if function.attr in ("load", "unsafe_load") and (
                    isinstance(function.value, ast.Name) and function.value.id == "yaml"
                ):
                    found.append(f"line {node.lineno}: calls yaml.{function.attr}")
            if isinstance(function, ast.Name) and name in BUILTIN_CALLS:
                found.append(f"line {node.lineno}: calls {name}")
            if name in DYNAMIC_CALLS or (name in IMPORTER_CALLS and not may_import):
                found.append(f"line {node.lineno}: calls {name}")
        if isinstance(node, ast.Constant) and node.value in (
            "pickle",
            "application/x-python-serialize",
        ):
            found.append(f"line {node.lineno}: names the pickle serializer")
    return found


def test_nothing_read_from_redis_is_unpickled_or_imported() -> None:
    sources = sorted((REPO / "zoomtune").rglob("*.py"))
    assert len(sources) > 15
    problems = []
    for path in sources:
        relative = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), filename=relative)
        problems += [
            f"{relative} {use}"
            for use in dangerous_uses(
                tree,
                may_import=relative == REGISTRY,
                may_read_data=relative == SCRIPT_LOADER,
                may_unpickle=relative == PAYLOAD_LOADER,
                may_list_entry_points=relative == ENTRY_POINT_LISTER,
            )
        ]
    assert not problems, problems

    # The registry imports only what `build` was given; a lookup by name never imports a name
    # that is not already an allow-listed target.
    registry = (REPO / REGISTRY).read_text()
    get = registry[registry.index("    def get(") :]
    assert "if name not in self.targets:" in get
    assert "load_target(self.targets[name])" in get


def test_the_entry_point_lister_never_loads_an_entry_point() -> None:
    tree = ast.parse((REPO / ENTRY_POINT_LISTER).read_text())
    loads = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("load", "module", "attr")
    ]
    assert loads == []
    # and only importlib.metadata is let through there
    imports = "from importlib.metadata import entry_points\nfrom importlib import import_module"
    assert (
        len(dangerous_uses(ast.parse(imports), may_import=False, may_list_entry_points=True)) == 1
    )


def pickle_calls(tree: ast.AST) -> list[tuple[str, int]]:
    """Every `pickle.<name>(...)` call in `tree`, as (name, line)."""
    return [
        (node.func.attr, node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pickle"
    ]


def test_the_only_unpickling_is_the_payload_load_behind_its_hmac_check() -> None:
    tree = ast.parse((REPO / PAYLOAD_LOADER).read_text())
    # The file unpickles exactly once (pickle.dumps seals on the coordinator's side),
    calls = pickle_calls(tree)
    assert sorted(name for name, _ in calls) == ["dumps", "loads"], calls
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "Unpickler"]
    # in open_payload, after compare_digest has checked the MAC and refused a mismatch.
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    opener = functions["open_payload"]
    load_line = next(line for name, line in pickle_calls(opener) if name == "loads")
    checks = [
        node
        for node in ast.walk(opener)
        if isinstance(node, ast.If)
        and "compare_digest" in ast.unparse(node.test)
        and ast.unparse(node.test).startswith("not ")
        and isinstance(node.body[-1], ast.Raise)
    ]
    assert len(checks) == 1
    assert checks[0].lineno < load_line
    # No other source imports the loader: only the sklearn-cv objective.
    importers = [
        path.relative_to(REPO).as_posix()
        for path in sorted((REPO / "zoomtune").rglob("*.py"))
        if any(
            isinstance(node, ast.ImportFrom)
            and any(alias.name == "open_payload" for alias in node.names)
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert importers == ["zoomtune/workers/objectives/sklearn_cv.py"], importers


def test_the_scan_finds_what_it_looks_for() -> None:
    bad = ast.parse(
        "import pickle\nfrom importlib import import_module\nimport yaml\n"
        "pickle.loads(b'')\nimport_module('os')\neval('1')\nyaml.load('')\n"
        "app.conf.accept_content = ['pickle']\n"
    )
    found = dangerous_uses(bad, may_import=False)
    assert [use.split(": ")[1] for use in found] == [
        "imports pickle",
        "imports importlib",
        "calls import_module",
        "calls eval",
        "calls yaml.load",
        "names the pickle serializer",
    ], found
    assert dangerous_uses(ast.parse("import re\nre.compile('x')"), may_import=False) == []
    # Reading package data is allowed only where it is allowed, and only importlib.resources
    data = ast.parse("from importlib.resources import files\nfrom importlib import import_module")
    assert len(dangerous_uses(data, may_import=False)) == 2
    assert len(dangerous_uses(data, may_import=False, may_read_data=True)) == 1


def stop_and_check_nothing_left(worker: WorkerProcess) -> None:
    """Stop the worker; no process of it (daemon or pool child) may be left running."""
    worker.stop()
    wait_until(
        lambda: not live_group_members(worker.pid),
        timeout=10,
        what=f"every process of worker {worker.pid} to end",
    )


def run_honest_trial(client: redis.Redis, study: StudyStore, trial: int) -> None:
    """Send trial `trial` as the coordinator would, with its stored params; it must complete
    with the score of those params."""
    params = dict(study.trial(trial).params)
    client.lpush(QUEUE_KEY, kombu_envelope(task_body(trial_message(trial, params=params))))
    done = wait_until(
        lambda: (t := study.trial(trial)).status.is_finished() and t,
        timeout=60,
        what=f"the honest trial {trial} to finish",
    )
    assert done.status is TrialStatus.COMPLETE, done
    assert done.score == pytest.approx(deterministic_score(params))


@pytest.mark.redis
@pytest.mark.slow
def test_a_forged_message_for_a_queued_trial_records_nothing_and_the_honest_one_runs(
    real_client: redis.Redis, study: StudyStore, worker: WorkerProcess
) -> None:
    # Given trial 0 QUEUED with params x=0.25, y=2, and a message naming trial 0 attempt 1
    # with other params, inside the space, that would score better than the stored ones
    stored = dict(study.trial(0).params)
    forged_params = {"x": 0.3, "y": 5}
    assert deterministic_score(forged_params) < deterministic_score(stored)
    forged = trial_message(0, params=forged_params)
    events_before = real_client.xlen(study.keys.events)

    # When the forged message arrives first
    real_client.lpush(QUEUE_KEY, kombu_envelope(task_body(forged)))
    wait_until(
        lambda: study.counters()["forged_messages"] == 1,
        timeout=60,
        what="the forged message to be counted",
    )

    # Then nothing ran and nothing was recorded: the trial is still QUEUED, attempt 1
    trial = study.trial(0)
    assert (trial.status, trial.attempt, trial.score, trial.started_at) == (
        TrialStatus.QUEUED,
        1,
        None,
        None,
    )
    assert dict(trial.params) == stored
    assert real_client.xlen(study.keys.events) == events_before  # no "started" event
    assert "params are not the trial's" in worker.log()
    assert worker.alive()

    # And the honest delivery that follows runs and records the stored params' score
    run_honest_trial(real_client, study, 0)
    counters = study.counters()
    assert counters["forged_messages"] == 1
    assert counters["duplicate_deliveries"] == 0
    stop_and_check_nothing_left(worker)


def signature(task: str, *args: object, queue: str | None = None) -> dict[str, object]:
    """A Celery signature as JSON, the way a canvas puts it inside a message."""
    return {
        "task": task,
        "args": list(args),
        "kwargs": {},
        "options": {} if queue is None else {"queue": queue},
        "subtask_type": None,
        "immutable": False,
    }


@pytest.mark.redis
@pytest.mark.slow
def test_celery_builtin_tasks_are_refused_without_running_or_fanning_out(
    real_client: redis.Redis, study: StudyStore, worker: WorkerProcess
) -> None:
    # Given a celery.group that nests another group, each fanning out into a probe queue, and
    # a celery.accumulate whose callback would publish into the probe queue once it ran
    probe = "probe"
    probe_key = f"{PREFIX}{probe}"
    leaf = signature("celery.accumulate", 1, queue=probe)
    inner = signature("celery.group", [leaf, leaf], [["g2", None], None], "g2", [])
    outer = task_body([inner, leaf, leaf], [["g1", None], None], "g1", [])
    accumulate = json.dumps(
        [[1, 2], {}, {"callbacks": [leaf], "errbacks": None, "chain": None, "chord": None}]
    ).encode()

    # When both are pushed into the worker's queue
    real_client.lpush(QUEUE_KEY, kombu_envelope(outer, task="celery.group"))
    real_client.lpush(QUEUE_KEY, kombu_envelope(accumulate, task="celery.accumulate"))
    wait_until(
        lambda: all(
            f"refused a message for task {name!r}" in worker.log()
            for name in ("celery.group", "celery.accumulate")
        ),
        timeout=60,
        what="the worker to refuse both built-in tasks",
    )

    # Then nothing ran: no message was published anywhere, the queue is empty
    assert real_client.llen(probe_key) == 0
    assert real_client.llen(QUEUE_KEY) == 0
    assert worker.alive()
    # And the same worker still runs a trial
    run_honest_trial(real_client, study, 1)
    assert real_client.llen(probe_key) == 0
    stop_and_check_nothing_left(worker)


def peak_memory_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of process `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@pytest.mark.redis
@pytest.mark.slow
def test_a_compressed_message_is_refused_without_being_decompressed(
    real_client: redis.Redis, study: StudyStore, worker: WorkerProcess
) -> None:
    # Given a 100 MiB message body compressed to about 100 KB
    bomb = zlib.compress(b"\0" * (100 * 1024 * 1024), 9)
    assert len(bomb) < 200_000
    envelope = json.loads(kombu_envelope(bomb))
    envelope["headers"]["compression"] = "application/x-gzip"
    before = peak_memory_mb(worker.pid)

    # When it is pushed into the worker's queue
    real_client.lpush(QUEUE_KEY, json.dumps(envelope))
    wait_until(
        lambda: "refused a compressed message" in worker.log(),
        timeout=60,
        what="the worker to refuse the compressed message",
    )

    # Then the worker's main process never held the decompressed body
    assert peak_memory_mb(worker.pid) - before < 30, (before, peak_memory_mb(worker.pid))
    assert real_client.llen(QUEUE_KEY) == 0
    assert worker.alive()
    # And it still runs a trial
    run_honest_trial(real_client, study, 0)
    stop_and_check_nothing_left(worker)


@pytest.mark.parametrize(
    ("headers", "body", "refused_for"),
    [
        ({"task": TASK_NAME}, "e30=", None),
        ({"task": TASK_NAME, "compression": "application/x-gzip"}, "e30=", "compressed"),
        ({"task": TASK_NAME, "compression": "zlib"}, "e30=", "compressed"),
        ({"task": "celery.group"}, "e30=", "task 'celery.group'"),
        ({"task": "celery.chord_unlock"}, "e30=", "task 'celery.chord_unlock'"),
        ({}, "e30=", "task None"),  # protocol 1: the task would be read from the body
        (None, "e30=", "without headers"),
        ({"task": TASK_NAME}, "A" * (MAX_ENCODED_BODY + 1), "at most 65536 bytes"),
    ],
)
def test_the_intake_decides_from_headers_and_body_length_alone(
    headers: object, body: str, refused_for: str | None
) -> None:
    reason = refusal(headers, body)
    assert (reason is None) == (refused_for is None), reason
    assert refused_for is None or refused_for in str(reason)


def test_a_worker_app_knows_no_task_but_run_trial() -> None:
    app = make_celery(Settings(broker_url="redis://127.0.0.1:1/0"))

    def run_trial(message: object) -> str:
        return "ok"

    app.task(name=TASK_NAME, shared=False)(run_trial)
    assert "celery.group" in app.tasks  # Celery's built-ins, before
    allow_only_trials(app)
    assert list(app.tasks) == [TASK_NAME]
    assert GuardTrialQueues in app.steps["consumer"]


# -- Queue entries that are not message envelopes (zoomtune/workers/transport.py)
# ----------------------


def envelope_with(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """An honest envelope (decoded), changed in place by `change`."""
    envelope: dict[str, Any] = json.loads(kombu_envelope(task_body(trial_message())))
    change(envelope)
    return envelope


def without(mapping: dict[str, Any], key: str) -> None:
    del mapping[key]


# Decoded entries that cannot be kombu envelopes, and what the refusal says about each.
NOT_ENVELOPES: dict[str, tuple[object, str]] = {
    "a list": ([1], "a JSON array, not an object"),
    "a string": ("x", "a JSON string, not an object"),
    "null": (None, "a JSON null, not an object"),
    "a number": (42, "a JSON number, not an object"),
    "no properties": ({"body": "", "headers": {}}, "no 'properties' object"),
    "properties a list": (
        envelope_with(lambda e: e.update(properties=[1])),
        "no 'properties' object",
    ),
    "no delivery_tag": (
        envelope_with(lambda e: without(e["properties"], "delivery_tag")),
        "no 'delivery_tag' string",
    ),
    "a delivery_tag list": (
        envelope_with(lambda e: e["properties"].update(delivery_tag=[1])),
        "no 'delivery_tag' string",
    ),
    "no delivery_info": (
        envelope_with(lambda e: without(e["properties"], "delivery_info")),
        "no 'delivery_info' object",
    ),
    "a delivery_info string": (
        envelope_with(lambda e: e["properties"].update(delivery_info="x")),
        "no 'delivery_info' object",
    ),
    "headers a list": (
        envelope_with(lambda e: e.update(headers=[1])),
        "'headers' is a JSON array, not an object",
    ),
    "a body number": (
        envelope_with(lambda e: e.update(body=5)),
        "'body' is a JSON number, not a string",
    ),
    "a body not base64": (
        envelope_with(lambda e: e.update(body="!!!notbase64")),
        "its body is not base64",
    ),
    "an unknown body_encoding": (
        envelope_with(lambda e: e["properties"].update(body_encoding="rot13")),
        "'body_encoding' 'rot13' is not one kombu decodes",
    ),
    "a content-type list": (
        envelope_with(lambda e: e.update({"content-type": ["x"]})),
        "'content-type' is a JSON array, not a string",
    ),
}
# Raw entries that kombu cannot even decode as JSON text.
NOT_JSON = {"not UTF-8": b"\xff\xfe\x80garbage", "not JSON": b"hello world"}


@pytest.mark.parametrize("kind", NOT_ENVELOPES)
def test_an_entry_that_is_not_an_envelope_is_named_for_what_it_lacks(kind: str) -> None:
    entry, reason = NOT_ENVELOPES[kind]
    problem = envelope_problem(entry)
    assert reason in str(problem), problem


def test_an_honest_envelope_and_an_empty_body_are_envelopes() -> None:
    assert envelope_problem(json.loads(kombu_envelope(task_body(trial_message())))) is None
    assert envelope_problem(envelope_with(lambda e: e.update(body="", headers=None))) is None


def test_a_refusal_never_echoes_the_entry() -> None:
    secret = "A" * 1000
    for entry in (
        [secret],
        envelope_with(lambda e: e.update(headers=[secret])),
        envelope_with(lambda e: e["properties"].update(body_encoding=secret)),
    ):
        assert len(str(envelope_problem(entry))) < 120
    assert secret not in str(read_unacked(json.dumps([[secret], "", "q"])))


def test_an_unacked_entry_must_be_an_envelope_with_its_exchange_and_routing_key() -> None:
    honest = json.loads(kombu_envelope(task_body(trial_message())))
    assert read_unacked(json.dumps([honest, "", QUEUES["cpu"]]).encode()) == (
        honest,
        "",
        QUEUES["cpu"],
    )
    refused = {
        b"\xff\xfe": "not UTF-8 text",
        b"garbage": "not JSON",
        b"42": "not [message, exchange, routing key]",
        b"[1, 2]": "not [message, exchange, routing key]",
        b'"abc"': "not [message, exchange, routing key]",
        json.dumps([honest, 1, "q"]).encode(): "exchange or routing key is not a string",
        json.dumps([[1], "", "q"]).encode(): "a JSON array, not an object",
        json.dumps([{"headers": {}}, "", "q"]).encode(): "no 'properties' object",
    }
    for raw, reason in refused.items():
        problem = read_unacked(raw)
        assert isinstance(problem, str), raw
        assert reason in problem, (raw, problem)


def test_only_the_worker_app_reads_through_the_guarded_transport() -> None:
    def run_trial(message: object) -> str:
        return "ok"

    for url, transport in [
        ("redis://:pw@127.0.0.1:1/0", TrialQueueTransport),
        ("rediss://:pw@127.0.0.1:1/0?ssl_ca_certs=/ca.pem", TlsTrialQueueTransport),
    ]:
        settings = Settings(broker_url=url)
        coordinator = make_celery(settings)
        assert coordinator.conf.broker_transport is None  # kombu's own: it only publishes
        worker = make_celery(settings)
        worker.task(name=TASK_NAME, shared=False)(run_trial)
        allow_only_trials(worker)
        connection = worker.connection_for_read()
        # The URL still gives host, port, password and database, and TLS is set as for kombu's
        assert connection.transport_cls is transport
        assert isinstance(connection.transport, TrialQueueTransport)
        assert (connection.hostname, connection.port, connection.password) == (
            "127.0.0.1",
            1,
            "pw",
        )
        assert connection.ssl == coordinator.connection_for_read().ssl
        assert bool(connection.ssl) == url.startswith("rediss:")
        # And the logs still show the broker's URL, password hidden
        assert connection.as_uri() == url.split("?")[0].replace(":pw@", ":**@")


def push_not_envelopes(client: redis.Redis, pidbox: str) -> int:
    """Every kind of entry that is not an envelope onto the CPU queue, and onto the remote
    control channel; how many refusals the worker must log."""
    raws = [*NOT_JSON.values(), *(json.dumps(entry) for entry, _ in NOT_ENVELOPES.values())]
    for raw in raws:
        client.lpush(QUEUE_KEY, raw)
    broadcast = [json.dumps(entry) for entry, _ in list(NOT_ENVELOPES.values())[:6]]
    for raw in broadcast:
        assert client.publish(pidbox, raw) == 1  # the worker is subscribed
    return len(raws) + len(broadcast)


@pytest.mark.redis
@pytest.mark.slow
def test_s16_entries_that_are_not_envelopes_are_dropped_and_the_worker_runs_on(
    redis_server: RedisServer, real_client: redis.Redis, study: StudyStore, tmp_path: Path
) -> None:
    # Given a worker that also listens for remote control (a pub/sub channel)
    worker = WorkerProcess(
        redis_server.url,
        tmp_path / "worker.log",
        objectives=[objective_option("sleepy")],
        env={"ZOOMTUNE_REMOTE_CONTROL": "1"},
    ).start()
    try:
        worker.wait_ready()
        wait_until(
            lambda: real_client.execute_command("PUBSUB", "NUMPAT") > 0,
            timeout=30,
            what="the worker to subscribe to remote control",
        )

        # When entries that are not message envelopes are pushed with raw redis-py
        expected = push_not_envelopes(real_client, f"{PREFIX}celery.pidbox")

        # Then each is dropped with one line, and the worker is still up
        wait_until(
            lambda: not worker.alive() or worker.log().count(REFUSED) >= expected,
            timeout=60,
            what=f"the worker to refuse {expected} entries",
        )
        assert worker.alive(), worker.log()[-3000:]
        assert worker.log().count(REFUSED) == expected
        assert "Unrecoverable error" not in worker.log()
        assert "Connection to broker lost" not in worker.log()
        assert real_client.llen(QUEUE_KEY) == 0
        assert real_client.hlen(f"{PREFIX}unacked") == 0
        assert worker.alive()
        # And an honest trial sent afterwards runs and is recorded
        run_honest_trial(real_client, study, 0)
    finally:
        stop_and_check_nothing_left(worker)


@pytest.mark.redis
@pytest.mark.slow
def test_s16_forged_unacked_entries_do_not_stop_a_worker_and_a_lost_trial_is_restored(
    redis_server: RedisServer, real_client: redis.Redis, study: StudyStore, tmp_path: Path
) -> None:
    # Given forged entries in the hash of unacked deliveries, long past their visibility
    # timeout, beside one honest delivery of trial 1 that a dead worker never acked
    unacked, index = f"{PREFIX}unacked", f"{PREFIX}unacked_index"
    honest = json.loads(
        kombu_envelope(task_body(trial_message(1, params=dict(study.trial(1).params))))
    )
    forged: dict[str, bytes] = {
        "not-json": b"garbage",
        "not-utf8": b"\xff\xfe",
        "a-pair": b"[1, 2]",
        "a-string": b'"abc"',
        "a-list-message": json.dumps([[1], "", QUEUES["cpu"]]).encode(),
        "no-properties": json.dumps([{"headers": {}}, "", QUEUES["cpu"]]).encode(),
    }
    entries = {**forged, "honest": json.dumps([honest, "", QUEUES["cpu"]]).encode()}
    real_client.hset(unacked, mapping=entries)  # type: ignore[arg-type]
    real_client.zadd(index, dict.fromkeys(entries, 1.0))

    # When a worker starts (it puts expired deliveries back as it starts)
    worker = WorkerProcess(
        redis_server.url, tmp_path / "worker.log", objectives=[objective_option("sleepy")]
    ).start()
    try:
        worker.wait_ready()

        # Then the forged entries are removed with one line each, and the lost trial runs
        wait_until(
            lambda: study.trial(1).status.is_finished(),
            timeout=60,
            what="the restored trial 1 to finish",
        )
        assert study.trial(1).status is TrialStatus.COMPLETE
        assert worker.log().count(REFUSED) == len(forged)
        # (the restored delivery is acked just after its result is recorded: wait for it)
        wait_until(lambda: real_client.hlen(unacked) == 0, timeout=10, what="an empty unacked hash")
        assert worker.alive()
        # And an honest trial sent afterwards runs too
        run_honest_trial(real_client, study, 0)
    finally:
        stop_and_check_nothing_left(worker)


@pytest.mark.redis
def test_every_read_of_the_transport_drops_what_is_not_an_envelope(
    redis_server: RedisServer, real_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the worker's transport in this process, on a real redis-server
    app = make_celery(Settings(broker_url=redis_server.url))
    app.conf.broker_transport = TrialQueueTransport
    unacked = f"{PREFIX}unacked"
    honest = json.loads(kombu_envelope(task_body(trial_message())))
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        # When a queue entry is not JSON, a direct read finds nothing, and the entry is gone
        real_client.lpush(QUEUE_KEY, b"\xff not json")
        with pytest.raises(Empty):
            channel._get(QUEUES["cpu"])
        assert real_client.llen(QUEUE_KEY) == 0
        # And a forged unacked entry is removed, by the sweep and by the requeue of a delivery
        # this worker holds, while an honest one goes back to its queue
        real_client.hset(unacked, "swept", "[1, 2]")
        real_client.hset(unacked, "held", "garbage")
        real_client.hset(unacked, "honest", json.dumps([honest, "", QUEUES["cpu"]]))
        channel.qos.restore_by_tag("swept")
        channel._restore(SimpleNamespace(delivery_tag="held"))
        channel.qos.restore_by_tag("honest")
        assert real_client.hlen(unacked) == 0
        assert json.loads(real_client.rpop(QUEUE_KEY))["body"] == honest["body"]
    app.close()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith(REFUSED)]
    assert [line.split(": ", 1)[1] for line in refusals] == [
        "not JSON (Expecting value at character 0); dropped",
        "an unacked entry that is not [message, exchange, routing key]; dropped",
        "not JSON (Expecting value at character 0); dropped",
    ]


def test_s7_an_ack_redis_refuses_still_frees_the_prefetch_window() -> None:
    # Given a worker channel's QoS with prefetch 1, holding one delivery, and a Redis that is
    # down (SIGKILLed between the trial's result and its ack)
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.5)

    class Channel:
        unacked_key, unacked_index_key = "unacked", "unacked_index"

        @contextlib.contextmanager
        def conn_or_acquire(self, client: Any = None) -> Iterator[redis.Redis]:
            yield down

    qos = TrialQueueQoS(Channel(), prefetch_count=1)
    qos._on_collect.cancel()  # no restore at exit: there is no real channel
    qos._delivered["tag-1"] = object()
    assert not qos.can_consume()

    # When its ack fails
    with pytest.raises(redis.ConnectionError):
        qos.ack("tag-1")

    # Then the delivery left the prefetch window: the worker consumes again once Redis is back
    # (kombu's own QoS stays full, and the worker never took another message)
    assert qos.can_consume()
