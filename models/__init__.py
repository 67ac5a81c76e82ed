"""ML model families: one protocol (models.base), one module per family, found by entry point."""

from retrainer.models.base import ArtifactError, Family, Metrics, load_family

__all__ = ["ArtifactError", "Family", "Metrics", "load_family"]
