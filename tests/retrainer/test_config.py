"""retrainer.config: reference defaults, YAML + RETRAINER_* sources, errors that name the key."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from retrainer.config import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    UnknownModel,
    available_families,
    load_settings,
    mask_url,
    parse_schedule,
    unknown_env_warnings,
)
from retrainer.models.base import check_models, live_check

SECRET_TOKEN = "T000SECRET/B000SECRET/XyZsEcReTtOkEn42"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RETRAINER_* variable from the process leaks in, and no retrainer.yaml in the working directory."""
    for key in list(os.environ):
        if key.startswith("RETRAINER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_reference_values(tmp_path: Path) -> None:
    s = load_settings()
    assert set(s.models) == {"ctr"}
    m = s.model("ctr")
    assert m.family == "ctr"
    assert (m.accuracy.metric, m.accuracy.threshold) == (None, None)  # the family's: ctr's MAE 0.02
    assert live_check(m.family, m.accuracy.metric, m.accuracy.threshold) == ("mae", 0.02)
    assert m.accuracy.lookback_days == 7
    assert m.accuracy.min_samples == 50
    assert m.schedules.check == "0 2 * * *"
    assert m.schedules.retrain == "0 3 * * 0"
    assert m.training.test_fraction == 0.2
    assert m.training.min_samples == 50
    assert m.training.max_rows == 10_000
    assert m.promotion.min_improvement_pct == 2.0
    assert m.promotion.auto_promote is True
    assert m.keep_versions == 10
    assert s.broker_url == "filesystem://"
    assert s.slack_webhook_url is None


def test_derived_defaults_live_under_var_dir(tmp_path: Path) -> None:
    s = load_settings(var_dir=str(tmp_path / "state"))
    assert s.database_url == f"sqlite:///{tmp_path / 'state' / 'retrainer.db'}"
    assert s.result_backend == f"db+sqlite:///{tmp_path / 'state' / 'celery-results.db'}"
    assert s.artifact_dir == tmp_path / "state" / "artifacts"
    assert s.broker_folder == tmp_path / "state" / "broker"


def test_yaml_file_from_retrainer_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "conf.yaml", {
        "broker_url": "redis://127.0.0.1:6379/0",
        "worker_threads": 3,
        "models": {"ctr": {"family": "ctr", "promotion": {"min_improvement_pct": 5},
                           "accuracy": {"mae_threshold": 0.05}}},
    })
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    s = load_settings()
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.worker_threads == 3
    assert s.model("ctr").promotion.min_improvement_pct == 5
    assert s.model("ctr").accuracy.mae_threshold == 0.05
    # what the file does not say keeps its default
    assert s.model("ctr").keep_versions == 10


def test_environment_wins_over_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "conf.yaml", {"broker_url": "redis://from-yaml:6379/0", "worker_threads": 3})
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    monkeypatch.setenv("RETRAINER_BROKER_URL", "redis://from-env:6379/0")
    s = load_settings()
    assert s.broker_url == "redis://from-env:6379/0"
    assert s.worker_threads == 3  # not overridden: the file's value


def test_nested_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAINER_WORKER_THREADS", "4")
    monkeypatch.setenv("RETRAINER_MODELS__CTR__PROMOTION__MIN_IMPROVEMENT_PCT", "7.5")
    s = load_settings()
    assert s.worker_threads == 4
    assert s.model("ctr").promotion.min_improvement_pct == 7.5


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert CONFIG_ENV in str(info.value)
    assert str(missing) in str(info.value)


