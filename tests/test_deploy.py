"""The deployment files in deploy/ are what users apply as they are, so they are checked here:
every YAML file and unit parses, every zoomtune command line in them is accepted by the real
CLI (click's own parser), and images, environment names, ports, the ACL and the GPU requests
agree across Docker, compose, Kubernetes and systemd.

No container is started: this machine has no Docker engine. `kubectl kustomize` and
`systemd-analyze verify` run where they are installed and skip with the reason where not.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner

from tests.harness import WorkerProcess, wait_until
from zoomtune.common.settings import Settings, redis_acl_rules
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.cli import main as coordinator_main
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.workers.cli import main as worker_main
from zoomtune.workers.registry import BUILTINS

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGES = {"cpu": f"zoomtune:{VERSION}", "gpu": f"zoomtune-gpu:{VERSION}"}
DOCKERFILES = {IMAGES["cpu"]: "deploy/Dockerfile", IMAGES["gpu"]: "deploy/Dockerfile.gpu"}
CLIS: Mapping[str, click.Group] = {"worker": worker_main, "coordinator": coordinator_main}
REDIS_PORT = 6379
FLOWER_PORT = 5555
PREFIX = Settings().prefix
PASSWORD_VARIABLE = "ZOOMTUNE_REDIS_PASSWORD"
"""The one deploy-only variable: Redis's password, from which the broker URL is made."""


# -- reading the files ---------------------------------------------------------------------------


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, and $$."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match["name"], match["op"], match["rest"]
        if env.get(name):
            return env[name]
        if operator == ":-":
            return rest or ""
        raise AssertionError(f"compose needs {name} ({rest}) and .env.example does not set it")

    text = re.sub(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:[-?])(?P<rest>[^}]*))?\}", value, text)
    return text.replace("$$", "$")


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def compose() -> dict[str, Any]:
    text = (DEPLOY / "docker-compose.yml").read_text()
    return yaml.safe_load(interpolate(text, env_example()))  # type: ignore[no-any-return]


