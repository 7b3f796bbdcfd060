"""The alias links' primary key leads with store_id, as the events' does (events/0002): the table is
distributed by store with them (README, "Scale-out"); its unique key and index led with it already."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("events", "0009_archive_store_leading_key")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE events_useralias DROP CONSTRAINT events_useralias_pkey, "
            "ADD CONSTRAINT events_useralias_pkey PRIMARY KEY (store_id, id);",
            "ALTER TABLE events_useralias DROP CONSTRAINT events_useralias_pkey, "
            "ADD CONSTRAINT events_useralias_pkey PRIMARY KEY (id);",
        )
    ]
