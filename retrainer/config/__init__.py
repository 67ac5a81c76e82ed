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
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from retrainer.config.data_checks import DataChecks as DataChecks  # re-exported
from retrainer.config.promotion import Probation as Probation  # re-exported
from retrainer.config.promotion import Promotion as Promotion
from retrainer.config.promotion import Significance as Significance
from retrainer.config.triggers import (
    AcceptRateCheck,
    AccuracyCheck,
    Budget,
    DriftCheck,
    ErrorsCheck,
    NewDataCheck,
    Schedules,
    Strict,
)
from retrainer.config.triggers import (
    parse_schedule as parse_schedule,  # re-exported: its home before the split
)

CONFIG_ENV = "RETRAINER_CONFIG"
DEFAULT_CONFIG_FILE = "retrainer.yaml"
ENV_PREFIX = "RETRAINER_"
# RETRAINER_* variables that are read by something other than Settings: not typos.
NON_SETTING_ENV = ("RETRAINER_CONFIG", "RETRAINER_REQUIRE_SERVICES", "RETRAINER_CLOCK_FILE")  # clock: retrainer/clock.py
NON_SETTING_ENV_PREFIXES = ("RETRAINER_TEST_", "RETRAINER_BENCH_")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


_Strict = Strict


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
    # An automatic retrain (not a person's) needs this many labelled rows newer than the data of the
    # model's last completed run; fewer: the run ends "no_new_data" without fitting (no retrain storms).
    min_new_rows: int = Field(100, ge=0)

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
    errors: ErrorsCheck = Field(default_factory=ErrorsCheck)
    new_data: NewDataCheck = Field(default_factory=NewDataCheck)
    drift: DriftCheck = Field(default_factory=DriftCheck)
    budget: Budget = Field(default_factory=Budget)
    schedules: Schedules = Field(default_factory=Schedules)
    promotion: Promotion = Field(default_factory=Promotion)
    training: Training = Field(default_factory=Training)
    data_checks: DataChecks = Field(default_factory=DataChecks)  # before fitting (services/data_checks.py)
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
    # The bearer token the HTTP API asks of every write (RETRAINER_API_TOKEN; a secret: never logged).
    # None: the API refuses writes (403), never open by default. Reads need it too when told so.
    api_token: SecretStr | None = None
    api_read_token_required: bool = False
    slack_timeout_seconds: float = Field(10.0, gt=0)
    redis_key_prefix: str = "retrainer"
    worker_threads: int = Field(1, ge=1)  # XGBoost/OpenMP threads per worker child process
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {"ctr": ModelConfig()})
    recovery: Recovery = Field(default_factory=Recovery)
    # How often beat compacts training rows into columnar blocks (PostgreSQL; services/blocks.py)
    compact_every_seconds: int = Field(300, gt=0)
    # On a Redis broker a beat schedules only while it holds a lock in Redis that expires this long after
    # its last renewal (every third of it): a standby beat takes over this long after the active one
    # dies. Unused on the embedded broker (one machine, one beat). tasks/beat_lock.py
    beat_lock_seconds: int = Field(30, ge=3)

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


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once; a worker or beat swaps in a changed file's settings
    (retrainer/config/watch.py)."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def install_settings(settings: Settings | None) -> None:
    """Make `settings` the process-wide settings (None: read them again on next use)."""
    global _current
    _current = settings


def reset_settings() -> None:
    install_settings(None)


def config_file() -> Path | None:
    """The configuration file this process reads, if there is one."""
    path = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)
    return path if path.is_file() else None
