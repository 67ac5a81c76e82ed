"""The deployment files keep their contracts with the application.

docker-compose.yml, the Dockerfile and deploy/ cannot be started here (no Docker engine, no
cluster), so what they promise is checked from the files themselves: the commands they run exist
and parse with the CLI's own options, beats run where their lock works (Redis), the training worker is alone on its queue,
no secret is written in them, compose stops at once (never crash-loops) without Flower's
credentials, every RETRAINER_* variable is a real setting, the shell scripts parse and the
entrypoint really waits. The API's command is started for real against the test Redis and
PostgreSQL and must pass the compose service's own health check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from retrainer.config import ModelConfig, Recovery, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENV_EXAMPLE = DEPLOY / "env.example"
EXAMPLE_CONFIG = ROOT / "retrainer.example.yaml"
WAIT_SCRIPT = DEPLOY / "docker" / "wait-for-services.sh"

SUBCOMMANDS = {"init", "api", "worker", "beat", "flower", "status", "demo"}
QUEUES = {"training", "events", "checks", "notifications"}
# Read off the settings model, so a setting added there and not documented in the example fails here.
SETTINGS_KEYS = set(Settings.model_fields)
MODEL_KEYS = set(ModelConfig.model_fields)
SECTIONS = {"recovery": set(Recovery.model_fields)}
MODEL_SECTIONS = {name: {k for k, f in field.annotation.model_fields.items()  # a deprecated alias is not shown
                         if not (f.description or "").startswith("deprecated")}
                  for name, field in ModelConfig.model_fields.items()
                  if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
ALLOWED_ENV = {f"RETRAINER_{key.upper()}" for key in SETTINGS_KEYS} | {"RETRAINER_CONFIG"}
ENV_NAME = re.compile(r"\bRETRAINER_[A-Z0-9_]+")

# A value counts as a placeholder when it is a compose interpolation (${VAR} or ${VAR:-local}),
# or the template marker CHANGE_ME.
INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}")
SECRET_KEY = re.compile(r"password|passwd|secret|token|webhook|basic_auth|api_key", re.IGNORECASE)
URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s]+)@", re.IGNORECASE)
SECRET_MARKERS = ("hooks.slack.com", "xoxb-", "xoxp-", "-----BEGIN")

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


# --------------------------------------------------------------------------------------------
# loading


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"})


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def argv(command: Any) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def compose_commands() -> dict[str, list[str]]:
    """service name -> argv, for every compose service that runs retrainer."""
    services = load_compose()["services"]
    return {
        name: argv(svc.get("command"))
        for name, svc in services.items()
        if argv(svc.get("command"))[:1] == ["retrainer"]
    }


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def k8s_commands() -> list[tuple[str, dict[str, Any], list[str]]]:
    """(label, workload doc, argv) for every k8s container that runs retrainer.

    A container without `command` keeps the image ENTRYPOINT (the wait script), which execs the
    args; so the retrainer command is command + args.
    """
    found = []
    for path, doc in k8s_docs():
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            cmd = argv(container.get("command")) + argv(container.get("args"))
            if cmd[:1] == ["retrainer"]:
                found.append((f"{path.name}:{doc['metadata']['name']}/{container['name']}", doc, cmd))
    return found


def option(cmd: list[str], *names: str) -> str | None:
    """The value of an option given as `-Q x`, `--queues x`, `--queues=x` or `-Qx`."""
    for i, arg in enumerate(cmd):
        for name in names:
            if arg == name:
                assert i + 1 < len(cmd), f"{name} without a value in {cmd}"
                return cmd[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
            if not name.startswith("--") and arg.startswith(name) and len(arg) > len(name):
                return arg[len(name) :]
    return None


def all_commands() -> list[tuple[str, list[str]]]:
    return [(f"compose:{n}", c) for n, c in compose_commands().items()] + [
        (f"k8s:{label}", c) for label, _, c in k8s_commands()
    ]


# --------------------------------------------------------------------------------------------
# the commands


def test_compose_defines_the_production_services():
    services = load_compose()["services"]
    assert {"redis", "postgres", "init", "api", "worker-training", "worker", "beat", "flower"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")
    for name in ("redis", "postgres"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_retrainer_command_is_a_real_subcommand():
    commands = all_commands()
    assert len(compose_commands()) >= 6 and len(k8s_commands()) >= 6, commands
    for label, cmd in commands:
        assert len(cmd) >= 2 and cmd[1] in SUBCOMMANDS, f"{label}: {shlex.join(cmd)}"


def cli_command(name: str) -> Any:
    """The click command behind `retrainer NAME` (None: no such subcommand)."""
    import typer.main

    from retrainer.cli import app

    group = typer.main.get_command(app)
    return group.get_command(typer.Context(group), name)


# Click's base error, whether typer uses the click package or (typer >= 0.26) its own copy of it.
def click_error() -> type[Exception]:
    import typer

    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def test_every_retrainer_command_parses():
    """Each command's options and their values as the CLI itself parses them (make_context converts
    and range-checks every value and invokes nothing): a renamed option or a port out of range fails
    here, not in a crash-looping container. `--help` would not do: it wins over a bad value."""
    for label, cmd in all_commands():
        command = cli_command(cmd[1])
        assert command is not None, label
        try:
            command.make_context(cmd[1], cmd[2:])
        except click_error() as exc:
            pytest.fail(f"{label}: {shlex.join(cmd)}: {exc.format_message()}")


def test_the_command_parser_check_is_not_vacuous():
    for bad in (["--host", "0.0.0.0", "--port", "http"], ["--port", "0"], ["--bind", "0.0.0.0"]):
        with pytest.raises(click_error()):
            cli_command("api").make_context("api", bad)


def test_compose_services_that_touch_the_database_wait_for_init():
    services = load_compose()["services"]
    assert compose_commands()["init"] == ["retrainer", "init"]
    for name, cmd in compose_commands().items():
        if cmd[1] in {"api", "worker", "beat"}:
            depends = services[name].get("depends_on") or {}
            assert depends.get("init", {}).get("condition") == "service_completed_successfully", name


# Beats on Redis hold a lock (tasks/beat_lock.py): one schedules, the others stand by, so two are safe
# and one survives the other's machine. On any other broker there is no lock and two would fire twice.
def test_two_beats_in_compose_on_the_redis_broker():
    services = load_compose()["services"]
    beats = [name for name, cmd in compose_commands().items() if cmd[1] == "beat"]
    assert len(beats) == 1, beats
    svc = services[beats[0]]
    assert svc["environment"]["RETRAINER_BROKER_URL"].startswith("redis://")
    assert svc.get("scale", (svc.get("deploy") or {}).get("replicas", 1)) == 2
    assert option(compose_commands()[beats[0]], "--schedule-file", "-s", "-S").startswith("/data/")


def test_two_beats_in_k8s_on_the_redis_broker():
    beats = [(label, doc) for label, doc, cmd in k8s_commands() if cmd[1] == "beat"]
    assert len(beats) == 1, [label for label, _ in beats]
    config_maps = [doc for _, doc in k8s_docs() if doc["kind"] == "ConfigMap" and "retrainer.yaml" in doc.get("data", {})]
    assert [yaml.safe_load(doc["data"]["retrainer.yaml"])["broker_url"][:8] for doc in config_maps] == ["redis://"]
    for label, doc in beats:
        assert doc["kind"] == "Deployment", label
        assert doc["spec"].get("replicas") == 2, label  # explicit, never the default
        # a standby on another node, when the cluster has one
        anti = pod_spec(doc)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname", label


def worker_queues(cmd: list[str]) -> list[str]:
    value = option(cmd, "--queues", "-Q")
    assert value, f"a worker must name its queues: {shlex.join(cmd)}"
    return [q.strip() for q in value.split(",") if q.strip()]


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_training_worker_consumes_only_training(where):
    workers = [(label, cmd) for label, cmd in all_commands() if label.startswith(where) and cmd[1] == "worker"]
    assert workers, f"no worker in {where}"
    consumed: set[str] = set()
    training_workers = 0
    for label, cmd in workers:
        queues = worker_queues(cmd)
        assert set(queues) <= QUEUES, f"{label}: unknown queue in {queues}"
        consumed.update(queues)
        if "training" in queues:
            training_workers += 1
            assert queues == ["training"], f"{label}: training shares a worker with {queues}"
            concurrency = option(cmd, "--concurrency", "-c")
            assert concurrency is not None and 1 <= int(concurrency) <= 2, f"{label}: concurrency {concurrency}"
    assert training_workers >= 1
    assert consumed == QUEUES, f"{where}: no worker for {QUEUES - consumed}"


# --------------------------------------------------------------------------------------------
# secrets


def is_placeholder(value: str) -> bool:
    return "CHANGE_ME" in value or INTERPOLATION.fullmatch(value.strip()) is not None


def literal_secrets(node: Any, where: str = "") -> Iterator[str]:
    """Where a secret-looking key has a literal value, or a URL carries a literal password."""

    def check(key: str, value: Any, at: str) -> Iterator[str]:
        if isinstance(value, (str, int, float)) and SECRET_KEY.search(key) and not is_placeholder(str(value)):
            yield f"{at}: {key} has a literal value"

    if isinstance(node, dict):
        # k8s env entry {name: X, value: V}
        if isinstance(node.get("name"), str) and "value" in node:
            yield from check(node["name"], node["value"], where)
        for key, value in node.items():
            yield from check(str(key), value, f"{where}.{key}")
            yield from literal_secrets(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, str) and "=" in item and not item.startswith("-"):  # KEY=value form
                key, value = item.split("=", 1)
                yield from check(key, value, f"{where}[{i}]")
            yield from literal_secrets(item, f"{where}[{i}]")
    elif isinstance(node, str):
        for password in URL_USERINFO.findall(node):
            if not is_placeholder(password):
                yield f"{where}: URL with a literal password"


def test_secret_checker_catches_literals():
    """The checker below is not vacuous: it finds each kind of literal secret."""
    assert list(literal_secrets({"environment": {"POSTGRES_PASSWORD": "hunter2"}}))
    assert list(literal_secrets({"environment": ["FLOWER_BASIC_AUTH=admin:hunter2"]}))
    assert list(literal_secrets({"env": [{"name": "RETRAINER_SLACK_WEBHOOK_URL", "value": "https://x"}]}))
    assert list(literal_secrets({"RETRAINER_DATABASE_URL": "postgresql://retrainer:hunter2@db/retrainer"}))
    assert not list(literal_secrets({"POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-retrainer}"}))
    assert not list(literal_secrets({"url": "postgresql+psycopg://u:${POSTGRES_PASSWORD}@postgres/db"}))
    assert not list(literal_secrets({"FLOWER_BASIC_AUTH": "admin:CHANGE_ME"}))


def secret_scanned_files() -> list[Path]:
    return [COMPOSE_FILE, *k8s_files()]


@pytest.mark.parametrize("path", secret_scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_literal_secrets(path):
    text = path.read_text()
    for marker in SECRET_MARKERS:
        assert marker not in text, f"{path.name} contains {marker!r}"
    problems = [p for doc in yaml.safe_load_all(text) for p in literal_secrets(doc, path.name)]
    assert not problems, problems


def test_k8s_secret_is_a_template():
    secrets = [(path, doc) for path, doc in k8s_docs() if doc.get("kind") == "Secret"]
    assert secrets, "deploy/k8s has no Secret template"
    for path, doc in secrets:
        values = {**(doc.get("stringData") or {}), **(doc.get("data") or {})}
        assert values, path.name
        for key, value in values.items():
            assert "CHANGE_ME" in str(value), f"{path.name}: {key} is not a placeholder"
        kustomization = K8S / "kustomization.yaml"
        if kustomization.exists():  # a template must not be applied as it is
            assert path.name not in yaml.safe_load(kustomization.read_text()).get("resources", [])


# Secrets the example may leave empty: empty is "none configured", and the setting then refuses what
# it guards (the API's writes, 403), never opens it.
EMPTY_MEANS_REFUSED = {"RETRAINER_API_TOKEN"}


def env_example_entries() -> dict[str, str]:
    text = ENV_EXAMPLE.read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def test_env_example_holds_placeholders_only():
    text = ENV_EXAMPLE.read_text()
    entries = env_example_entries()
    assert {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "RETRAINER_API_TOKEN"} <= set(entries)
    assert entries["RETRAINER_API_TOKEN"] == ""  # no token until one is chosen: writes refused
    for key, value in entries.items():
        if SECRET_KEY.search(key) and not (key in EMPTY_MEANS_REFUSED and value == ""):
            assert is_placeholder(value), f"deploy/env.example: {key} is not a placeholder"
    # an empty webhook URL is invalid, not "off": the example leaves it commented out
    assert "RETRAINER_SLACK_WEBHOOK_URL" not in entries
    assert "RETRAINER_SLACK_WEBHOOK_URL" in text


def test_compose_reads_secrets_from_the_env_file():
    services = load_compose()["services"]
    for name in compose_commands():
        env_files = services[name].get("env_file") or []
        paths = [entry["path"] if isinstance(entry, dict) else entry for entry in env_files]
        assert ".env" in paths, f"{name} does not read .env"
        environment = services[name].get("environment") or {}
        assert not {"RETRAINER_SLACK_WEBHOOK_URL", "RETRAINER_API_TOKEN"} & set(environment), name
        if name != "flower":  # flower names it only to require it (test below)
            assert "FLOWER_BASIC_AUTH" not in environment, name


def test_env_example_values_are_valid_settings(tmp_path, monkeypatch):
    """The RETRAINER_* lines of the example, as a container reads them, pass the settings' validation;
    the empty API token is no token."""
    from retrainer.config import load_settings

    for name in [n for n in os.environ if n.startswith("RETRAINER_")]:
        monkeypatch.delenv(name)
    entries = {k: v for k, v in env_example_entries().items() if k.startswith("RETRAINER_")}
    assert entries
    for key, value in entries.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no retrainer.yaml here
    settings = load_settings()
    assert settings.api_token is None or not settings.api_token.get_secret_value().strip()


# --------------------------------------------------------------------------------------------
# compose interpolation: what `docker compose` makes of ${...} with or without .env


INTERPOLATION_PARTS = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, ${VAR:+x}."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        is_set = name in env and (env[name] != "" or not op.startswith(":"))
        if op.endswith("?") and not is_set:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op.endswith("+"):
            return arg if is_set else ""
        return env[name] if is_set else (arg if op.endswith("-") else "")

    return INTERPOLATION_PARTS.sub(one, value)


def interpolation_errors(node: Any, env: dict[str, str], where: str = "") -> list[tuple[str, str]]:
    """(where, message) for each value compose could not interpolate with `env`."""
    if isinstance(node, dict):
        return [e for key, value in node.items() for e in interpolation_errors(value, env, f"{where}.{key}".lstrip("."))]
    if isinstance(node, list):
        return [e for i, item in enumerate(node) for e in interpolation_errors(item, env, f"{where}[{i}]")]
    if isinstance(node, str):
        try:
            interpolate(node, env)
        except MissingVariable as exc:
            return [(where, str(exc))]
    return []


def test_interpolation_follows_compose():
    assert interpolate("${A:-x}", {}) == "x" and interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == "" and interpolate("${A}", {"A": "v"}) == "v"
    assert interpolate("${A:?m}", {"A": "v"}) == "v"
    for env in ({}, {"A": ""}):
        with pytest.raises(MissingVariable, match="required variable A is missing a value: m"):
            interpolate("${A:?m}", env)


def test_compose_without_flower_credentials_stops_at_once_instead_of_crash_looping():
    """Without .env (or without FLOWER_BASIC_AUTH in it) `retrainer flower` would refuse to serve
    0.0.0.0 unprotected and exit 2, and `restart: unless-stopped` would start it again forever. So
    compose requires the value (${FLOWER_BASIC_AUTH:?...}): every compose command stops with the
    message, before anything starts. It is the only value compose requires."""
    compose = load_compose()
    flower_env = compose["services"]["flower"]["environment"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", flower_env["FLOWER_BASIC_AUTH"])
    for env in ({}, {"FLOWER_BASIC_AUTH": ""}):
        ((where, message),) = interpolation_errors(compose, env)
        assert where == "services.flower.environment.FLOWER_BASIC_AUTH"
        assert ".env" in message and "deploy/env.example" in message
    example = env_example_entries()
    assert interpolation_errors(compose, example) == []  # the documented .env is enough
    assert interpolate(flower_env["FLOWER_BASIC_AUTH"], example) == example["FLOWER_BASIC_AUTH"]
    # the value goes through to Flower's environment unchanged, in the form `retrainer flower` accepts
    assert BASIC_AUTH.fullmatch(interpolate(flower_env["FLOWER_BASIC_AUTH"], example))
    # and flower keeps every setting the other services get
    assert {k: v for k, v in flower_env.items() if k != "FLOWER_BASIC_AUTH"} == compose["services"]["worker"]["environment"]


# --------------------------------------------------------------------------------------------
# the HTTP API


def test_compose_api_serves_the_published_port_with_a_healthz_check():
    services = load_compose()["services"]
    api = services["api"]
    cmd = compose_commands()["api"]
    assert option(cmd, "--host") == "0.0.0.0"  # inside the container; the mapping publishes 127.0.0.1
    port = option(cmd, "--port")
    assert api["ports"] == [f"127.0.0.1:{port}:{port}"]
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test  # the slim image has no curl
    assert f"http://127.0.0.1:{port}/healthz" in test[-1]
    depends = api["depends_on"]
    assert depends["init"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def compose_health_check(port: int) -> list[str]:
    """The api service's health check command, run here against `port` with this Python."""
    test = load_compose()["services"]["api"]["healthcheck"]["test"]
    served = option(compose_commands()["api"], "--port")
    return [sys.executable, *[part.replace(f"127.0.0.1:{served}/", f"127.0.0.1:{port}/") for part in test[2:]]]