def _bad(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    return str(info.value)


def test_unknown_family_names_key_and_installed_families() -> None:
    msg = _bad(models={"ctr": {"family": "no_such_family"}})
    assert "models.ctr.family" in msg
    assert "no_such_family" in msg
    for family in available_families():
        assert family in msg


def test_negative_threshold_names_key() -> None:
    msg = _bad(models={"ctr": {"accuracy": {"mae_threshold": -0.1}}})
    assert "models.ctr.accuracy.mae_threshold" in msg
    assert "models.ctr.accuracy.threshold" in _bad(models={"ctr": {"accuracy": {"threshold": -1}}})


def test_accuracy_metric_and_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "r.yaml", {"models": {
        "ctr": {"accuracy": {"metric": "within_20pct", "threshold": 0.6}},
        "churn": {"family": "classifier", "accuracy": {"threshold": 0.8}},
        "timing": {"family": "timing"},
    }})
    monkeypatch.setenv(CONFIG_ENV, str(path))
    s = load_settings()
    assert check_models(s.models) == []
    checks = {name: live_check(m.family, m.accuracy.metric, m.accuracy.threshold) for name, m in s.models.items()}
    assert checks == {"ctr": ("within_20pct", 0.6), "churn": ("accuracy", 0.8), "timing": ("mae", None)}


def test_old_mae_threshold_is_an_alias() -> None:
    a = load_settings(models={"ctr": {"accuracy": {"mae_threshold": 0.05}}}).model("ctr").accuracy
    assert (a.metric, a.threshold) == ("mae", 0.05)
    msg = _bad(models={"ctr": {"accuracy": {"mae_threshold": 0.05, "threshold": 0.01}}})
    assert "models.ctr.accuracy" in msg and "mae_threshold" in msg and "not both" in msg


def test_accuracy_metric_must_be_a_live_metric_of_the_family() -> None:
    s = load_settings(models={"ctr": {"accuracy": {"metric": "accuracy"}},
                              "churn": {"family": "classifier", "accuracy": {"metric": "precision"}}})
    assert check_models(s.models) == [
        "models.ctr.accuracy.metric: 'accuracy' is not a live metric of family ctr (regression); "
        "choose one of mae, rmse, r2, within_20pct"]


@pytest.mark.parametrize("url", ["mysql+pymysql://u:p@db/retrainer", "mariadb://u@db/retrainer", "MySQL://db/x"])
def test_mysql_and_mariadb_are_refused(url: str) -> None:
    msg = _bad(database_url=url)
    assert "database_url" in msg and "only SQLite (embedded) and PostgreSQL" in msg
    assert "partial unique indexes" in msg and "p@" not in msg


@pytest.mark.parametrize("key,value", [
    ("check", "99 2 * * *"),  # minute out of range
    ("check", "0 2 * *"),  # four fields
    ("retrain", "0 3 * * funday"),
    ("monitor", "every hour"),
])
def test_malformed_cron_names_key(key: str, value: str) -> None:
    msg = _bad(models={"ctr": {"schedules": {key: value}}})
    assert f"models.ctr.schedules.{key}" in msg
    assert value in msg


def test_unknown_key_is_refused() -> None:
    msg = _bad(models={"ctr": {"trainign": {}}})
    assert "models.ctr.trainign" in msg


@pytest.mark.parametrize("key,url", [
    ("database_url", "mongodb://x"),
    ("broker_url", "http://x"),
    ("result_backend", "mongodb://x"),
])
def test_unsupported_url_scheme_names_key(key: str, url: str) -> None:
    msg = _bad(**{key: url})
    assert key in msg
    assert repr(url.split(":")[0]) in msg


@pytest.mark.parametrize("url", [
    f"http://hooks.slack.com/services/{SECRET_TOKEN}",
    f"ftp://hooks.slack.com/services/{SECRET_TOKEN}",
    f"http://evil.example/services/{SECRET_TOKEN}",
])
def test_non_https_webhook_refused_without_echoing_it(url: str) -> None:
    msg = _bad(slack_webhook_url=url)
    assert "slack_webhook_url" in msg
    assert SECRET_TOKEN not in msg
    assert "SECRET" not in msg


def test_non_https_webhook_from_env_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAINER_SLACK_WEBHOOK_URL", f"http://hooks.slack.com/services/{SECRET_TOKEN}")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "slack_webhook_url" in str(info.value)
    assert SECRET_TOKEN not in str(info.value)
    assert SECRET_TOKEN not in repr(info.value)


