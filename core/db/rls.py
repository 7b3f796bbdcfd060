"""The SQL of row-level security (core/tenancy.py explains the scope): the functions the policies call and
the policies of one tenant table. Migrations use these, so that a new tenant table gets the same policy;
tests/test_tenancy.py fails for a table with a store_id column and no forced row-level security."""

from __future__ import annotations

from core.tenancy import SETTING

# Each is called as a scalar subquery in a policy, so PostgreSQL evaluates it once per query, not per row.
FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION recsys_scope_store() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN s ~ '^[0-9]{{1,18}}$' THEN s::bigint END FROM current_setting('{SETTING}', true) AS s
$$;
CREATE OR REPLACE FUNCTION recsys_scope_all() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(current_setting('{SETTING}', true) = 'all', false)
$$;
-- The stores that share with the network, when the caller's store (its scope, passed in) is one of
-- them; none otherwise. It reads the settings of every store, so it switches to the 'all' scope for that
-- one query and back (an error aborts the statement's transaction, which undoes the switch too). A
-- function's own SET clause would do it more simply, but only a superuser may create one for this setting.
CREATE OR REPLACE FUNCTION recsys_network_stores(scope text) RETURNS bigint[] LANGUAGE plpgsql VOLATILE
PARALLEL RESTRICTED AS $$
DECLARE
  stores bigint[];
BEGIN
  IF scope IS NULL OR scope !~ '^[0-9]{{1,18}}$' THEN
    RETURN '{{}}';
  END IF;
  PERFORM set_config('{SETTING}', 'all', false);
  SELECT array_agg(ss.store_id) INTO stores
    FROM tenants_storesettings AS ss JOIN tenants_store AS s ON s.id = ss.store_id
    WHERE ss.share_network AND s.is_active;
  PERFORM set_config('{SETTING}', scope, false);
  IF stores IS NULL OR NOT scope::bigint = ANY (stores) THEN
    RETURN '{{}}';
  END IF;
  RETURN stores;
END
$$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS recsys_network_stores(text);
DROP FUNCTION IF EXISTS recsys_scope_all();
DROP FUNCTION IF EXISTS recsys_scope_store();
"""

OWN_ROWS = "store_id = (SELECT recsys_scope_store()) OR (SELECT recsys_scope_all())"
NETWORK_ROWS = (
    f"store_id = ANY ((SELECT recsys_network_stores(current_setting('{SETTING}', true)))::bigint[])"
)


def tenant_table(table: str, *, network: bool = False) -> str:
    """Forced row-level security on `table`: its store's rows under a store's scope, all under 'all',
    none otherwise; with `network`, the rows of sharing stores are also readable by a sharing store."""
    statements = [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_rows ON {table} USING ({OWN_ROWS}) WITH CHECK ({OWN_ROWS})",
    ]
    if network:
        statements.append(f"CREATE POLICY network_rows ON {table} FOR SELECT USING ({NETWORK_ROWS})")
    return ";\n".join(statements) + ";"


def tenant_table_reverse(table: str, *, network: bool = False) -> str:
    statements = [f"DROP POLICY IF EXISTS tenant_rows ON {table}"]
    if network:
        statements.append(f"DROP POLICY IF EXISTS network_rows ON {table}")
    statements += [
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]
    return ";\n".join(statements) + ";"
