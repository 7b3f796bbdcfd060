"""Row-level security (core/tenancy.py): forced on every tenant table, the application's role bound by it,
and a query without a store's scope sees no rows."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection, transaction

from catalog.models import Product
from core import tenancy
from events.models import Event
from tests.conftest import make_tenant, subprocess_env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)  # rows another connection (the app's role) can see


def _app_connection() -> psycopg.Connection:
    """A connection as the application's role, to the test database, with no scope set."""
    params = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [settings.DATABASE_APP_ROLE])
        if cursor.fetchone() is None:
            pytest.skip("this database has no separate application role")
    return psycopg.connect(
        host=params["HOST"],
        port=params["PORT"],
        user=settings.DATABASE_APP_ROLE,
        password=params.get("PASSWORD") or None,
        dbname=params["NAME"],
        autocommit=True,
    )


def _catalog(slug: str, count: int) -> Any:
    tenant = make_tenant(slug)
    rows = [{"id": f"{slug}-{i}", "title": f"{slug} {i}"} for i in range(count)]
    assert tenant.api.post("/api/v1/products/bulk", rows).status_code == 200
    event = {"user_id": "u1", "product_id": f"{slug}-0", "type": "view"}
    assert tenant.api.post("/api/v1/events", event).status_code in (200, 201)
    return tenant


def _scope(conn: psycopg.Connection, scope: str) -> None:
    conn.execute("SELECT set_config(%s, %s, false)", [tenancy.SETTING, scope])


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]


def test_every_table_with_a_store_id_forces_row_level_security():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "EXISTS (SELECT 1 FROM pg_policy AS p WHERE p.polrelid = c.oid AND p.polname = 'tenant_rows') "
            "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'store_id' AND NOT a.attisdropped "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        )
        tables = {name: (enabled, forced, policy) for name, enabled, forced, policy in cursor.fetchall()}
    assert {"catalog_product", "events_event", "tenants_apikey", "outcomes_impression"} <= set(tables)
    unprotected = [name for name, flags in tables.items() if flags != (True, True, True)]
    assert unprotected == []


def test_the_application_role_neither_owns_the_tables_nor_bypasses_them():
    with _app_connection() as conn:
        role = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert role == (settings.DATABASE_APP_ROLE, False, False)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'events_event'").fetchone()
        assert owner is not None and owner[0] != settings.DATABASE_APP_ROLE
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE events_event NO FORCE ROW LEVEL SECURITY")


def test_an_unscoped_query_sees_no_rows_and_a_store_sees_its_own():
    first, second = _catalog("rls-first", 3), _catalog("rls-second", 2)
    with _app_connection() as conn:
        for table in ("catalog_product", "events_event", "tenants_apikey", "tenants_storesettings"):
            assert _count(conn, table) == 0, table  # no scope set: nothing
        _scope(conn, tenancy.of_store(first.store.id))
        assert _count(conn, "catalog_product") == 3
        assert _count(conn, "events_event") == 1
        stores = conn.execute("SELECT DISTINCT store_id FROM catalog_product").fetchall()
        assert stores == [(first.store.id,)]
        # a row of another store cannot be written under this scope, nor another store's rows changed
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO events_event (store_id, user_id, session_id, product_id, type, quantity, "
                "channel, timestamp, received_at) SELECT %s, 'x', '', id, 1, 1, 1, now(), now() "
                "FROM catalog_product LIMIT 1",
                [second.store.id],
            )
        changed = conn.execute(
            "UPDATE catalog_product SET title = 'taken' WHERE store_id = %s", [second.store.id]
        ).rowcount
        assert changed == 0
        _scope(conn, tenancy.ALL)
        assert _count(conn, "catalog_product") == 5
        _scope(conn, "not a store")
        assert _count(conn, "catalog_product") == 0
    assert Product.objects.filter(store=second.store, title="taken").count() == 0


def test_the_orm_is_scoped_by_the_context_and_a_rollback_does_not_lose_the_scope():
    first, second = _catalog("orm-first", 3), _catalog("orm-second", 2)
    token = tenancy.enter(tenancy.NONE)
    try:
        assert Product.objects.count() == 0
        assert Event.objects.count() == 0
        with tenancy.store_scope(second.store.id):
            assert Product.objects.count() == 2
        with tenancy.store_scope(first.store.id):
            assert Product.objects.count() == 3
        # a scope sent inside a transaction that rolls back is undone by the rollback: sent again after
        with tenancy.store_scope(second.store.id):
            assert Product.objects.count() == 2
        with pytest.raises(RuntimeError), transaction.atomic():
            with tenancy.store_scope(first.store.id):
                assert Product.objects.count() == 3
            raise RuntimeError("roll back")
        with tenancy.store_scope(first.store.id):
            assert Product.objects.count() == 3
        with tenancy.all_stores():
            assert Product.objects.filter(store__in=[first.store, second.store]).count() == 5
    finally:
        tenancy.leave(token)


def test_network_products_are_visible_only_between_sharing_stores():
    sharing, partner, private = _catalog("net-a", 2), _catalog("net-b", 3), _catalog("net-c", 4)
    for tenant in (sharing, partner):
        assert tenant.api.patch("/api/v1/store", {"share_network": True}).status_code == 200
    with _app_connection() as conn:
        _scope(conn, tenancy.of_store(sharing.store.id))
        seen = dict(conn.execute("SELECT store_id, count(*) FROM catalog_product GROUP BY 1").fetchall())
        assert seen == {sharing.store.id: 2, partner.store.id: 3}
        assert _count(conn, "events_event") == 1  # events are never shared
        assert (
            conn.execute(
                "UPDATE catalog_product SET title = 'x' WHERE store_id = %s", [partner.store.id]
            ).rowcount
            == 0
        )
        assert conn.execute("SELECT current_setting(%s)", [tenancy.SETTING]).fetchone() == (
            tenancy.of_store(sharing.store.id),
        )  # the policy's lookup put the scope back
        _scope(conn, tenancy.of_store(private.store.id))  # does not share: sees only its own
        seen = dict(conn.execute("SELECT store_id, count(*) FROM catalog_product GROUP BY 1").fetchall())
        assert seen == {private.store.id: 4}


def test_servers_and_workers_connect_as_the_application_role():
    script = (
        "import django; django.setup(); from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT current_user, count(*) FROM catalog_product'); print(*c.fetchone())\n"
    )
    _catalog("proc-store", 2)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [settings.DATABASE_APP_ROLE, "0"]  # and, unscoped, it sees no product


def test_a_role_that_row_level_security_does_not_bind_is_reported(caplog, settings):
    from core.db import base

    settings.DATABASE_ROLE = "app"  # as a server would be; this process connects as the tables' owner
    connection.ensure_connection()
    with caplog.at_level(logging.ERROR, logger="core.db.base"):
        base._check_role(connection.connection)
    assert "row-level security does not bind" in caplog.text
    assert "the tables' owner" in caplog.text
