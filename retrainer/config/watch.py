"""A changed configuration file reaches a running worker or beat without a restart.

A long-running process checks the file's modification stamp (one stat) before each task, or each
beat tick, and swaps in the new settings when it changed: a model added, a threshold or a schedule
changed. What a process fixed when it started — its database, broker, queues — needs a restart: that
is logged as an error naming the keys, so a stale process is never silent. A file that no longer
validates is refused with its error and the running settings stay.
"""

from __future__ import annotations

import logging
import os

from retrainer.config import ConfigError, Settings, config_file, get_settings, install_settings, load_settings

log = logging.getLogger(__name__)

# Read once by the process that started: a change takes a restart to apply.
RESTART_KEYS = ("database_url", "broker_url", "result_backend", "redis_key_prefix", "var_dir", "artifact_dir",
                "worker_threads", "beat_lock_seconds")


def _stamp() -> tuple[str, int, int] | None:
    path = config_file()
    if path is None:
        return None
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size


class ConfigWatch:
    def __init__(self) -> None:
        self.stamp = _stamp()
        get_settings()  # what runs now is what this stamp's file said
        self.problem: str | None = None  # why the file on disk is not what runs (refused, or needs a restart)

    def poll(self) -> Settings | None:
        """The new settings when the file changed and validates (now installed), else None."""
        try:
            stamp = _stamp()
        except OSError:  # replaced mid-check (an editor's rename): the next poll sees it
            return None
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        old = get_settings()
        try:
            new = load_settings()
        except ConfigError as exc:
            self.problem = f"configuration change refused, still running the previous one: {exc}"
            log.error("%s", self.problem)
            return None
        stale = [key for key in RESTART_KEYS if getattr(old, key) != getattr(new, key)]
        if stale:
            self.problem = (f"configuration change of {', '.join(stale)} needs a restart of this process; "
                            "the rest (models, checks, schedules) applies now")
            log.error("%s", self.problem)
            new = new.model_copy(update={key: getattr(old, key) for key in stale})
        else:
            self.problem = None
        added = sorted(set(new.models) - set(old.models))
        removed = sorted(set(old.models) - set(new.models))
        log.warning("configuration reloaded from %s (models added: %s; removed: %s)", stamp[0] if stamp else "-",
                    ", ".join(added) or "none", ", ".join(removed) or "none")
        install_settings(new)
        return new
