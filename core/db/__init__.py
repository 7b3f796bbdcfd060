"""The database backend: Django's PostgreSQL backend that also sends the tenancy scope (core/tenancy.py)."""

from __future__ import annotations

from typing import Any


def prepared_cursor() -> Any:
    """A cursor of the default connection for a hot path's statements: server-side bound, prepared with a
    generic plan, rows in binary (core/db/base.py)."""
    from django.db import connection

    return connection.prepared_cursor()  # type: ignore[attr-defined]  # (this backend's own)
