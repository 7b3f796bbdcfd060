"""Row-level security on every tenant table (core/tenancy.py, core/db/rls.py)."""

from django.db import migrations

from core.db import rls

TABLES = {
    "catalog_product": True,  # True: the products of sharing stores are readable by sharing stores
    "tenants_storesettings": True,
    "tenants_apikey": False,
    "tenants_auditentry": False,
    "events_event": False,
    "events_useralias": False,
    "recommendations_trainedmodel": False,
    "recommendations_trainingrun": False,
    "recommendations_networkslice": False,
    "outcomes_impression": False,
}


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_vector_extension"),
        ("tenants", "0004_key_expiry_audit"),
        ("catalog", "0004_product_network_embedding_and_more"),
        ("events", "0003_useralias"),
        ("recommendations", "0003_training_heartbeat"),
        ("outcomes", "0001_impressions"),
    ]

    operations = [
        migrations.RunSQL(rls.FUNCTIONS, rls.DROP_FUNCTIONS),
        *(
            migrations.RunSQL(rls.tenant_table(table, network=network), rls.tenant_table_reverse(table, network=network))
            for table, network in TABLES.items()
        ),
    ]
