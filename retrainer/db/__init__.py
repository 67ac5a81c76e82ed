"""Tables ("records"), sessions and migrations."""

from retrainer.db.session import dispose_engines, get_engine, session_factory, session_scope

__all__ = ["dispose_engines", "get_engine", "session_factory", "session_scope"]