@pytest.mark.redis
@pytest.mark.postgres
def test_compose_api_command_starts_and_passes_its_health_check(tmp_path, pg_url, redis_url):
    """The api service's command, started for real against the test Redis and PostgreSQL (on
    127.0.0.1 and a free port instead of 0.0.0.0:8000), passes the service's own health check."""
    from retrainer.demo.processes import child_env, write_config
    from tests.support import make_settings, wait_until

    cmd = compose_commands()["api"]
    port = free_port()
    args = [arg.replace("0.0.0.0", "127.0.0.1") for arg in cmd[1:]]
    args[args.index("--port") + 1] = str(port)
    config = write_config(make_settings(tmp_path, pg_url, broker_url=redis_url), tmp_path / "retrainer.yaml")
    check = compose_health_check(port)
    assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0  # fails while nothing serves
    proc = subprocess.Popen([sys.executable, "-m", "retrainer.cli", *args], cwd=tmp_path, env=child_env(config),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        passed = wait_until(lambda: subprocess.run(check, capture_output=True, timeout=30).returncode == 0
                            or proc.poll() is not None, timeout=30, what="the API's health check to pass")
        assert passed and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
    finally:
        proc.terminate()
        proc.wait(20)


def k8s_api() -> tuple[dict[str, Any], dict[str, Any], int]:
    """(Deployment, container, port) of the one k8s workload that runs `retrainer api`."""
    (doc,) = [doc for _, doc, cmd in k8s_commands() if cmd[1] == "api"]
    (container,) = [c for c in pod_spec(doc)["containers"] if argv(c.get("args"))[1:2] == ["api"]]
    cmd = argv(container["args"])
    assert option(cmd, "--host") == "0.0.0.0"  # the Service must reach it
    return doc, container, int(option(cmd, "--port"))


def test_k8s_api_probes_healthz_on_its_port():
    _, container, port = k8s_api()
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in named.values()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert named.get(get["port"], get["port"]) == port, probe
    # A database or broker outage (503) takes the pod out of the Service long before liveness restarts it
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > 2 * ready["periodSeconds"] * ready["failureThreshold"]
    assert [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e] == ["retrainer-secrets"]


def test_k8s_api_has_a_service_and_is_applied():
    doc, container, port = k8s_api()
    labels = doc["spec"]["template"]["metadata"]["labels"]
    services = [svc for _, svc in k8s_docs() if svc.get("kind") == "Service"
                and svc["spec"]["selector"].items() <= labels.items()]
    assert len(services) == 1
    (service_port,) = services[0]["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named.get(service_port["targetPort"], service_port["targetPort"]) == port
    assert services[0]["metadata"]["name"] == "retrainer-api"  # the README's Prometheus target
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert any(doc in yaml.safe_load_all((K8S / r).read_text()) for r in resources)


def test_k8s_secret_template_holds_the_api_token():
    (secret,) = [doc for _, doc in k8s_docs() if doc.get("kind") == "Secret"]
    assert "RETRAINER_API_TOKEN" in secret["stringData"]


# --------------------------------------------------------------------------------------------
# Flower


BASIC_AUTH = re.compile(r"[^:,]+:[^,]+(,[^:,]+:[^,]+)*")  # what `retrainer flower` accepts in FLOWER_BASIC_AUTH


def flower_commands() -> list[tuple[str, list[str]]]:
    return [(label, cmd) for label, cmd in all_commands() if cmd[1] == "flower"]


def test_flower_binds_all_interfaces_inside_its_container_and_takes_no_credentials_as_arguments():
    commands = flower_commands()
    assert {label.split(":")[0] for label, _ in commands} == {"compose", "k8s"}
    for label, cmd in commands:
        # `retrainer flower` binds 127.0.0.1 unless told; in a container the port mapping or the
        # Service must reach it, so the deployment says 0.0.0.0 itself.
        assert option(cmd, "--address") == "0.0.0.0", label
        assert not any("auth" in arg.lower() and arg != "--no-auth" for arg in cmd), f"{label}: {cmd}"
        assert "--no-auth" not in cmd, label
        assert not any(URL_USERINFO.search(arg) or BASIC_AUTH.fullmatch(arg) for arg in cmd[2:]), f"{label}: {cmd}"


def test_compose_publishes_ports_on_localhost_only():
    published = {name: svc.get("ports") or [] for name, svc in load_compose()["services"].items()}
    assert published["flower"], "Flower is not published"
    for name, ports in published.items():
        for port in ports:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond localhost"


def test_flower_credentials_come_from_the_secret_in_a_valid_format():
    secrets = {doc["metadata"]["name"]: doc.get("stringData") or {} for _, doc in k8s_docs() if doc.get("kind") == "Secret"}
    flowers = [doc for _, doc, cmd in k8s_commands() if cmd[1] == "flower"]
    assert flowers
    values = [line.split("=", 1)[1] for line in ENV_EXAMPLE.read_text().splitlines()
              if line.startswith("FLOWER_BASIC_AUTH=")]
    for doc in flowers:
        (container,) = [c for c in pod_spec(doc)["containers"] if argv(c.get("args"))[1:2] == ["flower"]]
        names = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
        values += [secrets[name]["FLOWER_BASIC_AUTH"] for name in names if "FLOWER_BASIC_AUTH" in secrets.get(name, {})]
        assert "FLOWER_BASIC_AUTH" not in {e["name"] for e in container.get("env", [])}  # not a literal
    assert len(values) >= 2, "FLOWER_BASIC_AUTH is in neither deploy/env.example nor Flower's Secret"
    for value in values:
        assert BASIC_AUTH.fullmatch(value), "the template would be refused by `retrainer flower`"


# --------------------------------------------------------------------------------------------
# configuration names


def env_names(path: Path) -> set[str]:
    return set(ENV_NAME.findall(path.read_text()))


@pytest.mark.parametrize(
    "path",
    [COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE, *k8s_files(), *sorted(DEPLOY.rglob("*.sh"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_retrainer_variable_is_a_setting(path):
    for name in env_names(path):
        # RETRAINER_MODELS__CTR__... is the nested form of the `models` setting
        assert name in ALLOWED_ENV or name.startswith("RETRAINER_MODELS__"), f"{path.name}: {name}"


def test_compose_configures_the_production_servers():
    services = load_compose()["services"]
    for name in compose_commands():
        env = services[name]["environment"]
        assert env["RETRAINER_BROKER_URL"].startswith("redis://redis:"), name
        assert env["RETRAINER_RESULT_BACKEND"].startswith("redis://redis:"), name
        assert env["RETRAINER_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["RETRAINER_ARTIFACT_DIR"].startswith("/data/"), name
        assert env["RETRAINER_VAR_DIR"].startswith("/data/"), name


def test_example_config_documents_every_setting():
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert set(config) == SETTINGS_KEYS
    model = config["models"]["ctr"]
    assert set(model) == MODEL_KEYS
    for section, keys in MODEL_SECTIONS.items():
        assert set(model[section]) == keys, section
    for section, keys in SECTIONS.items():
        assert set(config[section]) == keys, section
    assert config["broker_url"] == "filesystem://"  # the embedded default
    assert config["slack_webhook_url"] is None  # never a literal secret in the example


def test_k8s_configmap_uses_known_keys():
    configs = [
        yaml.safe_load(doc["data"][key])
        for _, doc in k8s_docs()
        if doc.get("kind") == "ConfigMap"
        for key in doc.get("data", {})
        if key.endswith((".yaml", ".yml"))
    ]
    assert configs, "no ConfigMap carries retrainer.yaml"
    for config in configs:
        assert set(config) <= SETTINGS_KEYS
        assert config["broker_url"].startswith("redis")
        assert "database_url" not in config and "slack_webhook_url" not in config  # from the Secret
        for model in (config.get("models") or {}).values():
            assert set(model) <= MODEL_KEYS
            for section, keys in MODEL_SECTIONS.items():
                assert set(model.get(section) or {}) <= keys, section


# --------------------------------------------------------------------------------------------
# shared storage


def test_every_compose_process_shares_the_data_volume():
    compose = load_compose()
    for name in compose_commands():
        volumes = compose["services"][name].get("volumes") or []
        mounts = [v.split(":")[:2] if isinstance(v, str) else [v.get("source"), v.get("target")] for v in volumes]
        assert ["retrainer-data", "/data"] in mounts, name
    assert "retrainer-data" in compose["volumes"]


def test_every_k8s_process_mounts_the_shared_claim():
    claims = {doc["metadata"]["name"]: doc for _, doc in k8s_docs() if doc.get("kind") == "PersistentVolumeClaim"}
    assert claims
    for label, doc, _ in k8s_commands():
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        data = [name for name, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") in claims]
        assert data, f"{label}: no shared claim"
        mounts = {(m["name"], m["mountPath"]) for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert (data[0], "/data") in mounts, label
    for name, claim in claims.items():
        assert "ReadWriteMany" in claim["spec"]["accessModes"], f"{name}: pods on several nodes share it"


# --------------------------------------------------------------------------------------------
# shell scripts and the image


def shell_scripts() -> list[Path]:
    return sorted(DEPLOY.rglob("*.sh"))


def test_there_are_shell_scripts_to_check():
    assert WAIT_SCRIPT in shell_scripts()


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_parses_and_is_executable(script):
    result = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in logical]


def copies() -> list[tuple[list[str], str]]:
    result = []
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            result.append((parts[:-1], parts[-1]))
    return result


def test_dockerfile_base_user_and_openmp():
    instructions = dockerfile_instructions()
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    runs = " ".join(args for ins, args in instructions if ins == "RUN")
    assert re.search(r"apt-get install\b[^&;]*\blibgomp1\b", runs), "XGBoost needs libgomp1"
    assert "pip install" in runs
    users = [args for ins, args in instructions if ins == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_entrypoint_is_the_wait_script_and_cmd_is_help():
    instructions = dict(dockerfile_instructions())  # the last of each instruction counts
    entrypoint = json.loads(instructions["ENTRYPOINT"])  # exec form, so signals reach retrainer
    assert json.loads(instructions["CMD"]) == ["retrainer", "--help"]
    sources = [srcs[0] for srcs, dest in copies() if dest == entrypoint[0]]
    assert sources, f"nothing is copied to {entrypoint[0]}"
    script = ROOT / sources[0]
    assert script == WAIT_SCRIPT and script.is_file()


def test_dockerfile_copies_files_that_exist_and_are_in_the_build_context():
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] not in {"", "#"}]
    assert rules[0] == "*", ".dockerignore is an allow-list"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for sources, _ in copies():
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
            parts = Path(source).parts
            assert any("/".join(parts[:i]) in allowed for i in range(1, len(parts) + 1)), (
                f"{source} is excluded by .dockerignore"
            )
    copied = {s for sources, _ in copies() for s in sources}
    assert {"pyproject.toml", "retrainer", "models", "services", "tasks"} <= copied


# --------------------------------------------------------------------------------------------
# the wait script, run for real


def run_wait_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": sys.executable, "WAIT_TIMEOUT_SECONDS": "3"}
    return subprocess.run(
        [str(WAIT_SCRIPT), "echo", "started"],
        check=False,
        env={**base, **env},
        cwd=tmp_path,  # no retrainer.yaml here
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wait_script_runs_the_command_when_no_server_is_configured(tmp_path):
    result = run_wait_script(tmp_path)  # embedded defaults: filesystem://, sqlite
    assert result.returncode == 0, result.stderr
    assert result.stdout == "started\n"


def test_wait_script_waits_for_a_listening_server(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = run_wait_script(tmp_path, RETRAINER_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "started\n"
    assert f"127.0.0.1:{port} is up" in result.stderr


def test_wait_script_gives_up_without_leaking_the_password(tmp_path):
    port = free_port()
    result = run_wait_script(
        tmp_path,
        RETRAINER_DATABASE_URL=f"postgresql+psycopg://retrainer:s3cret-pw@127.0.0.1:{port}/retrainer",
        WAIT_TIMEOUT_SECONDS="1",
    )
    assert result.returncode == 1
    assert "started" not in result.stdout
    assert f"127.0.0.1:{port}" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_every_package_is_in_the_distribution() -> None:
    """A non-editable install (the image's) holds only the packages pyproject lists: a package folder
    missing from it (retrainer.cli once was) would ship an image without its command line."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"retrainer": ROOT / "retrainer", **{name: ROOT / path for name, path in setuptools["package-dir"].items()}}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    assert found - set(setuptools["packages"]) == set(), "packages missing from pyproject.toml"
