"""Celery layer: the app (`celery -A tasks worker`) and thin tasks by domain."""

from tasks.app import app

celery = app

__all__ = ["app", "celery"]
