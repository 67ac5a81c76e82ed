"""All domain logic. Nothing here imports Celery: tasks call these functions, and so do tests."""
