"""The CLI as a user runs it: a real `retrainer` process per command, on a SQLite file; and every
problem an operator meets (dead servers, no schema, bad YAML or environment, Flower's credentials) as
one line on stderr with its exit code, never a traceback, never a password."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from retrainer.db import session_scope
from retrainer.db.records import Observation, RequestStatus, RetrainRequest, RunStatus, TrainingRun
from retrainer.demo import synthetic
from retrainer.demo.processes import CeleryProcess
from tests.support import RUN_ID, make_settings, model_config, wait_until

_SCRIPT = Path(sys.executable).with_name("retrainer")  # the console script pip installed
RETRAINER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "retrainer.cli"]
PASSWORD = "s3cret-Pw"
DEAD_DATABASE = f"postgresql+psycopg://retrainer:{PASSWORD}@127.0.0.1:1/retrainer"  # nothing listens on port 1
DEAD_BROKER = f"redis://:{PASSWORD}@127.0.0.1:1/0"


@pytest.fixture
def cli(tmp_path: Path):
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"var_dir": str(tmp_path / "var"), "models": {"ctr": model_config()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")} | {"RETRAINER_CONFIG": str(config)}

    def run(*args: str, ok: bool = True, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*RETRAINER, *args], check=False, cwd=tmp_path, env=env | (extra_env or {}),
                              capture_output=True, text=True, timeout=120)
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    run.url = f"sqlite:///{tmp_path / 'var' / 'retrainer.db'}"  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    return run


def seed(url: str, n: int = 400, drift: bool = False, model: str = "ctr") -> None:
    now = datetime.now(UTC)
    rows = synthetic.generate(n, now - timedelta(days=20), now, seed=11 if drift else 5,
                              drift_from=now - timedelta(days=20) if drift else None)
    with session_scope(url) as s:
        s.add_all([Observation(model=model, features=r.features, label=r.label, event_time=r.event_time,
                               source="test") for r in rows])


def test_init_is_idempotent(cli) -> None:
    first = cli("init").stdout
    assert first.startswith("schema at revision 0")
    assert cli("init").stdout == first


def test_local_retrain_status_history_versions_promote_rollback(cli) -> None:
    cli("init")
    seed(cli.url)
    first = json.loads(cli("retrain", "ctr", "--local", "--json").stdout)
    assert first["status"] == "retrained" and first["version_id"] == "ctr-v1"
    assert set(first["metrics"]) >= {"test_mae", "test_rmse", "test_r2", "test_accuracy"}

    seed(cli.url, drift=True)
    second = json.loads(cli("retrain", "ctr", "--local", "--json").stdout)
    assert second["status"] in ("retrained", "kept") and second["old_metrics"] is not None

    versions = json.loads(cli("versions", "ctr", "--json").stdout)
    assert versions["count"] == 2
    assert {v["version_id"] for v in versions["versions"]} == {"ctr-v1", "ctr-v2"}
    history = json.loads(cli("history", "ctr", "--json").stdout)
    assert history["count"] == 2 and history["training_runs"][0]["model_version_id"] == "ctr-v2"
    status = json.loads(cli("status", "--json").stdout)["models"]["ctr"]
    assert status["production"]["version_id"] == ("ctr-v2" if second["status"] == "retrained" else "ctr-v1")

    target = "ctr-v1" if status["production"]["version_id"] == "ctr-v2" else "ctr-v2"
    promoted = json.loads(cli("promote", target).stdout)
    assert promoted == {"status": "success", "message": f"Model {target} promoted to production", "version_id": target}
    rolled = json.loads(cli("rollback", "ctr").stdout)
    assert rolled["version_id"] != target
    assert json.loads(cli("status", "--json").stdout)["models"]["ctr"]["production"]["version_id"] == rolled["version_id"]


def test_predict_outcome_and_local_check(cli) -> None:
    cli("init")
    seed(cli.url)
    cli("retrain", "ctr", "--local")
    features = json.dumps(synthetic.generate(1, datetime.now(UTC), datetime.now(UTC))[0].features)
    made = json.loads(cli("predict", "ctr", "--features", features, "--segment", "hook_type=question").stdout)
    assert made["version_id"] == "ctr-v1" and 0 < made["predicted"] < 0.5
    done = json.loads(cli("outcome", made["prediction_id"], str(made["predicted"] + 0.05)).stdout)
    assert done["status"] == "completed" and done["error"] == pytest.approx(0.05)
    done = cli("check", "ctr", "--local", "--json", ok=False)
    assert done.returncode == 3  # insufficient data: scripts notice
    check = json.loads(done.stdout)
    assert check["status"] == "insufficient_data" and check["current_accuracy"]["total_predictions"] == 1
    assert (check["metric"], check["threshold"], check["current_accuracy"]["count"]) == ("mae", 0.02, 1)
    table = cli("status", "ctr").stdout  # the model's live metric and threshold, not a fixed MAE column
    assert "mae 0.0500 (1)" in table and "0.02" in table
    assert "mae" in cli("history", "ctr").stdout and "mae" in cli("versions", "ctr").stdout
    bad = cli("predict", "ctr", "--features", features, "--segment", "region", ok=False)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_insufficient_data_is_exit_3(cli) -> None:
    cli("init")
    seed(cli.url, n=20)
    done = cli("retrain", "ctr", "--local", ok=False)
    assert done.returncode == 3 and done.stdout.startswith("insufficient_data: Need at least 50 samples"), done
    done = cli("retrain", "ctr", "--local", "--json", ok=False)
    assert done.returncode == 3 and json.loads(done.stdout)["status"] == "insufficient_data"


@pytest.mark.parametrize("command", [
    ["predict", "nope", "--features", '{"hook_strength": 0.7}'], ["rollback", "nope"], ["versions", "nope"],
    ["history", "nope", "--json"], ["event", "purchase", "nope", "--features", '{"a": 1}', "--value", "0.1"],
    ["status", "ctr", "nope"], ["retrain", "nope"], ["check", "nope"],
])
def test_unknown_model_is_named_everywhere(cli, command: list[str]) -> None:
    cli("init")
    assert problem(cli(*command, ok=False), 1) == "error: unknown model 'nope'; configured models: ctr"


def test_status_of_named_models(cli) -> None:
    cli("init")
    assert list(json.loads(cli("status", "ctr", "--json").stdout)["models"]) == ["ctr"]


def test_promote_expecting_another_models_version_is_refused(cli, tmp_path: Path) -> None:
    (tmp_path / "retrainer.yaml").write_text(yaml.safe_dump({  # the file the fixture's RETRAINER_CONFIG names
        "var_dir": str(tmp_path / "var"), "models": {"ctr": model_config(), "roas": model_config()}}))
    cli("init")
    for model in ("ctr", "roas"):
        seed(cli.url, model=model)
        cli("retrain", model, "--local")
    def production() -> dict[str, str]:
        models = json.loads(cli("status", "--json").stdout)["models"]
        return {name: m["production"]["version_id"] for name, m in models.items()}

    assert production() == {"ctr": "ctr-v1", "roas": "roas-v1"}
    assert problem(cli("promote", "ctr-v1", "--expect", "roas-v1", ok=False), 1) == (
        "error: cannot promote ctr-v1: the expected production version 'roas-v1' is a version of 'roas', not of "
        "'ctr' (production of 'ctr' is ctr-v1)")
    assert problem(cli("promote", "ctr-v1", "--expect", "ctr-v9", ok=False), 1) == (
        "error: cannot promote ctr-v1: the expected production version 'ctr-v9' does not exist "
        "(production of 'ctr' is ctr-v1)")
    assert production() == {"ctr": "ctr-v1", "roas": "roas-v1"}


def test_errors_name_the_problem(cli) -> None:
    cli("init")
    unknown = cli("retrain", "nope", "--local", ok=False)
    assert unknown.returncode == 1 and "unknown model 'nope'" in unknown.stderr
    missing = cli("promote", "ctr-v99", ok=False)
    assert missing.returncode == 1 and "ctr-v99" in missing.stderr
    no_prod = cli("rollback", "ctr", ok=False)
    assert no_prod.returncode == 1 and "no production version" in no_prod.stderr
    bad = cli("status", ok=False, extra_env={"RETRAINER_MODELS__CTR__ACCURACY__MAE_THRESHOLD": "-1"})
    assert bad.returncode == 2 and "models.ctr.accuracy.mae_threshold" in bad.stderr
    nan = cli("event", "purchase", "ctr", "--features", '{"a": NaN}', "--value", "0.1", ok=False)
    assert nan.returncode == 1 and "not a finite number" in nan.stderr


def test_a_bad_hyper_parameter_stops_a_retrain_before_it_starts(cli) -> None:
    cli("init")
    env = {"RETRAINER_MODELS__CTR__PARAMS": '{"max_depht": 3}'}
    bad = cli("retrain", "ctr", "--local", ok=False, extra_env=env)
    assert problem(bad, 2).startswith("error: invalid configuration: models.ctr.params.max_depht: ")
    assert cli("versions", "ctr", extra_env=env).returncode == 0  # reading history needs no valid params


def test_event_file_uses_the_batch_path(cli, tmp_path: Path) -> None:
    cli("init")
    now = datetime.now(UTC)
    events = synthetic.as_purchase_events(synthetic.generate(120, now - timedelta(hours=1), now), "ctr", "file")
    lines = [json.dumps(e) for e in events] + ["{not json", json.dumps({"type": "purchase", "model": "nope",
                                                                         "features": {"a": 1}, "value": 1})]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = cli("event", "--file", str(path), ok=False)
    assert done.returncode == 1  # two rejected lines
    out = json.loads(done.stdout)
    assert out["stored"] == 120 and out["retrains_enqueued"] == 1
    assert [r["index"] for r in out["rejected"]] == [120, 121]
    with session_scope(cli.url) as s:
        assert s.query(Observation).filter(Observation.event_id.like("file-%")).count() == 120


# --- problems as one line ---------------------------------------------------------------------------

def problem(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The one stderr line of a failed command (exit `code`), after checking it leaks nothing."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [["init"], ["status"], ["history", "ctr"], ["retrain", "ctr", "--local"],
                                     ["promote", "ctr-v1"]])
def test_dead_database_is_one_line(cli, command: list[str]) -> None:
    done = cli(*command, ok=False, extra_env={"RETRAINER_DATABASE_URL": DEAD_DATABASE})
    assert problem(done, 1) == ("error: database unreachable at postgresql+psycopg://retrainer:***@127.0.0.1:1/"
                                "retrainer (connection refused); is PostgreSQL running? (RETRAINER_DATABASE_URL)")


def test_commands_before_init_say_run_init(cli) -> None:
    for command in (["status"], ["history", "ctr"], ["versions", "ctr", "--json"]):
        line = problem(cli(*command, ok=False), 1)
        assert line == f"error: database at {cli.url} has no retrainer schema; run `retrainer init`"


@pytest.mark.postgres
def test_postgres_schema_without_tables_says_run_init(cli, postgres_url: str) -> None:
    line = problem(cli("status", ok=False, extra_env={"RETRAINER_DATABASE_URL": postgres_url}), 1)
    assert line.startswith("error: database at postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert line.endswith("has no retrainer schema; run `retrainer init`")
    assert "revision" in cli("init", extra_env={"RETRAINER_DATABASE_URL": postgres_url}).stdout
    assert json.loads(cli("status", "--json", extra_env={"RETRAINER_DATABASE_URL": postgres_url}).stdout)["models"]


def test_yaml_syntax_error_names_file_and_line(cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"var_dir: var\nslack_webhook_url: https://hooks.example/{PASSWORD}\nmodels: {{ctr: {{family: ctr\n")
    line = problem(cli("status", ok=False, extra_env={"RETRAINER_CONFIG": str(broken)}), 2)
    assert line.startswith(f"error: invalid YAML in {broken} line 4: ")
    assert "expected ',' or '}'" in line


@pytest.mark.parametrize("name,value", [("RETRAINER_MODELS", "{bad"),
                                        ("RETRAINER_MODELS__CTR__PARAMS", f'{{"token": "{PASSWORD}",')])
def test_bad_json_in_the_environment_names_the_variable(cli, name: str, value: str) -> None:
    line = problem(cli("status", ok=False, extra_env={name: value}), 2)
    assert line.startswith(f"error: invalid configuration: {name} is not valid JSON (")


@pytest.mark.parametrize("name,value,line", [
    ("RETRAINER_MODELS__CTR", f"[{PASSWORD}",
     "models.ctr: Input should be a valid dictionary or instance of ModelConfig"),
    ("RETRAINER_MODELS__CTR__FEATURES", f"[{PASSWORD}",
     "models.ctr.features: expected a list of names or a mapping name -> numeric | categorical | boolean"),
    ("RETRAINER_WORKER_THREADS", "many",  # longer than a terminal: still one line
     "worker_threads: Input should be a valid integer, unable to parse string as an integer"),
])
def test_a_bad_value_names_the_key_and_the_variable(cli, name: str, value: str, line: str) -> None:
    assert problem(cli("status", ok=False, extra_env={name: value}), 2) == \
        f"error: invalid configuration: {line} (from {name})"


def test_misspelt_variable_is_warned_about(cli) -> None:
    cli("init")
    done = cli("status", extra_env={"RETRAINER_SLACK_WEBHOOK": f"https://hooks.example/{PASSWORD}",
                                    "RETRAINER_WORKER_THREAD": "2",
                                    "RETRAINER_REQUIRE_SERVICES": "1", "RETRAINER_TEST_ANYTHING": "1"})
    assert done.stderr.splitlines() == [
        "warning: RETRAINER_SLACK_WEBHOOK is not a retrainer setting; did you mean RETRAINER_SLACK_WEBHOOK_URL?",
        "warning: RETRAINER_WORKER_THREAD is not a retrainer setting; did you mean RETRAINER_WORKER_THREADS?",
    ]
    assert PASSWORD not in done.stdout + done.stderr
    # a misspelt nested key is refused (models are strict); the warning says what was meant
    done = cli("status", ok=False, extra_env={"RETRAINER_MODELS__CTR__PROMOTON__MIN_IMPROVEMENT_PCT": "5"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        ("warning: RETRAINER_MODELS__CTR__PROMOTON__MIN_IMPROVEMENT_PCT is not a retrainer setting; "
         "did you mean RETRAINER_MODELS__CTR__PROMOTION__MIN_IMPROVEMENT_PCT?"),
        "error: invalid configuration: models.ctr.promoton: Extra inputs are not permitted",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A server that completes the TCP handshake (the kernel does, from the backlog) and never answers:
    the slowest kind of dead broker."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"redis://:{PASSWORD}@127.0.0.1:{server.getsockname()[1]}/0"


@pytest.mark.parametrize("command", [["retrain", "ctr"], ["check", "ctr"]])
@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_dead_broker_fails_in_seconds(cli, request: pytest.FixtureRequest, command: list[str], kind: str) -> None:
    url = DEAD_BROKER if kind == "refused" else request.getfixturevalue("silent_broker")
    cli("init")
    started = time.monotonic()
    done = cli(*command, ok=False, extra_env={"RETRAINER_BROKER_URL": url})
    took = time.monotonic() - started
    port = url.rsplit(":", 1)[1].split("/")[0]
    reason = "connection refused" if kind == "refused" else "timed out"
    assert problem(done, 1) == (f"error: broker unreachable at redis://:***@127.0.0.1:{port}/0 ({reason}); "
                                "is Redis running? (RETRAINER_BROKER_URL)")
    assert took < 15, took  # seconds, not kombu's minutes of retries


# --- waiting on a worker ----------------------------------------------------------------------------

def test_no_worker_on_the_embedded_broker_fails_in_seconds(cli) -> None:
    cli("init")
    started = time.monotonic()
    line = problem(cli("retrain", "ctr", ok=False), 1)
    assert line == "error: no worker consumes the 'training' queue at filesystem://; start one: retrainer worker -Q training"
    assert time.monotonic() - started < 15
    with session_scope(cli.url) as s:
        assert s.query(RetrainRequest).count() == 0  # refused before anything was opened or sent


def start_cli_worker(cli, env: dict[str, str], *args: str) -> CeleryProcess:
    """`retrainer worker ARGS`, as an operator starts it (it becomes a Celery worker in the same process)."""
    log = Path(env["RETRAINER_VAR_DIR"]) / f"worker-{uuid.uuid4().hex[:6]}.log"
    worker = CeleryProcess(["worker", *args], log, cli.env | env, program=RETRAINER)
    try:
        worker.wait_for("ready.", 90)
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.mark.redis
@pytest.mark.worker
def test_waiting_on_a_worker_says_when_none_consumes_the_queue(cli, tmp_path: Path, redis_url: str) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # artifacts cannot be written under a file: the worker's retrain ends in error
    settings = make_settings(tmp_path, cli.url, broker_url=redis_url, redis_key_prefix=f"rt-{RUN_ID}-{uuid.uuid4().hex[:6]}")
    env = {"RETRAINER_BROKER_URL": redis_url, "RETRAINER_RESULT_BACKEND": redis_url,
           "RETRAINER_REDIS_KEY_PREFIX": settings.redis_key_prefix, "RETRAINER_VAR_DIR": str(tmp_path / "var"),
           "RETRAINER_ARTIFACT_DIR": str(blocker / "artifacts")}
    cli("init")
    seed(cli.url)
    host = socket.gethostname()

    def no_worker(queue: str, up: str = "") -> str:
        return f"error: no worker consumes the {queue!r} queue at {redis_url}{up}; start one: retrainer worker -Q {queue}"

    # no worker at all: both commands fail in seconds, before anything is sent
    for command, queue in ((["retrain", "ctr"], "training"), (["check", "ctr"], "checks")):
        started = time.monotonic()
        assert problem(cli(*command, ok=False, extra_env=env), 1) == no_worker(queue)
        assert time.monotonic() - started < 15
    # a worker on other queues; its default name carries its queues
    workers = [start_cli_worker(cli, env, "-Q", "events,notifications", "-c", "1")]
    try:
        up = f" (up: events-notifications@{host} on events,notifications)"
        assert problem(cli("retrain", "ctr", ok=False, extra_env=env), 1) == no_worker("training", up)
        # and the right one, with a Celery option passed through after `--`
        workers.append(start_cli_worker(cli, env, "-Q", "training,checks", "-c", "1", "--", "--max-tasks-per-child",
                                        "7"))
        check = cli("check", "ctr", ok=False, extra_env=env)
        assert check.returncode == 3 and check.stdout.startswith("insufficient_data: "), check  # the worker's answer
        failed = problem(cli("retrain", "ctr", ok=False, extra_env=env), 1)
        assert failed.startswith("error: retrain of 'ctr' failed (run run_") and "NotADirectoryError" in failed, failed

        from retrainer.tasks.app import make_app
        from retrainer.tasks.enqueue import workers_on

        app = make_app(settings)
        try:  # two workers of one host, both visible by name (as Flower lists them)
            assert workers_on("no-such-queue", via=app) == {
                f"events-notifications@{host}": ["events", "notifications"],
                f"training-checks@{host}": ["training", "checks"]}
            stats = app.control.inspect(timeout=3, destination=[f"training-checks@{host}"]).stats()
            assert stats[f"training-checks@{host}"]["pool"]["max-tasks-per-child"] == 7
        finally:
            app.close()
    finally:
        for worker in workers:
            worker.stop()
    with session_scope(cli.url) as s:  # the failed run and its request both say why
        (run,) = s.query(TrainingRun).all()
        (request,) = s.query(RetrainRequest).all()
        assert run.status == RunStatus.FAILED and "NotADirectoryError" in run.error_message
        assert request.status == RequestStatus.FAILED and "NotADirectoryError" in request.error_message


# --- Flower -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["admin", "admin:", f":{PASSWORD}", f"admin:{PASSWORD},", f"a:{PASSWORD},b", ""])
def test_malformed_flower_auth_is_refused_without_echoing_it(cli, value: str) -> None:
    line = problem(cli("flower", ok=False, extra_env={"FLOWER_BASIC_AUTH": value}), 2)
    assert line.startswith("error: FLOWER_BASIC_AUTH must be user:password[,user:password]")


def test_flower_without_auth_only_on_loopback(cli) -> None:
    assert "set FLOWER_BASIC_AUTH" in problem(cli("flower", ok=False), 2)
    assert "--no-auth only on a loopback address" in problem(cli("flower", "--no-auth", "--address", "0.0.0.0", ok=False), 2)


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (IPv4, from /proc/net/tcp: state 0A is LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return found


def http_status(url: str, credentials: str | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc (Linux)")
def test_flower_binds_loopback_and_reads_its_credentials_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"var_dir": str(tmp_path / "var")}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")} | {
        "RETRAINER_CONFIG": str(config), "FLOWER_BASIC_AUTH": f"admin:{PASSWORD},ops:other-pw"}
    proc = subprocess.Popen([*RETRAINER, "flower", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: listening_addresses(port) or proc.poll() is not None, timeout=60, what="Flower to listen")
        assert proc.poll() is None, "Flower exited"
        assert listening_addresses(port) == {"127.0.0.1"}
        command_line = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()  # what `ps` shows
        assert PASSWORD not in command_line and "basic" not in command_line.lower()
        url = f"http://127.0.0.1:{port}/api/workers"
        assert http_status(url) == 401
        assert http_status(url, "admin:wrong") == 401
        assert http_status(url, f"admin:{PASSWORD}") == 200
        assert http_status(url, "ops:other-pw") == 200
    finally:
        proc.terminate()
        proc.wait(20)
