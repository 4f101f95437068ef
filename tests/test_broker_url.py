"""The broker URL at the command line: a bad one is refused with a clear message and exit code 2
by every command of both CLIs, a refused one ends the coordinator at once and a worker after
`--refused-timeout`, and the password shows up nowhere: not in messages, log lines or
tracebacks.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click.testing
import pytest
from click.testing import CliRunner

from tests.harness import REPO, study_toml
from zoomtune.common.errors import ConfigError
from zoomtune.common.redact import RedactingFormatter, print_redacted_exception, redact_url
from zoomtune.common.redis_client import MISSING_CREDENTIALS
from zoomtune.common.settings import Settings
from zoomtune.coordinator import cli as coordinator_cli
from zoomtune.coordinator.progress import LogProgress, notes_from_logging
from zoomtune.coordinator.redis_server import RedisServer, free_port
from zoomtune.coordinator.rounds import StudyOutcome

SECRET = "hunter2-Pw-d0nt-leak"

BAD_URLS = {
    "port not a number": (f"redis://:{SECRET}@127.0.0.1:bad/0", "bad host or port"),
    "port out of range": (f"redis://:{SECRET}@127.0.0.1:99999/0", "bad host or port"),
    "unix socket": (f"unix:///run/redis.sock?password={SECRET}", "Unix socket"),
    "bare unix": ("unix://", "Unix socket"),
    "kombu's socket": (f"redis+socket://:{SECRET}@/run/redis.sock", "Unix socket"),
    "bogus cert reqs": (f"rediss://:{SECRET}@h:6380/0?ssl_cert_reqs=bogus", "ssl_cert_reqs"),
    "tls option without tls": (f"redis://:{SECRET}@h/0?ssl_cert_reqs=required", "rediss://"),
    "unknown option": (f"redis://:{SECRET}@h/0?socket_timeout=x", "unknown parameter"),
    "password in the query": (f"redis://h/0?password={SECRET}", "?password="),
    "database not a number": (f"redis://:{SECRET}@h/zero", "database 'zero'"),
    "unescaped # in password": ("redis://:hunter#2@h/0", "percent-encode"),
    "not redis": (f"amqp://:{SECRET}@h/", "redis:// or rediss://"),
}


def coordinator(*args: str) -> click.testing.Result:
    """`coordinator ARGS` in this process, with no broker in the environment."""
    env = {"ZOOMTUNE_BROKER_URL": ""}
    return CliRunner().invoke(coordinator_cli.main, list(args), env=env, catch_exceptions=False)


def worker(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`worker ARGS` as a real process (the daemon's own entry point)."""
    environment = {k: v for k, v in os.environ.items() if k != "ZOOMTUNE_BROKER_URL"}
    return subprocess.run(
        [sys.executable, "-m", "zoomtune.workers.cli", *args],
        cwd=REPO,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(study_toml(objective="branin", rounds=1, trials_per_round=2))
    return path


def secret_of(url: str) -> str:
    return "hunter#2" if "hunter#2" in url else SECRET


# -- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"redis://:{SECRET}@/0", "redis://:**@/0"),
        (f"unix:///run/redis.sock?password={SECRET}", "unix:///run/redis.sock?password=**"),
        (f"redis://u:{SECRET}@h/0?password={SECRET}", "redis://u:**@h/0?password=**"),
        ("redis://:pa@ss#word@h:6379/0", "redis://:**@h:6379/0"),
        (
            f"cannot connect to 'redis://:{SECRET}@h:1/0' or rediss://z:{SECRET}@g/0: refused",
            "cannot connect to 'redis://:**@h:1/0' or rediss://z:**@g/0: refused",
        ),
        ("put it in the URL (redis://:PASSWORD@host:port/0)", "(redis://:PASSWORD@host:port/0)"),
        ("redis://h:6379/0 and user@example.org", "redis://h:6379/0 and user@example.org"),
    ],
)
def test_redact_url_hides_the_password_of_every_url_in_a_text(text: str, shown: str) -> None:
    assert shown in redact_url(text)
    assert SECRET not in redact_url(text)


def test_log_lines_and_tracebacks_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise RuntimeError(f"Cannot connect to redis://:{SECRET}@h:6379/0")
    except RuntimeError as exc:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "lost %s", ("it",), None)
        record.exc_info = (type(exc), exc, exc.__traceback__)
        line = RedactingFormatter("%(message)s").format(record)
        print_redacted_exception(type(exc), exc, exc.__traceback__)
    printed = capsys.readouterr().err
    assert "Traceback" in printed
    assert "redis://:**@h:6379/0" in printed
    assert "lost it" in line
    assert "redis://:**@h:6379/0" in line
    assert SECRET not in printed + line


# -- bad URLs: exit 2, a clear message, no secret, no traceback ---------------------------------


@pytest.mark.parametrize(("url", "problem"), BAD_URLS.values(), ids=BAD_URLS.keys())
def test_settings_refuse_a_bad_broker_url_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)) as refused:
        Settings.from_env({"ZOOMTUNE_BROKER_URL": url})
    assert secret_of(url) not in str(refused.value)


