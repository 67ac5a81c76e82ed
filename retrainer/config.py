"""One settings object: `retrainer.yaml` (path in RETRAINER_CONFIG) plus RETRAINER_* variables.

Everything is validated when the process starts, so a bad value stops a worker before it takes a
message, with an error that names the key. Environment variables win over the file; nested keys use
a double underscore (RETRAINER_MODELS__CTR__PROMOTION__MIN_IMPROVEMENT_PCT=5).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

CONFIG_ENV = "RETRAINER_CONFIG"
DEFAULT_CONFIG_FILE = "retrainer.yaml"
ENV_PREFIX = "RETRAINER_"
# RETRAINER_* variables that are read by something other than Settings: not typos.
NON_SETTING_ENV = ("RETRAINER_CONFIG", "RETRAINER_REQUIRE_SERVICES")
NON_SETTING_ENV_PREFIXES = ("RETRAINER_TEST_", "RETRAINER_BENCH_")

_EVERY = re.compile(r"^@every\s+(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def parse_schedule(expr: str) -> timedelta | dict[str, str]:
    """A five-field cron line ("0 2 * * *") as crontab fields, or "@every 30s" as an interval.

    Celery's own crontab parser does the checking, so what passes here is what beat will run.
    """
    expr = expr.strip()
    if m := _EVERY.match(expr):
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"interval must be positive: {expr!r}")
        return timedelta(seconds=seconds)
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"a cron line has 5 fields (minute hour day month weekday), got {expr!r}")
    from celery.schedules import crontab  # the parser beat itself uses

    spec = dict(zip(("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), fields, strict=True))
    try:
        crontab(**spec)
    except Exception as exc:  # noqa: BLE001  celery raises ValueError/ParseException with the field's text
        raise ValueError(f"malformed cron line {expr!r}: {exc}") from None
    return spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccuracyCheck(_Strict):
    """Daily check of live accuracy (reference: MAE > 0.02 over 7 days with >= 50 samples).

    `metric` is a live metric of the model's kind (retrainer.models.base.LIVE_METRICS; default: mae
    for regression and forecast, accuracy for classification); an error metric breaches above
    `threshold`, accuracy/precision/recall below it. `threshold` defaults to the family's own
    (ctr: MAE 0.02); without one the check measures but never asks for a retrain."""

    metric: str | None = None
    threshold: float | None = Field(None, ge=0)
    mae_threshold: float | None = Field(None, ge=0, description="deprecated: {metric: mae, threshold: x}")
    lookback_days: int = Field(7, gt=0)  # exactly N x 24 h back from now (services/accuracy.py `window`)
    min_samples: int = Field(50, gt=0)
    # A retrain this recent suppresses another check-triggered one (stops a loop on a kept candidate).
    cooldown_hours: float = Field(12.0, ge=0)

    @model_validator(mode="after")
    def _old_key(self) -> AccuracyCheck:
        if self.mae_threshold is not None:  # step 1's key keeps existing files working
            # (equal values are one setting written both ways: what a dump of these settings reads back)
            if self.threshold not in (None, self.mae_threshold) or self.metric not in (None, "mae"):
                raise ValueError("mae_threshold is the deprecated alias of {metric: mae, threshold: ...}; "
                                 "write one of the two, not both")
            self.metric, self.threshold = "mae", self.mae_threshold
        return self


class AcceptRateCheck(_Strict):
    """The hourly monitor's accept-rate check (reference: the average accept rate of the last 5
    learning cycles below 0.6, with at least 3 cycles, starts a retrain)."""

    threshold: float = Field(0.6, ge=0, le=1)
    cycles: int = Field(5, ge=1)  # the most recent learning cycles averaged
    min_cycles: int = Field(3, ge=1)  # fewer: no decision either way (recorded)
    # A retrain this check started this recently suppresses another (recorded): cycles change slowly,
    # so without it a low rate would start a retrain every hour.
    cooldown_hours: float = Field(12.0, ge=0)

    @model_validator(mode="after")
    def _enough(self) -> AcceptRateCheck:
        if self.min_cycles > self.cycles:
            raise ValueError(f"min_cycles ({self.min_cycles}) cannot exceed cycles ({self.cycles})")
        return self


class Schedules(_Strict):
    check: str | None = "0 2 * * *"  # daily accuracy check, 02:00
    retrain: str | None = "0 3 * * 0"  # weekly retrain, Sunday 03:00
    monitor: str | None = "0 * * * *"  # hourly monitor: the accept-rate check (services/accept_rate.py)

    @field_validator("check", "retrain", "monitor")
    @classmethod
    def _valid(cls, v: str | None) -> str | None:
        if v is not None:
            parse_schedule(v)
        return v


class Promotion(_Strict):
    auto_promote: bool = True  # false: every promotion, the first model's too, is a person's call
    min_improvement_pct: float = Field(2.0, ge=0)
    # An absolute quality floor every candidate must clear, the first model too: "max_<metric>" or
    # "min_<metric>" -> limit, e.g. {max_mae: 0.02} or {min_roc_auc: 0.7} (metrics of the family).
    floor: dict[str, float] = Field(default_factory=dict)

    @field_validator("floor")
    @classmethod
    def _bounds(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            if not key.startswith(("max_", "min_")) or len(key) < 5:
                raise ValueError(f"floor key {key!r}: write max_<metric> or min_<metric>")
        return v


class QuerySource(_Strict):
    """A read-only SQL query as a model's training rows (services/sources.py): its `label` and `time`
    columns, optionally an `id` column; every other column is a feature, typed by the schema rules."""

    query: str
    database_url: SecretStr | None = None  # default: retrainer's own database; shown only masked
    label: str
    time: str
    id: str | None = None

    @field_validator("query", "label", "time")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("database_url")
    @classmethod
    def _database(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and _scheme(v.get_secret_value()) not in _DB_SCHEMES:  # the URL itself is never echoed
            raise ValueError(f"unsupported URL scheme; use one of {', '.join(sorted(_DB_SCHEMES))}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> QuerySource:
        named = [c for c in (self.label, self.time, self.id) if c]
        if len(set(named)) != len(named):
            raise ValueError("label, time and id must name different columns")
        return self


class Training(_Strict):
    test_fraction: float = Field(0.2, gt=0, lt=1)  # 80/20 time-ordered split
    min_samples: int = Field(50, gt=0)
    max_rows: int = Field(10_000, gt=0)  # most recent labelled rows used for a run
    time_limit_seconds: int = Field(1800, gt=0)
    source: QuerySource | None = None  # None ("observations"): the observations table

    @field_validator("source", mode="before")
    @classmethod
    def _observations(cls, v: Any) -> Any:
        return None if v == "observations" else v


FeatureKind = Literal["numeric", "categorical", "boolean"]  # models.base.FeatureType, which config may not import


class ModelConfig(_Strict):
    family: str = "ctr"
    params: dict[str, Any] = Field(default_factory=dict)  # hyper-parameters, checked by the family's Params
    primary_metric: str | None = None  # decides promotion; default: the family's (retrainer.models.families)
    # The features, as names (types inferred from the rows, then recorded on the version) or as a
    # mapping name -> numeric | categorical | boolean. None: the production version's recorded schema,
    # else inferred from the rows (services/schema.py).
    features: list[str] | dict[str, FeatureKind] | None = None
    accuracy: AccuracyCheck = Field(default_factory=AccuracyCheck)
    accept_rate: AcceptRateCheck = Field(default_factory=AcceptRateCheck)
    schedules: Schedules = Field(default_factory=Schedules)
    promotion: Promotion = Field(default_factory=Promotion)
    training: Training = Field(default_factory=Training)
    keep_versions: int = Field(10, ge=2)
    debounce_seconds: float = Field(60.0, ge=0)  # events inside this window share one retrain

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, v: Any) -> Any:
        # Checked before pydantic's union, whose error would name both shapes ("list[str]", "dict[...]").
        if v is None:
            return v
        if not isinstance(v, (list, dict)):
            raise ValueError("expected a list of names or a mapping name -> numeric | categorical | boolean")
        for name in v:
            if not isinstance(name, str) or not name or len(name) > 64 or "\x00" in name:
                raise ValueError(f"feature name {name!r}: a string of 1 to 64 characters, no NUL")
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"a feature is named twice: {', '.join(sorted({n for n in v if v.count(n) > 1}))}")
        for name, kind in v.items() if isinstance(v, dict) else ():
            if kind not in get_args(FeatureKind):
                raise ValueError(f"{name}: type {kind!r} is not one of {', '.join(get_args(FeatureKind))}")
        return v

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        known = available_families()
        if v not in known:
            raise ValueError(f"unknown model family {v!r}; installed families: {', '.join(sorted(known)) or 'none'}")
        return v


class Recovery(_Strict):
    """How fast the work of a crashed run comes back (services/run_lock.py, services/reconcile.py)."""

    lease_seconds: int = Field(30, ge=5)  # a run that stops renewing its lease frees its model after this
    reconcile_every_seconds: int = Field(15, gt=0)  # the reconciler's beat period
    resend_after_seconds: int = Field(120, gt=0)  # a pending request this far past due is re-sent
    max_lost_runs: int = Field(3, ge=1)  # a request whose runs died this often fails instead of looping
    orphan_grace_seconds: int = Field(120, ge=0)  # artifact files younger than this are never swept


def available_families() -> set[str]:
    """Family names from the `retrainer.models` entry point group, read without importing them."""
    return {ep.name for ep in entry_points(group="retrainer.models")}


_DB_SCHEMES = {"sqlite", "postgresql", "postgres"}
# MySQL and MariaDB have no partial unique index, and those indexes are what hold one production
# version and one running run per model: refused by name rather than "unsupported scheme".
_REFUSED_DB_SCHEMES = {"mysql", "mariadb"}
_BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "sqs"}
_BACKEND_SCHEMES = {"redis", "rediss", "db", "rpc", "file"}


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.split("+")[0].lower()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    var_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite file under var_dir
    broker_url: str = "filesystem://"  # embedded default: no server; production: redis://...
    result_backend: str = ""  # default: db+sqlite file under var_dir
    artifact_dir: Path | None = None  # default: var_dir/artifacts
    slack_webhook_url: SecretStr | None = None
    slack_timeout_seconds: float = Field(10.0, gt=0)
    redis_key_prefix: str = "retrainer"
    worker_threads: int = Field(1, ge=1)  # XGBoost/OpenMP threads per worker child process
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {"ctr": ModelConfig()})
    recovery: Recovery = Field(default_factory=Recovery)
    # How often beat compacts training rows into columnar blocks (PostgreSQL; services/blocks.py)
    compact_every_seconds: int = Field(300, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE
        if os.environ.get(CONFIG_ENV) and not Path(path).is_file():
            raise ConfigError(f"{CONFIG_ENV}={path}: no such file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(path).is_file():
            sources.append(InitSettingsSource(settings_cls, init_kwargs=read_yaml(Path(path))))
        return tuple(sources)

    @field_validator("slack_webhook_url", mode="before")
    @classmethod
    def _empty_is_off(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v  # RETRAINER_SLACK_WEBHOOK_URL="" = off

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'retrainer.db'}"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{self.var_dir / 'celery-results.db'}"
        if self.artifact_dir is None:
            self.artifact_dir = self.var_dir / "artifacts"
        if _scheme(self.database_url) in _REFUSED_DB_SCHEMES:
            raise ValueError(
                f"database_url: {_scheme(self.database_url)} is not supported; only SQLite (embedded) and "
                "PostgreSQL are: retrainer's guarantees (one production version, one running retrain per model) "
                "are partial unique indexes, which MySQL and MariaDB do not have"
            )
        for key, value, allowed in (
            ("database_url", self.database_url, _DB_SCHEMES),
            ("broker_url", self.broker_url, _BROKER_SCHEMES),
            ("result_backend", self.result_backend, _BACKEND_SCHEMES),
        ):
            if _scheme(value) not in allowed:
                raise ValueError(
                    f"{key}: unsupported URL scheme {_scheme(value)!r}; use one of {', '.join(sorted(allowed))}"
                )
        if self.slack_webhook_url is not None:
            parts = urlsplit(self.slack_webhook_url.get_secret_value())
            local = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
            if parts.scheme != "https" and not local:  # the value itself is a secret: never echo it
                raise ValueError("slack_webhook_url: must be an https:// URL (plain http only to a loopback relay)")
        return self

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(name, list(self.models)) from None

    @property
    def broker_folder(self) -> Path:
        return self.var_dir / "broker"


class UnknownModel(LookupError):
    def __init__(self, name: str, known: list[str]):
        self.name = name
        super().__init__(f"unknown model {name!r}; configured models: {', '.join(known) or 'none'}")


def read_yaml(path: Path) -> dict[str, Any]:
    """The configuration file as a mapping; a syntax error names the file and the line, never its text."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path} line {mark.line + 1}" if mark else str(path)
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"invalid YAML in {where}: {what}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value at the top, got a {type(data).__name__}")
    return data


