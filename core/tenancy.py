"""Which stores' rows the database shows: the scope of row-level security, in one place.

Every tenant table (a `store_id` column) has PostgreSQL row-level security, forced, with a policy on the
setting `recsys.scope` of the session (core/migrations/0002_row_level_security.py): a store's id shows
that store's rows, `all` shows every store's, and anything else, unset included, shows none. The products
and settings of stores that share with the network are also readable by a store that shares itself.

The application sets the scope here, as a context variable, and the database backend (core/db) sends it
to PostgreSQL before the next query whenever it differs from what the connection has (after a rollback it
is sent again, since a rollback undoes it). So:

- an API request starts with no scope and gets its store's when its key is authenticated;
- the admin (staff only), the health check's counts, the API key lookup and the workers' cross-store
  tasks use `all_stores()` / `ALL`; a store's training narrows to `store_scope(store_id)`;
- a query made with no scope sees no rows: a forgotten scope fails closed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

SETTING = "recsys.scope"
ALL = "all"
NONE = ""

_scope: contextvars.ContextVar[str] = contextvars.ContextVar("tenancy_scope", default=NONE)


def current() -> str:
    """The scope the next query runs under: a store's id, ALL, or NONE."""
    return _scope.get()


def enter(scope: str) -> contextvars.Token[str]:
    """Set the scope until `leave(token)` (a request's or a task's start and end)."""
    return _scope.set(scope)


def leave(token: contextvars.Token[str]) -> None:
    _scope.reset(token)


def of_store(store_id: int) -> str:
    return str(int(store_id))


def set_store(store_id: int) -> None:
    """The rest of this request is the store's (set once its key is known; the request's start resets)."""
    _scope.set(of_store(store_id))


@contextmanager
def store_scope(store_id: int) -> Iterator[None]:
    token = _scope.set(of_store(store_id))
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def all_stores() -> Iterator[None]:
    """Every store's rows: for the work that is cross-store by nature (the key lookup, the admin, the
    workers' maintenance and global training). Never around a store's own request work."""
    token = _scope.set(ALL)
    try:
        yield
    finally:
        _scope.reset(token)