def test_webhook_secret_never_in_repr_str_or_dump(caplog: pytest.LogCaptureFixture) -> None:
    url = f"https://hooks.slack.com/services/{SECRET_TOKEN}"
    with caplog.at_level(logging.DEBUG):
        s = load_settings(slack_webhook_url=url)
    assert s.slack_webhook_url is not None
    assert s.slack_webhook_url.get_secret_value() == url
    assert SECRET_TOKEN not in repr(s)
    assert SECRET_TOKEN not in str(s)
    assert SECRET_TOKEN not in str(s.model_dump())
    assert SECRET_TOKEN not in s.model_dump_json()
    assert SECRET_TOKEN not in caplog.text


def test_loopback_http_webhook_allowed() -> None:
    s = load_settings(slack_webhook_url="http://127.0.0.1:9999/hook")
    assert s.slack_webhook_url is not None


def test_bad_value_among_good_ones_lists_only_the_bad_key() -> None:
    msg = _bad(worker_threads=0, models={"ctr": {"training": {"test_fraction": 1.5}}})
    assert "worker_threads" in msg
    assert "models.ctr.training.test_fraction" in msg
    assert "broker_url" not in msg


def test_every_schedules_parse() -> None:
    assert parse_schedule("@every 10s") == timedelta(seconds=10)
    assert parse_schedule("@every 5m") == timedelta(minutes=5)
    assert parse_schedule("@every 2h") == timedelta(hours=2)
    assert parse_schedule("@every 1d") == timedelta(days=1)
    s = load_settings(models={"ctr": {"schedules": {"check": "@every 10s", "retrain": "@every 1h", "monitor": None}}})
    assert s.model("ctr").schedules.check == "@every 10s"
    assert s.model("ctr").schedules.monitor is None


def test_cron_parses_into_crontab_fields() -> None:
    assert parse_schedule("0 3 * * 0") == {
        "minute": "0", "hour": "3", "day_of_month": "*", "month_of_year": "*", "day_of_week": "0",
    }
    with pytest.raises(ValueError):
        parse_schedule("@every 0s")


def test_unknown_model_lookup_names_it() -> None:
    s = load_settings()
    with pytest.raises(UnknownModel) as info:
        s.model("churn")
    assert "churn" in str(info.value)
    assert "ctr" in str(info.value)


def test_settings_type() -> None:
    assert isinstance(load_settings(), Settings)


def test_empty_webhook_from_env_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAINER_SLACK_WEBHOOK_URL", "")
    assert load_settings().slack_webhook_url is None


# --- mistakes an operator makes: YAML syntax, JSON in variables, misspelt names ---------------------

def test_yaml_syntax_error_names_file_and_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "retrainer.yaml"
    cfg.write_text(f"broker_url: redis://127.0.0.1:6379/0\nslack_webhook_url: \"https://hooks.example/{SECRET_TOKEN}\n")
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    with pytest.raises(ConfigError) as info:
        load_settings()
    msg = str(info.value)
    assert msg.startswith(f"invalid YAML in {cfg} line 3: ")
    assert "found unexpected end of stream" in msg
    assert len(msg.splitlines()) == 1 and SECRET_TOKEN not in msg


def test_yaml_in_the_working_directory_too(tmp_path: Path) -> None:
    (tmp_path / "retrainer.yaml").write_text("models:\n  ctr:\n family: ctr\n")  # bad indentation
    with pytest.raises(ConfigError, match=r"^invalid YAML in retrainer.yaml line 3: "):
        load_settings()


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("just words\n", "str")])
def test_yaml_that_is_not_a_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, kind: str) -> None:
    cfg = tmp_path / "conf.yaml"
    cfg.write_text(text)
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    with pytest.raises(ConfigError, match=f"expected a mapping of setting: value at the top, got a {kind}"):
        load_settings()


def test_empty_yaml_is_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "empty.yaml"))
    assert load_settings().model("ctr").keep_versions == 10


@pytest.mark.parametrize("name,value,where", [
    ("RETRAINER_MODELS", "{bad", "at character 2"),
    ("RETRAINER_MODELS__CTR__PARAMS", f'{{"token": "{SECRET_TOKEN}"', "at character"),
])
def test_bad_json_in_a_variable_names_it_not_its_value(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                      where: str) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("RETRAINER_MODELS__CTR__FAMILY", "ctr")  # a plain string under the same field: not blamed
    with pytest.raises(ConfigError) as info:
        load_settings()
    msg = str(info.value)
    assert msg.startswith(f"invalid configuration: {name} is not valid JSON (") and where in msg
    assert "FAMILY" not in msg and SECRET_TOKEN not in msg and len(msg.splitlines()) == 1


