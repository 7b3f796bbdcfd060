"""The archive manifest's and the shown items' primary keys lead with store_id, as the events' does
(events/0002): the tables are distributed by store with them (README, "Scale-out")."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("events", "0008_bytewise_ids")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE events_eventarchive DROP CONSTRAINT events_eventarchive_pkey, "
            "ADD CONSTRAINT events_eventarchive_pkey PRIMARY KEY (store_id, id); "
            "ALTER TABLE events_shownitem DROP CONSTRAINT events_shownitem_pkey, "
            "ADD CONSTRAINT events_shownitem_pkey PRIMARY KEY (store_id, id);",
            "ALTER TABLE events_shownitem DROP CONSTRAINT events_shownitem_pkey, "
            "ADD CONSTRAINT events_shownitem_pkey PRIMARY KEY (id); "
            "ALTER TABLE events_eventarchive DROP CONSTRAINT events_eventarchive_pkey, "
            "ADD CONSTRAINT events_eventarchive_pkey PRIMARY KEY (id);",
        )
    ]
