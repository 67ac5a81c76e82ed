"""Exceptions that carry the id they are about."""

from __future__ import annotations

from typing import ClassVar

from retrainer.config import mask_url


class NotFound(LookupError):
    pass


class ModelVersionNotFound(NotFound):
    def __init__(self, version_id: str):
        self.version_id = version_id
        super().__init__(f"model version {version_id!r} not found")


class PredictionNotFound(NotFound):
    def __init__(self, prediction_id: str):
        self.prediction_id = prediction_id
        super().__init__(f"prediction {prediction_id!r} not found")


class NoProductionVersion(LookupError):
    def __init__(self, model: str):
        self.model = model
        super().__init__(f"model {model!r} has no production version yet")


class PromotionConflict(RuntimeError):
    """The compare-and-swap lost: production is no longer what the caller expected."""

    def __init__(self, model: str, expected: str | None, actual: str | None):
        self.model, self.expected, self.actual = model, expected, actual
        super().__init__(
            f"production of {model!r} changed under us: expected {expected or 'none'}, found {actual or 'none'}"
        )


class RequestConflict(RuntimeError):
    """A retrain request is not in a state the operation needs (cancelling one a run already took)."""


class InvalidEvent(ValueError):
    """A producer's event cannot be stored; the message says which field and why."""


class ServiceUnavailable(RuntimeError):
    """A server the configuration names cannot be used. The message is one line: what is wrong, where
    (the URL with its password masked, never the password) and what to do."""

    SERVERS: ClassVar[dict[str, str]] = {
        "postgresql": "PostgreSQL", "postgres": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB",
        "redis": "Redis", "rediss": "Redis", "amqp": "RabbitMQ", "amqps": "RabbitMQ", "pyamqp": "RabbitMQ"}

    @classmethod
    def hint(cls, url: str) -> str:
        server = cls.SERVERS.get(url.split(":", 1)[0].split("+", 1)[0].lower())
        return f"is {server} running?" if server else "is the URL right?"


class DatabaseUnreachable(ServiceUnavailable):
    def __init__(self, url: str, reason: str):
        self.reason = reason
        super().__init__(f"database unreachable at {mask_url(url)} ({reason}); {self.hint(url)} (RETRAINER_DATABASE_URL)")


class SchemaMissing(ServiceUnavailable):
    def __init__(self, url: str, found: str | None = None, needed: str | None = None):
        what = "no retrainer schema" if found is None else f"schema revision {found}, this retrainer needs {needed}"
        super().__init__(f"database at {mask_url(url)} has {what}; run `retrainer init`")


class BrokerUnreachable(ServiceUnavailable):
    def __init__(self, url: str, reason: str):
        self.reason = reason
        super().__init__(f"broker unreachable at {mask_url(url)} ({reason}); {self.hint(url)} (RETRAINER_BROKER_URL)")
