"""Large bytea values (model artifacts: 100 MB for a store of 100,000 products) written and read as
binary parameters and results. Django's cursors bind client-side, which writes a bytea as a hex literal
in the query text: twice its size, built in Python and parsed by the server (13 s for 100 MB, against 3 s
bound as binary; reading it back, 0.7 s against 0.3 s). These run on the Django connection, in its
transaction and under its tenancy scope (sent when the Django cursor is made, core/db/base.py)."""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connection
from django.db.models import Model, QuerySet
from psycopg import sql


def binary_update(model: type[Model], pk: Any, field: str, value: bytes) -> int:
    """Set `field` (a BinaryField) of the row `pk` of `model` to `value`; the rows updated (0 or 1)."""
    column, key = model._meta.get_field(field).column, model._meta.pk.column  # type: ignore[union-attr]
    assert isinstance(column, str) and isinstance(key, str)
    statement = sql.SQL("UPDATE {} SET {} = %b WHERE {} = %s").format(
        sql.Identifier(model._meta.db_table), sql.Identifier(column), sql.Identifier(key)
    )
    with connection.cursor() as django_cursor, psycopg.Cursor(django_cursor.connection) as cursor:
        cursor.execute(statement, [value, pk])
        return cursor.rowcount


def binary_first(rows: QuerySet, field: str) -> bytes | None:
    """`field` (a BinaryField) of the first of `rows`, read as a binary result; None when there is none."""
    query, params = rows.values_list(field, flat=True)[:1].query.sql_with_params()
    with connection.cursor() as django_cursor, psycopg.Cursor(django_cursor.connection) as cursor:
        cursor.execute(query, params, binary=True)
        found = cursor.fetchone()
    return None if found is None or found[0] is None else bytes(found[0])
