"""Exceptions that carry the id they are about."""

from __future__ import annotations


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


class InvalidEvent(ValueError):
    """A producer's event cannot be stored; the message says which field and why."""