def _explain(exc: ValidationError, environ: Mapping[str, str]) -> str:
    """One line per bad key, naming the variable it came from if one did; pydantic's messages name the
    rule, never the (possibly secret) value."""
    set_names = {name.upper(): name for name in environ}
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        variable = set_names.get(ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper())
        lines.append(f"invalid configuration: {key}: {msg}" + (f" (from {variable})" if variable else ""))
    return "\n".join(lines)


def _explain_source(exc: SettingsError, environ: Mapping[str, str]) -> str:
    """pydantic-settings names only the field ("models") when a variable holds bad JSON: name the variable."""
    field = m.group(1) if (m := re.search(r'field "([^"]+)"', str(exc))) else ""
    name = (ENV_PREFIX + field).upper()
    under = [k for k in sorted(environ) if k.upper() == name or k.upper().startswith(name + "__")]
    lines = []
    for key in under:
        value = environ[key].strip()
        if value[:1] in ("{", "["):
            try:
                json.loads(value)
            except json.JSONDecodeError as err:  # what and where, not the value (it may be a secret)
                lines.append(f"invalid configuration: {key} is not valid JSON ({err.msg} at character {err.pos + 1})")
    return "\n".join(lines) or f"invalid configuration: cannot parse {' or '.join(under) or name}"


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings; raises ConfigError whose message names each bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, os.environ)) from None
    except SettingsError as exc:
        raise ConfigError(_explain_source(exc, os.environ)) from None


