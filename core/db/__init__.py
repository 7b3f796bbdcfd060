"""The database backend: Django's PostgreSQL backend that also sends the tenancy scope (core/tenancy.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def prepared_cursor() -> Any:
    """A cursor of the default connection for a hot path's statements: server-side bound, prepared with a
    generic plan, rows in binary (core/db/base.py)."""
    from django.db import connection

    return connection.prepared_cursor()  # type: ignore[attr-defined]  # (this backend's own)


# Many ids as one parameter, for `= ANY(TEXT_IDS)`: psycopg dumps a list of N strings as an array in Python
# (about 0.6 µs an element: a batch of 1,000 events' two lists of its shoppers cost its web process 1 ms),
# one string in C (0.1 ms for the same statement). The separator is a control character, which no stored
# id holds (core.validation refuses them in every `...id` field), so splitting gives back the ids.
ID_SEPARATOR = "\x1f"
TEXT_IDS = "string_to_array(%s, E'\\x1f')"


def text_ids(values: Iterable[str]) -> str:
    """The parameter of TEXT_IDS for these ids. An id holding the separator matches nothing stored (no
    stored id holds a control character), so it is left out rather than split into others."""
    return ID_SEPARATOR.join([value for value in values if ID_SEPARATOR not in value])
