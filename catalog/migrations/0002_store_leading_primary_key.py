"""The primary key leads with store_id, so the table can be distributed by store (Citus).
`id` stays unique through its identity sequence; no foreign key points at catalog_product.id."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial"), ("core", "0001_vector_extension")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE catalog_product DROP CONSTRAINT catalog_product_pkey, ADD PRIMARY KEY (store_id, id);",
            "ALTER TABLE catalog_product DROP CONSTRAINT catalog_product_pkey, ADD PRIMARY KEY (id);",
        )
    ]
