"""Declarative base: naming convention, UTC timestamps, JSON that is JSONB on PostgreSQL."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase

from retrainer.clock import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stores UTC, hands back aware UTC datetimes on every backend (SQLite keeps them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# 64-bit ids for the tables that grow with traffic; SQLite autoincrements only an INTEGER primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def enum_column(enum_cls: type[enum.Enum], column: str) -> sa.Enum:
    """Enums are stored by value as plain strings (no native ENUM types to migrate), guarded by a CHECK
    named after the column (ck_<table>_<column>): a row written around the ORM cannot hold a stray value."""
    return sa.Enum(
        enum_cls,
        name=column,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime(), dict[str, Any]: JSONType}