def kubernetes_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return documents


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) for every Deployment, StatefulSet and Job."""
    for document in kubernetes_documents():
        if document["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield document["metadata"]["name"], document["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            yield name, container


def zoomtune_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service["image"].startswith("zoomtune")
    }


def zoomtune_containers() -> list[tuple[str, dict[str, Any]]]:
    return [(n, c) for n, c in containers() if c["image"].startswith("zoomtune")]


@dataclass(frozen=True)
class Unit:
    """A systemd unit file: section -> key -> every value given (keys may repeat)."""

    path: Path
    sections: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> Unit:
        sections: dict[str, dict[str, list[str]]] = {}
        current: dict[str, list[str]] | None = None
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
                continue
            key, sep, value = line.partition("=")
            if current is None or not sep:
                raise AssertionError(f"{path.name}:{number}: not 'Key=value' in a section: {raw}")
            current.setdefault(key.strip(), []).append(value.strip())
        return cls(path, sections)

    def get(self, section: str, key: str) -> list[str]:
        return self.sections.get(section, {}).get(key, [])


def units() -> list[Unit]:
    return [Unit.read(path) for path in sorted(SYSTEMD.glob("*.service"))]


def exec_start_argv(unit: Unit) -> list[str]:
    """ExecStart as argv, with %i, %H and ${RUNTIME_DIRECTORY} filled in as systemd would."""
    (command,) = unit.get("Service", "ExecStart")
    command = command.replace("%i", "0").replace("%H", "node1")
    command = command.replace("${RUNTIME_DIRECTORY}", "/run/zoomtune-worker")
    argv = shlex.split(command)
    return [Path(argv[0]).name, *argv[1:]]


def dockerfile_cmd(path: Path) -> list[str]:
    (line,) = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))  # type: ignore[no-any-return]


def command_lines() -> list[tuple[str, list[str]]]:
    """Every zoomtune command line in deploy/: (where, argv)."""
    found: list[tuple[str, list[str]]] = []
    for name, service in zoomtune_services().items():
        found.append((f"compose {name}", service["command"]))
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "worker"]:
            found.append((f"compose {name} healthcheck", test[1:]))
    for name, container in zoomtune_containers():
        found.append((f"kubernetes {name}", container["command"] + container.get("args", [])))
        probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
        if probe:
            found.append((f"kubernetes {name} livenessProbe", probe))
    for unit in units():
        found.append((f"systemd {unit.path.name}", exec_start_argv(unit)))
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        found.append((dockerfile, dockerfile_cmd(DEPLOY / dockerfile)))
    return found


def parse_command_line(argv: list[str]) -> click.Context:
    """Parse `argv` with the real click command it names, without running it."""
    program, name, *rest = argv
    group = CLIS[program]
    parent = click.Context(group, info_name=program)  # the groups take no options of their own
    command = group.get_command(parent, name)
    if command is None:
        raise click.UsageError(f"{program} has no command {name!r}")
    return command.make_context(name, rest, parent=parent)


def options(argv: list[str]) -> dict[str, Any]:
    return dict(parse_command_line(argv).params)


def queue_kinds(argv: list[str]) -> list[str]:
    """The queues a `worker start` line consumes (with --gpus the default is gpu)."""
    parsed = options(argv)
    gpus = parsed["gpus"] not in (None, "none")
    return [q.strip() for q in (parsed["queues"] or ("gpu" if gpus else "cpu")).split(",")]


def one_trial_per_gpu(argv: list[str]) -> bool:
    """A GPU worker line pins its GPUs and runs one trial at a time on each."""
    parsed = options(argv)
    return parsed["gpus"] not in (None, "none") and parsed["trials_per_gpu"] in (None, 1)


# -- every file parses, every command line is accepted by the CLI ----------------------------------


def test_every_yaml_file_in_deploy_parses() -> None:
    paths = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path} is empty"
        if path.parent == KUBERNETES and path.name != "kustomization.yaml":
            for document in documents:
                assert {"apiVersion", "kind", "metadata"} <= set(document), path
                assert document["metadata"]["name"], path


def test_every_zoomtune_command_line_is_accepted_by_the_real_cli() -> None:
    lines = command_lines()
    # compose: coordinator, cpu/gpu workers (+ healthchecks), flower; kubernetes: the same;
    # systemd: two units; two Dockerfiles.
    assert len(lines) >= 16, lines
    for where, argv in lines:
        assert argv[0] in CLIS, f"{where}: not a zoomtune command: {argv}"
        try:
            parse_command_line(argv)
        except click.ClickException as exc:
            raise AssertionError(f"{where}: {shlex.join(argv)}: {exc.format_message()}") from exc


def test_the_command_line_check_rejects_what_the_cli_rejects() -> None:
    with pytest.raises(click.NoSuchOption):
        parse_command_line(["worker", "start", "--gpu-count", "2"])
    with pytest.raises(click.BadParameter):
        parse_command_line(["worker", "start", "--concurrency", "0"])
    with pytest.raises(click.UsageError):
        parse_command_line(["coordinator", "start"])  # no study file


def test_every_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    worker = Path(sys.executable).parent / "worker"
    if not worker.exists():
        pytest.skip(f"the `worker` script is not installed next to {sys.executable}")
    for unit in units():
        # verify checks that ExecStart's program exists: point it at the installed script.
        text = unit.path.read_text().replace("/opt/zoomtune/bin/", f"{Path(worker).parent}/")
        copy = tmp_path / unit.path.name
        copy.write_text(text)
        target = copy.with_name(copy.name.replace("@.", "@0.")) if "@." in copy.name else copy
        done = subprocess.run(
            [analyze, "verify", "--man=no", str(target)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # verify exits 0 on mere warnings (a misspelt value is "ignored"): want no output at all.
        report = f"{unit.path.name}:\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, report
        assert not (done.stdout + done.stderr).strip(), report


def test_kustomize_renders_every_resource_into_the_namespace() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine (kustomize not checked)")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(d["kind"] for d in kubernetes_documents())
    for document in rendered:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "zoomtune", document["metadata"]
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "zoomtune"


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


# -- images, environment, ports and the ACL agree everywhere -----------------------------------


def test_images_are_the_two_zoomtune_images_at_the_project_version() -> None:
    for name, service in zoomtune_services().items():
        assert service["image"] in IMAGES.values(), name
        assert service["build"] == {
            "context": "..",
            "dockerfile": DOCKERFILES[service["image"]],
        }, name
    for name, container in zoomtune_containers():
        assert container["image"] in IMAGES.values(), name
    for image, dockerfile in DOCKERFILES.items():
        assert f"-t {image} ." in (REPO / dockerfile).read_text(), dockerfile
    redis_images = {s["image"] for n, s in compose()["services"].items() if n == "redis"}
    redis_images |= {c["image"] for n, c in containers() if n == "redis"}
    assert len(redis_images) == 1, redis_images


def test_gpu_services_request_gpus_and_cpu_services_do_not() -> None:
    for name, service in zoomtune_services().items():
        if service["command"][:2] != ["worker", "start"]:
            continue
        devices = (
            service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        )
        if queue_kinds(service["command"]) == ["gpu"]:
            assert service["image"] == IMAGES["gpu"], name
            assert one_trial_per_gpu(service["command"]), name
            (device,) = devices
            assert device["driver"] == "nvidia", name
            assert "gpu" in device["capabilities"], name
            assert device["count"] >= 1, name
        else:
            assert devices is None, name
    workers = [(n, c) for n, c in zoomtune_containers() if c["command"][:2] == ["worker", "start"]]
    assert {queue_kinds(c["command"])[0] for _, c in workers} == {"cpu", "gpu"}
    for name, container in workers:
        limits = container["resources"]["limits"]
        if queue_kinds(container["command"]) == ["gpu"]:
            assert container["image"] == IMAGES["gpu"], name
            assert one_trial_per_gpu(container["command"]), name
            assert int(limits["nvidia.com/gpu"]) >= 1, name
            assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        else:
            assert "nvidia.com/gpu" not in limits, name
    gpu_units = [u for u in units() if queue_kinds(exec_start_argv(u)) == ["gpu"]]
    assert gpu_units, "no systemd unit for GPU workers"
    for unit in gpu_units:
        assert "--gpus %i" in " ".join(unit.get("Service", "ExecStart")), unit.path.name
        assert one_trial_per_gpu(exec_start_argv(unit)), unit.path.name


def broker_urls() -> list[tuple[str, str]]:
    urls = [
        (f"compose {name}", s["environment"]["ZOOMTUNE_BROKER_URL"])
        for name, s in zoomtune_services().items()
    ]
    for name, container in zoomtune_containers():
        env = {e["name"]: e.get("value") for e in container["env"]}
        urls.append((f"kubernetes {name}", env["ZOOMTUNE_BROKER_URL"]))
    return urls


def test_every_zoomtune_process_gets_the_same_broker_and_prefix() -> None:
    password = env_example()[PASSWORD_VARIABLE]
    for where, url in broker_urls():
        # compose interpolates the password; Kubernetes expands $(VAR) from the Secret.
        url = url.replace(f"$({PASSWORD_VARIABLE})", password)
        parts = urlsplit(url)
        assert (parts.scheme, parts.username, parts.password) == ("redis", "zoomtune", password)
        assert (parts.hostname, parts.port, parts.path) == ("redis", REDIS_PORT, "/0"), where
        Settings(broker_url=url)  # the settings accept it
    for name, service in zoomtune_services().items():
        assert service["environment"]["ZOOMTUNE_PREFIX"] == PREFIX, name
    for name, container in zoomtune_containers():
        env = {e["name"]: e for e in container["env"]}
        assert env["ZOOMTUNE_PREFIX"]["value"] == PREFIX, name
        # The password variable comes from the Secret and precedes the URL that uses it.
        names = [e["name"] for e in container["env"]]
        assert names.index(PASSWORD_VARIABLE) < names.index("ZOOMTUNE_BROKER_URL"), name
        assert env[PASSWORD_VARIABLE]["valueFrom"]["secretKeyRef"] == {
            "name": "zoomtune-redis",
            "key": "password",
        }


def test_deploy_files_use_only_environment_variables_that_zoomtune_reads() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "zoomtune").rglob("*.py"))
    read_by_code = set(re.findall(r'"(ZOOMTUNE_[A-Z_]+)"', source))
    assert {"ZOOMTUNE_BROKER_URL", "ZOOMTUNE_PREFIX"} <= read_by_code
    texts = [p.read_text() for p in DEPLOY.rglob("*") if p.is_file()]
    used = set(re.findall(r"\b(ZOOMTUNE_[A-Z_]+)\b", "\n".join(texts)))
    deploy_only = {PASSWORD_VARIABLE, "ZOOMTUNE_STUDY_FILE"}
    assert used - read_by_code <= deploy_only, used - read_by_code


def acl_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("user ")]


def test_redis_is_persistent_never_evicts_and_has_one_acl_user_limited_to_the_prefix() -> None:
    config = (DEPLOY / "redis.conf").read_text()
    directives = dict(
        line.split(None, 1) for line in config.splitlines() if line and not line.startswith("#")
    )
    assert directives["appendonly"] == "yes"
    assert directives["appendfsync"] in ("everysec", "always")
    assert directives["maxmemory-policy"] == "noeviction"
    assert int(directives["port"]) == REDIS_PORT
    (config_map,) = [
        d for d in kubernetes_documents() if d["metadata"]["name"] == "zoomtune-redis-config"
    ]
    assert config_map["data"]["redis.conf"] == config

    expected = [
        "user default off resetpass -@all",
        f"user zoomtune on >${PASSWORD_VARIABLE} {redis_acl_rules(PREFIX)}",
    ]
    raw_compose = (DEPLOY / "docker-compose.yml").read_text().replace("$$", "$")
    assert acl_lines(raw_compose) == expected
    (statefulset,) = [d for d in kubernetes_documents() if d["kind"] == "StatefulSet"]
    (redis,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert acl_lines(redis["command"][-1]) == expected


def test_ports_agree_across_files() -> None:
    services = compose()["services"]
    assert services["redis"]["ports"] == [f"127.0.0.1:{REDIS_PORT}:{REDIS_PORT}"]
    assert services["flower"]["ports"] == [f"127.0.0.1:{FLOWER_PORT}:{FLOWER_PORT}"]
    assert options(services["flower"]["command"])["port"] == FLOWER_PORT
    assert f"EXPOSE {FLOWER_PORT}" in (DEPLOY / "Dockerfile").read_text()
    for document in kubernetes_documents():
        if document["kind"] == "Service":
            (port,) = document["spec"]["ports"]
            expected = {"redis": REDIS_PORT, "zoomtune-flower": FLOWER_PORT}
            assert port["port"] == expected[document["metadata"]["name"]]
    for name, container in containers():
        for port in container.get("ports", []):
            assert (
                port["containerPort"] == {"redis": REDIS_PORT, "zoomtune-flower": FLOWER_PORT}[name]
            )
        if name == "zoomtune-flower":
            assert options(container["command"])["port"] == FLOWER_PORT


# -- compose --------------------------------------------------------------------------------------


def test_compose_has_the_services_with_health_checks_and_restart_policies() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "coordinator", "worker-cpu", "worker-gpu", "flower"}
    assert services["coordinator"]["restart"] == "no"
    assert options(services["coordinator"]["command"])["study_file"] == Path(
        "/etc/zoomtune/study.toml"
    )
    assert any(
        v.endswith(":/etc/zoomtune/study.toml:ro") for v in services["coordinator"]["volumes"]
    )
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    for name in ("redis", "worker-cpu", "worker-gpu", "flower"):
        assert services[name]["restart"] in ("always", "unless-stopped"), name
        assert services[name]["healthcheck"]["test"], name
    for name in ("coordinator", "worker-cpu", "worker-gpu", "flower"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # `--scale worker-cpu=N` needs no fixed name and no published port.
    assert "container_name" not in services["worker-cpu"]
    assert "ports" not in services["worker-cpu"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])


def test_worker_health_checks_read_the_file_the_worker_writes() -> None:
    checks = [
        (s["command"], s["healthcheck"]["test"][1:])
        for s in zoomtune_services().values()
        if s["command"][:2] == ["worker", "start"]
    ]
    checks += [
        (c["command"], c["livenessProbe"]["exec"]["command"])
        for _, c in zoomtune_containers()
        if c["command"][:2] == ["worker", "start"]
    ]
    assert len(checks) == 4
    for start, health in checks:
        assert options(start)["health_file"] == options(health)["health_file"]


def test_the_password_comes_from_the_env_file_and_is_not_committed() -> None:
    assert PASSWORD_VARIABLE in env_example()
    raw = (DEPLOY / "docker-compose.yml").read_text()
    assert f"${{{PASSWORD_VARIABLE}:?" in raw  # compose refuses to start without it
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, check=False, timeout=30
    )
    assert ignored.returncode == 0, "deploy/.env must be git-ignored"


# -- Kubernetes -----------------------------------------------------------------------------------


def test_kubernetes_has_the_workloads_the_issue_lists() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in kubernetes_documents()}
    assert {
        ("StatefulSet", "redis"),
        ("Service", "redis"),
        ("ConfigMap", "zoomtune-redis-config"),
        ("ConfigMap", "zoomtune-study"),
        ("Deployment", "zoomtune-worker-cpu"),
        ("Deployment", "zoomtune-worker-gpu"),
        ("Job", "zoomtune-coordinator"),
        ("Deployment", "zoomtune-flower"),
        ("Service", "zoomtune-flower"),
    } <= kinds
    (statefulset,) = [d for d in kubernetes_documents() if d["kind"] == "StatefulSet"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_every_container_has_requests_and_limits_and_workers_have_liveness_probes() -> None:
    for name, container in containers():
        assert container["resources"]["requests"], name
        assert container["resources"]["limits"], name
        if name.startswith("zoomtune-worker") or name == "redis":
            assert container["livenessProbe"], name


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    namespace = next(d for d in kubernetes_documents() if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, spec in pod_specs():
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] != 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "privileged" not in context, name


def test_the_study_config_map_is_a_valid_study_for_a_built_in_objective() -> None:
    (config_map,) = [d for d in kubernetes_documents() if d["metadata"]["name"] == "zoomtune-study"]
    path = Path("/etc/zoomtune/study.toml")
    spec = StudySpec.from_dict(tomllib.loads(config_map["data"]["study.toml"]), source=str(path))
    assert spec.objective.name in BUILTINS
    (job,) = [d for d in kubernetes_documents() if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert options(container["command"])["study_file"] == path
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "study"]
    assert Path(mount["mountPath"]) == path.parent


# -- Docker and systemd ---------------------------------------------------------------------------


def test_dockerfiles_are_small_non_root_and_install_the_package() -> None:
    cpu = (DEPLOY / "Dockerfile").read_text()
    gpu = (DEPLOY / "Dockerfile.gpu").read_text()
    assert cpu.splitlines()[[line.startswith("FROM") for line in cpu.splitlines()].index(True)] == (
        "FROM python:3.11-slim"
    )
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", gpu, re.M)
    assert "pip install '.[flower]'" in cpu
    assert "pip install '.[torch]'" in gpu
    for text in (cpu, gpu):
        # The one package the wheel is built from (pyproject: packages.find include zoomtune*)
        assert "COPY zoomtune ./zoomtune" in text.splitlines()
        (user,) = re.findall(r"^USER (\S+)$", text, re.M)
        assert user.split(":")[0] not in ("0", "root")
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)


def test_systemd_units_restart_always_read_the_broker_from_a_file_and_stop_warm() -> None:
    found = units()
    assert {u.path.name for u in found} == {
        "zoomtune-worker-cpu.service",
        "zoomtune-worker-gpu@.service",
    }
    example = (SYSTEMD / "zoomtune.env.example").read_text()
    assert "ZOOMTUNE_BROKER_URL=rediss://" in example
    for unit in found:
        assert unit.get("Service", "Restart") == ["always"], unit.path.name
        assert unit.get("Service", "EnvironmentFile") == ["/etc/zoomtune/zoomtune.env"]
        # SIGTERM to the main process only is Celery's warm shutdown.
        assert unit.get("Service", "KillSignal") == ["SIGTERM"], unit.path.name
        assert unit.get("Service", "KillMode") == ["mixed"], unit.path.name
        assert int(unit.get("Service", "TimeoutStopSec")[0]) >= 60, unit.path.name
        assert unit.get("Service", "User") == ["zoomtune"], unit.path.name
        assert unit.get("Install", "WantedBy") == ["multi-user.target"], unit.path.name


# -- the liveness probe the files use -------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_worker_health_follows_the_heartbeats_of_a_real_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    health_file = tmp_path / "alive"
    runner = CliRunner()

    def health(max_age: str = "60") -> int:
        result = runner.invoke(worker_main, ["health", str(health_file), "--max-age", max_age])
        return result.exit_code

    assert health() == 1  # no file yet: not ready
    worker = WorkerProcess(
        redis_server.url, tmp_path / "worker.log", extra_args=["--health-file", str(health_file)]
    ).start()
    try:
        worker.wait_ready()
        assert health() == 0
        # The file keeps being touched while the worker consumes (heartbeats every 2 s).
        first = health_file.stat().st_mtime
        wait_until(lambda: health_file.stat().st_mtime > first, timeout=30, what="a heartbeat")
    finally:
        worker.stop()
    # A worker that stopped sending heartbeats fails the probe once the file is older than
    # --max-age.
    stopped = health_file.stat().st_mtime
    os.utime(health_file, (stopped - 120, stopped - 120))
    assert health() == 1
    assert health(max_age="600") == 0