@pytest.mark.parametrize(("url", "problem"), BAD_URLS.values(), ids=BAD_URLS.keys())
def test_every_coordinator_command_refuses_a_bad_broker_url_with_exit_code_2(
    url: str, problem: str, study_file: Path
) -> None:
    commands = {
        "start": ["start", str(study_file), "--connect-timeout", "1"],
        "status": ["status", "demo"],
        "list": ["list"],
        "export": ["export", "demo"],
        "cancel": ["cancel", "demo"],
        "delete": ["delete", "demo", "--yes"],
        "flower": ["flower"],
    }
    for name, args in commands.items():
        done = coordinator(*args, "--broker", url)
        assert done.exit_code == 2, (name, done.output)
        assert problem in done.output, (name, done.output)
        assert secret_of(url) not in done.output, (name, done.output)
        assert "Traceback" not in done.output, (name, done.output)


@pytest.mark.parametrize(
    "url",
    [BAD_URLS[name][0] for name in ("port not a number", "unix socket", "bogus cert reqs")],
)
def test_a_worker_refuses_a_bad_broker_url_with_exit_code_2(url: str) -> None:
    done = worker("start", "--concurrency", "1", env={"ZOOMTUNE_BROKER_URL": url})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the broker URL" in done.stderr or "ssl_cert_reqs" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_url_without_a_host_never_prints_its_password(study_file: Path) -> None:
    # redis-py reads a URL without a host as localhost: the message names that, not the URL
    port = free_port()
    done = coordinator(
        "start",
        str(study_file),
        "--broker",
        f"redis://:{SECRET}@:{port}/0",
        "--connect-timeout",
        "0.5",
    )
    assert done.exit_code == 1, done.output
    assert f"cannot reach broker at localhost:{port}" in done.output
    assert SECRET not in done.output


# -- a Redis that refuses: a clear reason; the coordinator stops, a worker gives up -----------


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server that needs the password SECRET."""
    server = RedisServer(tmp_path / "locked", password=SECRET).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.redis
def test_a_missing_password_is_named_as_such_by_the_coordinator(
    locked_redis: RedisServer, study_file: Path
) -> None:
    no_password = f"redis://127.0.0.1:{locked_redis.port}/0"
    for args in (["start", str(study_file)], ["status", "demo"], ["list"]):
        done = coordinator(*args, "--broker", no_password)
        assert done.exit_code == 1, (args, done.output)
        text = " ".join(done.output.split())
        assert MISSING_CREDENTIALS in text, (args, done.output)
        assert "HELLO" not in text, (args, done.output)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize(
    ("password", "reason"),
    [("", MISSING_CREDENTIALS), (f"wrong-{SECRET}", "the broker refused the credentials")],
    ids=["no password", "wrong password"],
)
def test_a_refused_worker_gives_up_after_the_refused_timeout_and_exits_1(
    locked_redis: RedisServer, password: str, reason: str
) -> None:
    url = f"redis://:{password}@127.0.0.1:{locked_redis.port}/0"
    started = time.monotonic()
    done = worker(
        "start",
        "--concurrency",
        "1",
        "--refused-timeout",
        "2",
        env={"ZOOMTUNE_BROKER_URL": url},
        timeout=60,
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert reason in " ".join(done.stderr.split())
    assert "refused for 2s" in done.stderr
    assert "retrying" in done.stdout  # it said why while it waited
    assert took < 30, f"took {took:.1f}s"
    assert SECRET not in done.stdout + done.stderr


# -- warnings have the same format as every other line ------------------------------------------


def test_logged_warnings_become_timestamped_progress_lines() -> None:
    stream = io.StringIO()
    progress = LogProgress(stream)
    with notes_from_logging(progress):
        logging.getLogger("zoomtune.coordinator").warning("trial %d: lease expired; requeued", 24)
    logging.getLogger("zoomtune.coordinator").warning("after the block: not a note")
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d warning: trial 24: lease expired; requeued\n", stream.getvalue()
    )


def test_coordinator_start_prints_the_round_loops_warnings_as_timestamped_lines(
    study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_study(*args: object, **kwargs: object) -> StudyOutcome:
        logging.getLogger("zoomtune.coordinator").warning("trial 24: lease expired; requeued")
        logging.getLogger("zoomtune.coordinator").warning(
            "trial 0 waited 30s with an empty queue; re-sending it"
        )
        return StudyOutcome("complete", "all rounds finished", None)

    monkeypatch.setattr(coordinator_cli, "run_study", run_study)
    done = coordinator("start", str(study_file), "--broker", "redis://127.0.0.1:1/0")
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if "lease expired" in line or "30s" in line]
    assert len(lines) == 2, done.output
    for line in lines:
        assert re.match(r"\d\d:\d\d:\d\d warning: trial \d+", line), done.output
