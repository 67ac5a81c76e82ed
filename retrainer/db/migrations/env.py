"""Alembic environment: runs on the connection `retrainer.db.migrate` hands it, or on the URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from retrainer.db import records  # noqa: F401  (registers every table on the metadata)
from retrainer.db.base import Base

config = context.config
target_metadata = Base.metadata


def run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
