"""Celery layer: the app (`celery -A retrainer.tasks worker`) and thin tasks by domain."""

from retrainer.tasks.app import app

celery = app

__all__ = ["app", "celery"]
