"""Django's PostgreSQL backend, plus row-level security's scope (core/tenancy.py) on every connection.

Before a cursor is handed out, the scope the code runs under is compared with the one the connection has
(tracked here); when they differ, `set_config('recsys.scope', …, false)` is sent first: one round trip on a
change, none otherwise. A rollback (of a transaction or to a savepoint) may undo a set_config made inside
it, so after one the connection's scope counts as unknown and is sent again. Raw psycopg cursors taken from
a Django cursor (COPY) are covered too: the scope is sent when the Django cursor is made.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base
from psycopg import pq

from core import tenancy

logger = logging.getLogger(__name__)
_UNKNOWN = object()
_SET_SCOPE = f"SELECT set_config('{tenancy.SETTING}', %s, false)"
# Whether this process checked that row-level security binds its role (once, on its first connection).
_role_checked = False
_ROLE_CHECK = (
    "SELECT r.rolname, r.rolsuper, r.rolbypassrls, pg_get_userbyid(c.relowner) = r.rolname "
    "FROM pg_roles AS r LEFT JOIN pg_class AS c ON c.oid = to_regclass('events_event') "
    "WHERE r.rolname = current_user"
)


def _check_role(connection: Any) -> None:
    """A deployment whose application connects as a superuser, a role with BYPASSRLS or the tables' owner
    has no row-level security in effect; said once per process, as an error in the log."""
    global _role_checked
    _role_checked = True
    if settings.DATABASE_ROLE != "app":
        return
    row = connection.execute(_ROLE_CHECK).fetchone()
    if row is None:
        return
    name, superuser, bypass, owner = row
    reasons = [
        what
        for what, flag in (("a superuser", superuser), ("BYPASSRLS", bypass), ("the tables' owner", owner))
        if flag
    ]
    if reasons:
        logger.error(
            "row-level security does not bind the database role %r (%s): connect the application as a role "
            "that is none of these (README, Production)",
            name,
            ", ".join(reasons),
        )


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scope_sent: object = _UNKNOWN

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._scope_sent = _UNKNOWN
        return super().get_new_connection(conn_params)

    def init_connection_state(self) -> None:
        super().init_connection_state()
        if not _role_checked:
            _check_role(self.connection)

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
