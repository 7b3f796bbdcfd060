"""Django's PostgreSQL backend, plus row-level security's scope (core/tenancy.py) on every connection.

Before a cursor is handed out, the scope the code runs under is compared with the one the connection has
(tracked here); when they differ, `set_config('recsys.scope', …, false)` is sent first: one round trip on a
change, none otherwise. A rollback (of a transaction or to a savepoint) may undo a set_config made inside
it, so after one the connection's scope counts as unknown and is sent again. Raw psycopg cursors taken from
a Django cursor (COPY) are covered too: the scope is sent when the Django cursor is made.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base
from psycopg import pq

from core import tenancy

_UNKNOWN = object()
_SET_SCOPE = f"SELECT set_config('{tenancy.SETTING}', %s, false)"


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scope_sent: object = _UNKNOWN

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._scope_sent = _UNKNOWN
        return super().get_new_connection(conn_params)

    def create_cursor(self, name: str | None = None) -> Any:
        wanted = tenancy.current()
        if wanted != self._scope_sent:
            raw = self.connection
            if raw.info.transaction_status != pq.TransactionStatus.INERROR:  # (the query fails anyway)
                raw.execute(_SET_SCOPE, [wanted])
                self._scope_sent = wanted
        return super().create_cursor(name)

    def _rollback(self) -> None:
        self._scope_sent = _UNKNOWN
        super()._rollback()  # type: ignore[misc]  # (private to Django, absent from its stubs)

    def _savepoint_rollback(self, sid: str) -> None:
        self._scope_sent = _UNKNOWN
        super()._savepoint_rollback(sid)  # type: ignore[misc]

    def _close(self) -> None:
        self._scope_sent = _UNKNOWN
        super()._close()  # type: ignore[misc]