def test_a_bad_value_from_a_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAINER_MODELS__CTR__ACCURACY__MAE_THRESHOLD", "-1")
    assert _bad() == ("invalid configuration: models.ctr.accuracy.mae_threshold: Input should be greater than or "
                      "equal to 0 (from RETRAINER_MODELS__CTR__ACCURACY__MAE_THRESHOLD)")


@pytest.mark.parametrize("url,masked", [
    ("postgresql+psycopg://retrainer:hunter2@db:5432/retrainer", "postgresql+psycopg://retrainer:***@db:5432/retrainer"),
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("postgresql://u@db/x?sslmode=require&password=hunter2", "postgresql://u@db/x?sslmode=require&password=***"),
    ("postgresql://u:p%40hunter2@db/x", "postgresql://u:***@db/x"),
    ("sqlite:////abs/var/retrainer.db", "sqlite:////abs/var/retrainer.db"),
    ("sqlite:///var/retrainer.db", "sqlite:///var/retrainer.db"),
    ("filesystem://", "filesystem://"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "hunter2" not in mask_url(url)


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    env = {
        "RETRAINER_SLACK_WEBHOOK": f"https://hooks.slack.com/services/{SECRET_TOKEN}",
        "RETRAINER_DATABSE_URL": "sqlite:///x.db",
        "RETRAINER_MODELS__CTR__PROMOTON__MIN_IMPROVEMENT_PCT": "5",
        "RETRAINER_MODELS__CTR__ACCURACY__MAE_TRESHOLD": "0.1",
        "RETRAINER_WORKER_THREADS__MAX": "2",  # a plain value has no sub-keys
        "RETRAINER_NOTHING_LIKE_IT": "1",
    }
    assert unknown_env_warnings(env) == [
        "RETRAINER_DATABSE_URL is not a retrainer setting; did you mean RETRAINER_DATABASE_URL?",
        ("RETRAINER_MODELS__CTR__ACCURACY__MAE_TRESHOLD is not a retrainer setting; "
         "did you mean RETRAINER_MODELS__CTR__ACCURACY__MAE_THRESHOLD?"),
        ("RETRAINER_MODELS__CTR__PROMOTON__MIN_IMPROVEMENT_PCT is not a retrainer setting; "
         "did you mean RETRAINER_MODELS__CTR__PROMOTION__MIN_IMPROVEMENT_PCT?"),
        "RETRAINER_NOTHING_LIKE_IT is not a retrainer setting",
        "RETRAINER_SLACK_WEBHOOK is not a retrainer setting; did you mean RETRAINER_SLACK_WEBHOOK_URL?",
        "RETRAINER_WORKER_THREADS__MAX is not a retrainer setting",
    ]
    assert SECRET_TOKEN not in "".join(unknown_env_warnings(env))


def test_real_settings_and_known_variables_are_not_warned_about() -> None:
    env = {
        "RETRAINER_SLACK_WEBHOOK_URL": "", "RETRAINER_DATABASE_URL": "sqlite:///x.db", "retrainer_worker_threads": "2",
        "RETRAINER_MODELS": "{}", "RETRAINER_MODELS__CHURN__FAMILY": "ctr",  # any model name
        "RETRAINER_MODELS__CTR__PARAMS__MAX_DEPTH": "4",  # any hyper-parameter
        "RETRAINER_MODELS__CTR__SCHEDULES__CHECK": "@every 1h",
        "RETRAINER_CONFIG": "retrainer.yaml", "RETRAINER_REQUIRE_SERVICES": "1",
        "RETRAINER_TEST_POSTGRES": "postgresql://x", "RETRAINER_BENCH_REDIS": "redis://x",
        "PATH": "/usr/bin", "FLOWER_BASIC_AUTH": "a:b",
    }
    assert unknown_env_warnings(env) == []
    assert unknown_env_warnings({f"RETRAINER_{name.upper()}": "x" for name in Settings.model_fields}) == []
