"""Tables ("records"), sessions and migrations."""

from retrainer.db.session import TRANSIENT_ERRORS, dispose_engines, get_engine, session_factory, session_scope

__all__ = ["TRANSIENT_ERRORS", "dispose_engines", "get_engine", "session_factory", "session_scope"]
