"""The archive manifest's primary key leads with store_id, as the events' does (events/0002): the table
is distributed by store with them (README, "Scale-out")."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("events", "0008_bytewise_ids")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE events_eventarchive DROP CONSTRAINT events_eventarchive_pkey, "
            "ADD CONSTRAINT events_eventarchive_pkey PRIMARY KEY (store_id, id);",
            "ALTER TABLE events_eventarchive DROP CONSTRAINT events_eventarchive_pkey, "
            "ADD CONSTRAINT events_eventarchive_pkey PRIMARY KEY (id);",
        )
    ]
