"""Events partitioned by time (PostgreSQL declarative partitioning, one partition a month, in UTC), and
idempotency by event_id held in a table of its own (a unique index of a partitioned table must include the
partition key, so it could not span partitions).

- The primary key still leads with store_id: (store_id, id, timestamp); the table can also be distributed
  by store (Citus).
- Partitions are made by `recsys_event_partition(time)`, a SECURITY DEFINER function (the application's
  role does not own the table, so it may not attach one itself): ahead of time by the maintenance task,
  and on ingest for a month that has none yet (historical imports). Every timestamp before the floor
  (2000-01-01) goes to one partition, so that odd timestamps cannot make partitions without bound.
- `recsys_event_partition_drop(name)` detaches and drops an emptied or archived partition.
- Each partition forces the same row-level security as the table.
- `events_eventkey`: (store_id, event_id) of recent events, the idempotency check of ingest.

The id sequence is a plain one owned by the column (PostgreSQL before 17 allows no identity column on a
partitioned table), continued from the old table's ids.
"""

import django.contrib.postgres.indexes
from django.db import migrations, models

from core.db import rls
from core.tenancy import SETTING

FLOOR = "2000-01-01T00:00:00+00"
OLD = "events_event_old"

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION recsys_event_partition(at timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  lower_bound timestamptz;
  upper_bound timestamptz;
  name text;
  bounds text;
BEGIN
  IF at < '{FLOOR}'::timestamptz THEN
    name := 'events_event_before2000';
    bounds := format('FOR VALUES FROM (MINVALUE) TO (%L)', '{FLOOR}');
  ELSE
    lower_bound := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    upper_bound := ((lower_bound AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    name := 'events_event_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMM');
    bounds := format(
      'FOR VALUES FROM (%L) TO (%L)',
      to_char(lower_bound AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'),
      to_char(upper_bound AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"')
    );
  END IF;
  IF to_regclass(format('public.%I', name)) IS NOT NULL THEN
    RETURN name;
  END IF;
  -- one at a time: two ingests of the same new month both see none, the second waits here and then finds
  -- the first's. SHARE UPDATE EXCLUSIVE conflicts with itself and with no read or insert (ATTACH takes it
  -- anyway); taking a table lock also brings this backend's view of the catalog up to date.
  LOCK TABLE public.events_event IN SHARE UPDATE EXCLUSIVE MODE;
  IF to_regclass(format('public.%I', name)) IS NOT NULL THEN
    RETURN name;
  END IF;
  -- created apart, then attached: CREATE TABLE ... PARTITION OF would lock out reads and inserts
  BEGIN
    EXECUTE format('CREATE TABLE public.%I (LIKE public.events_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
  EXCEPTION WHEN duplicate_table THEN
    RETURN name;  -- made meanwhile by another session
  END;
  EXECUTE format('ALTER TABLE public.events_event ATTACH PARTITION public.%I %s', name, bounds);
  EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', name);
  EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', name);
  EXECUTE format('CREATE POLICY tenant_rows ON public.%I USING ({rls.OWN_ROWS}) WITH CHECK ({rls.OWN_ROWS})', name);
  RETURN name;
END
$$;

-- Detach and drop a partition that holds exactly `expected_rows` rows (those the caller archived from it;
-- NULL: none), else raise, so that the caller's transaction rolls back: an event that arrived meanwhile is
-- never dropped unarchived. False: no such partition. Rows are
-- counted under the 'all' scope (a store's scope would see only its own), after the detach, which waits
-- for and then blocks writers.
CREATE OR REPLACE FUNCTION recsys_event_partition_drop(name text, expected_rows bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  scope text := current_setting('{SETTING}', true);
  found bigint;
BEGIN
  IF name !~ '^events_event_(p[0-9]{{6}}|before2000)$' OR NOT EXISTS (
    SELECT 1 FROM pg_inherits
    WHERE inhrelid = to_regclass(format('public.%I', name)) AND inhparent = 'public.events_event'::regclass
  ) THEN
    RETURN false;
  END IF;
  EXECUTE format('ALTER TABLE public.events_event DETACH PARTITION public.%I', name);
  PERFORM set_config('{SETTING}', 'all', false);
  EXECUTE format('SELECT count(*) FROM public.%I', name) INTO found;
  PERFORM set_config('{SETTING}', coalesce(scope, ''), false);
  IF found <> coalesce(expected_rows, 0) THEN
    RAISE EXCEPTION 'partition % holds % rows, % archived: not dropped', name, found, coalesce(expected_rows, 0)
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  EXECUTE format('DROP TABLE public.%I', name);
  RETURN true;
END
$$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS recsys_event_partition_drop(text, bigint);
DROP FUNCTION IF EXISTS recsys_event_partition(timestamptz);
"""

FORWARD = f"""
SELECT set_config('{SETTING}', 'all', true);
ALTER TABLE events_event RENAME TO {OLD};
CREATE TABLE events_event (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (timestamp);
CREATE SEQUENCE events_event_id_seq_partitioned;
SELECT setval('events_event_id_seq_partitioned', coalesce((SELECT max(id) FROM {OLD}), 0) + 1, false);
ALTER TABLE events_event ALTER COLUMN id SET DEFAULT nextval('events_event_id_seq_partitioned');
{FUNCTIONS}
SELECT recsys_event_partition(month) FROM (
  SELECT DISTINCT date_trunc('month', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month FROM {OLD}
  UNION SELECT now() UNION SELECT now() + interval '1 month'
) AS months;
INSERT INTO events_event SELECT * FROM {OLD};
CREATE TABLE events_eventkey (
  store_id bigint NOT NULL,
  event_id varchar(128) NOT NULL,
  received_at timestamptz NOT NULL,
  PRIMARY KEY (store_id, event_id)
);
INSERT INTO events_eventkey (store_id, event_id, received_at)
  SELECT store_id, event_id, max(received_at) FROM {OLD} WHERE event_id IS NOT NULL GROUP BY 1, 2;
CREATE INDEX event_key_received_brin ON events_eventkey USING brin (received_at);
DROP TABLE {OLD};
ALTER SEQUENCE events_event_id_seq_partitioned RENAME TO events_event_id_seq;
ALTER SEQUENCE events_event_id_seq OWNED BY events_event.id;
ALTER TABLE events_event ADD CONSTRAINT events_event_pkey PRIMARY KEY (store_id, id, timestamp);
CREATE INDEX event_store_user_time_idx ON events_event (store_id, user_id, timestamp DESC);
CREATE INDEX event_time_brin ON events_event USING brin (timestamp);
CREATE INDEX event_received_brin ON events_event USING brin (received_at);
{rls.tenant_table("events_event")}
{rls.tenant_table("events_eventkey")}
"""

# Back to one table (for a rollback of the release): the rows come along, the key table goes.
REVERSE = f"""
SELECT set_config('{SETTING}', 'all', true);
ALTER TABLE events_event RENAME TO {OLD};
ALTER SEQUENCE events_event_id_seq OWNED BY NONE;
ALTER SEQUENCE events_event_id_seq RENAME TO events_event_id_seq_partitioned;
CREATE TABLE events_event (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO events_event SELECT * FROM {OLD};
DROP TABLE {OLD} CASCADE;
{DROP_FUNCTIONS}
ALTER TABLE events_event ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE events_event_id_seq_partitioned;
ALTER TABLE events_event ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY;
SELECT setval(pg_get_serial_sequence('events_event', 'id'), coalesce((SELECT max(id) FROM events_event), 0) + 1, false);
ALTER TABLE events_event ADD CONSTRAINT events_event_pkey PRIMARY KEY (store_id, id);
CREATE UNIQUE INDEX event_store_event_id_uniq ON events_event (store_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX event_store_user_time_idx ON events_event (store_id, user_id, timestamp DESC);
CREATE INDEX event_time_brin ON events_event USING brin (timestamp);
CREATE INDEX event_received_brin ON events_event USING brin (received_at);
{rls.tenant_table("events_event")}
DROP TABLE events_eventkey;
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0005_shown_items"), ("core", "0002_row_level_security")]

    operations = [
        migrations.RunSQL(
            FORWARD,
            REVERSE,
            state_operations=[
                migrations.RemoveConstraint(model_name="event", name="event_store_event_id_uniq"),
                migrations.CreateModel(
                    name="EventKey",
                    fields=[
                        ("pk", models.CompositePrimaryKey("store_id", "event_id", blank=True, editable=False, primary_key=True, serialize=False)),
                        ("store_id", models.BigIntegerField()),
                        ("event_id", models.CharField(max_length=128)),
                        ("received_at", models.DateTimeField()),
                    ],
                    options={
                        "indexes": [
                            django.contrib.postgres.indexes.BrinIndex(fields=["received_at"], name="event_key_received_brin")
                        ]
                    },
                ),
            ],
        ),
    ]
