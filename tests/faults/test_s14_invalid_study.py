"""S14: an invalid search space or study file given to `coordinator start`.

Promise: rejected at submission with an error naming the file and the field (exit code 2), and
nothing is written to Redis and nothing is queued. Checked live: the bad file is given to
`coordinator start` against a real redis-server, whose DBSIZE and queue length must not move.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.harness import study_toml
from zoomtune.common.redis_client import connect
from zoomtune.coordinator.cli import main
from zoomtune.coordinator.redis_server import RedisServer

pytestmark = [pytest.mark.redis]

QUEUE = "zoomtune:trials.cpu"

TWO_X = (
    'x = { type = "float", low = 0.0, high = 1.0 }\nx = { type = "float", low = 0.0, high = 2.0 }'
)

BAD: dict[str, tuple[str | bytes, str]] = {
    # name: (the study file, what the error must say)
    "low > high": (
        study_toml(space='x = { type = "float", low = 1.0, high = 0.0 }'),
        "[space.x] low <= high must hold, got (low=1.0, high=0.0)",
    ),
    "NaN bound": (
        study_toml(space='x = { type = "float", low = nan, high = 1.0 }'),
        "[space.x] low must be a finite number, got low=nan",
    ),
    "inf bound": (
        study_toml(space='x = { type = "float", low = 0.0, high = inf }'),
        "[space.x] high must be a finite number, got high=inf",
    ),
    "log scale with low <= 0": (
        study_toml(space='x = { type = "float", low = 0.0, high = 1.0, scale = "log" }'),
        "[space.x] log scale needs low > 0, got low=0.0",
    ),
    "non-integer int bound": (
        study_toml(space='y = { type = "int", low = 1.5, high = 8 }'),
        "[space.y] low: input should be a valid integer, got 1.5",
    ),
    "k <= 0": (study_toml(extra="top_k = 0"), "[search] top_k: expected an int >= 1"),
    "k > N": (
        study_toml(extra="top_k = 9"),
        "[search] top_k: must not exceed the trials of the first round (4), got top_k=9",
    ),
    "n_trials <= 0": (study_toml(trials_per_round=0), "[search] trials_per_round: expected"),
    "unknown type": (
        study_toml(space='x = { type = "floot", low = 0.0, high = 1.0 }'),
        "[space.x] type: unknown parameter type 'floot'",
    ),
    "duplicate names": (study_toml(space=TWO_X), "(a key or table given twice?)"),
    "a queue other than cpu/gpu": (
        study_toml(resources='queue = "tpu"'),
        "[resources] queue: input should be 'cpu' or 'gpu', got 'tpu'",
    ),
    "non-UTF-8 file": (
        study_toml().encode().replace(b'"demo"', b'"d\xe9mo"'),
        "not UTF-8 text (byte 0xe9",
    ),
    "very long name": (study_toml(name="n" * 300), "[study] name: a study name is 1 to 64"),
    "timeout not a duration": (
        study_toml(resources="timeout = true"),
        "[resources] timeout: expected a duration such as '30s' or '10m', got True",
    ),
    "lease shorter than two heartbeats": (
        study_toml(resources='heartbeat = "2s"\nlease = "3s"'),
        "[resources] lease: must be at least twice the heartbeat (2s)",
    ),
    "max_attempts 0": (
        study_toml(resources="max_attempts = 0"),
        "[resources] max_attempts: input should be greater than or equal to 1, got 0",
    ),
    "timeout beyond the visibility timeout": (
        study_toml(resources='timeout = "2d"'),
        "[resources] timeout: trials may run 172800s, but the broker's visibility timeout is "
        "86400s (ZOOMTUNE_VISIBILITY_TIMEOUT)",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_study_file_is_refused_before_anything_reaches_redis(
    redis_server: RedisServer, tmp_path: Path, case: str
) -> None:
    content, message = BAD[case]
    study = tmp_path / "study.toml"
    if isinstance(content, bytes):
        study.write_bytes(content)
    else:
        study.write_text(content)
    # Given a real Redis holding an earlier study's key and a queued message
    client = connect(redis_server.url)
    client.set("zoomtune:{earlier}:spec", "{}")
    client.rpush(QUEUE, "a message")
    before = (client.dbsize(), client.llen(QUEUE))

    # When `coordinator start` is given the bad file against it
    result = CliRunner().invoke(
        main,
        ["start", str(study), "--broker", redis_server.url, "--run-dir", str(tmp_path / "run")],
    )

    # Then it fails with exit code 2, naming the file and the field, and touched nothing
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert f"error: {study}" in text
    assert message in text
    assert (client.dbsize(), client.llen(QUEUE)) == before
    assert not (tmp_path / "run").exists()
