"""The primary key leads with store_id: the table can be distributed by store (Citus), and training
scans one store's events in insertion order through it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("events", "0001_initial")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE events_event DROP CONSTRAINT events_event_pkey, ADD PRIMARY KEY (store_id, id);",
            "ALTER TABLE events_event DROP CONSTRAINT events_event_pkey, ADD PRIMARY KEY (id);",
        )
    ]