def mask_url(url: str) -> str:
    """`url` for a message or a log: the password (user:PASSWORD@ or ?password=) replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<malformed URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    # Built by hand: urlunsplit drops the empty authority of sqlite:////abs/path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + (
        f"#{parts.fragment}" if parts.fragment else "")


def unknown_env_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per RETRAINER_* variable that names no setting (a typo is otherwise ignored silently),
    with the closest real name. Values are never shown: they may be secrets."""
    environ = os.environ if environ is None else environ
    warnings = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in NON_SETTING_ENV or upper.startswith(NON_SETTING_ENV_PREFIXES):
            continue
        parts = upper.removeprefix(ENV_PREFIX).lower().split("__")
        problem = _unknown_part(parts)
        if problem is None:
            continue
        index, candidates = problem
        line = f"{name} is not a retrainer setting"
        if match := difflib.get_close_matches(parts[index], candidates, n=1):
            fixed = [*parts[:index], match[0], *parts[index + 1:]]
            if _unknown_part(fixed) is not None:
                fixed = fixed[:index + 1]
            line += f"; did you mean {ENV_PREFIX}{'__'.join(fixed).upper()}?"
        warnings.append(line)
    return warnings


def _unknown_part(parts: list[str]) -> tuple[int, list[str]] | None:
    """Walk a `__`-nested setting path through the Settings model: None if it names a setting, else the
    index of the first part that names nothing and the names that would have been valid there."""
    annotation: Any = Settings
    for i, part in enumerate(parts):
        if get_origin(annotation) in (Union, types.UnionType):  # X | None
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if part not in annotation.model_fields:
                return i, sorted(annotation.model_fields)
            annotation = annotation.model_fields[part].annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]  # any key: a model name, a hyper-parameter
        elif annotation is Any:
            return None
        else:
            return i, []  # a plain value has no sub-keys
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (workers read them at boot)."""
    return load_settings()


def reset_settings() -> None:
    get_settings.cache_clear()
