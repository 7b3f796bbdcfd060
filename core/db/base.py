"""Django's PostgreSQL backend, plus row-level security's scope (core/tenancy.py) on every connection.

Before a cursor is handed out, the scope the code runs under is compared with the one the connection has
(tracked here); when they differ, `set_config('recsys.scope', …, false)` is sent first: one round trip on a
change, none otherwise. A rollback (of a transaction or to a savepoint) may undo a set_config made inside
it, so after one the connection's scope counts as unknown and is sent again. Raw psycopg cursors taken from
a Django cursor (COPY) are covered too: the scope is sent when the Django cursor is made.

`prepared_cursor()` is for the statements of the hot paths (an event's insert, a product id's lookup, a
shopper's history): bound server-side, prepared on a connection's first use of the statement and kept with
a generic plan (`plan_cache_mode`, set on every connection, applies only to prepared statements, and only
these are prepared), rows read in binary. Planning such a statement under row-level security's policies
costs the server more than running it (about 100 µs against 40 for a product id's lookup), and Django's
text loader of timestamps is Python: 200 history rows cost 1.4 ms of the web process to read as text,
0.16 ms as binary. Through Django's cursor wrapper, so query logging and execute wrappers see them.
"""

from __future__ import annotations

import contextvars
import logging
import select
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base, operations
from django.db.backends.utils import CursorWrapper
from psycopg import pq

from core import tenancy

logger = logging.getLogger(__name__)
_UNKNOWN = object()
# A fast-path request's start (Django's request_started: old connections closed, a reused one's health
# checked before its first query), made on its first use of the database rather than up front
# (core/fast_path.database_request): an answer computed from Redis and memory asks nothing of it.
pending_request_start: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "pending_request_start", default=None
)
# psycopg prepares a statement run this many times on a connection: never, in effect; only
# prepared_cursor()'s statements are prepared (Django's own cursors bind client-side and prepare nothing)
NEVER_BY_COUNT = 2**31 - 1
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


class PreparedCursor(psycopg.Cursor):
    """Every statement bound server-side and prepared (psycopg keeps each connection's prepared statements
    by their text), its rows read in binary."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=True, binary=True)


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        """A prepared statement's text with its parameters, as the query log shows the others' (psycopg
        keeps no text of a prepared execution)."""
        if isinstance(cursor, PreparedCursor):
            try:
                return self.compose_sql(sql, params)
            except psycopg.Error:
                return sql
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scope_sent: object = _UNKNOWN

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if not settings.DATABASE_PREPARED_STATEMENTS:
            return params
        # prepared statements (only prepared_cursor()'s) keep one generic plan: a custom plan for each
        # execution would plan again every time (PostgreSQL keeps custom plans where arrays are bound)
        params["options"] = f"{params.get('options', '')} -c plan_cache_mode=force_generic_plan".strip()
        if params.get("prepare_threshold") is None:  # (Django's None turns preparing off altogether)
            params["prepare_threshold"] = NEVER_BY_COUNT
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._scope_sent = _UNKNOWN
        return super().get_new_connection(conn_params)

    def ensure_connection(self) -> None:
        _start_pending_request()
        super().ensure_connection()

    def close_if_health_check_failed(self) -> None:
        """The health check of a reused connection (CONN_HEALTH_CHECKS: before a request's first query)
        without its round trip when nothing came from the server since the connection was last used: a
        server that closes a connection (a restart, a terminated backend, an idle timeout) says so or
        closes the socket, which is then readable. Only then is it asked (`SELECT 1`), as Django does.
        Every event POST's first query is checked: this saves a round trip of both processes' CPU."""
        _start_pending_request()  # (the request's start may close this connection, or ask for a check)
        if self.connection is None or not self.health_check_enabled or self.health_check_done:  # type: ignore[attr-defined,has-type]
            return
        try:
            poller = select.poll()
            poller.register(self.connection.fileno(), select.POLLIN | select.POLLPRI)
            readable = bool(poller.poll(0))
        except (OSError, ValueError, psycopg.Error):
            readable = True
        if not readable:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def prepared_cursor(self) -> CursorWrapper:
        """A cursor for a hot path's statements (see the module's docstring); parameters as `%s`, a list
        bound as an array (`= ANY(%s)`). With DATABASE_PREPARED_STATEMENTS off, a plain cursor."""
        if not settings.DATABASE_PREPARED_STATEMENTS:
            return self.cursor()
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            self._send_scope()
            return self._prepare_cursor(PreparedCursor(self.connection))  # type: ignore[attr-defined]

    def init_connection_state(self) -> None:
        super().init_connection_state()
        if not _role_checked:
            _check_role(self.connection)

    def create_cursor(self, name: str | None = None) -> Any:
        self._send_scope()
        return super().create_cursor(name)

    def _send_scope(self) -> None:
        wanted = tenancy.current()
        if wanted != self._scope_sent:
            raw = self.connection
            if raw.info.transaction_status != pq.TransactionStatus.INERROR:  # (the query fails anyway)
                raw.execute(_SET_SCOPE, [wanted])
                self._scope_sent = wanted

    def _rollback(self) -> None:
        self._scope_sent = _UNKNOWN
        super()._rollback()  # type: ignore[misc]  # (private to Django, absent from its stubs)

    def _savepoint_rollback(self, sid: str) -> None:
        self._scope_sent = _UNKNOWN
        super()._savepoint_rollback(sid)  # type: ignore[misc]

    def _close(self) -> None:
        self._scope_sent = _UNKNOWN
        super()._close()  # type: ignore[misc]


def _start_pending_request() -> None:
    start = pending_request_start.get()
    if start is not None:
        pending_request_start.set(None)
        start()
