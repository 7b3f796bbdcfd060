"""The daily metrics' and the experiments' primary keys lead with store_id, as the impressions' do
(outcomes/0008): both tables are distributed by store with them (README, "Scale-out"); their unique keys
led with it already."""

from django.db import migrations

FORWARD = """
ALTER TABLE outcomes_dailymetric DROP CONSTRAINT outcomes_dailymetric_pkey,
  ADD CONSTRAINT outcomes_dailymetric_pkey PRIMARY KEY (store_id, id);
ALTER TABLE outcomes_experiment DROP CONSTRAINT outcomes_experiment_pkey,
  ADD CONSTRAINT outcomes_experiment_pkey PRIMARY KEY (store_id, id);
"""

BACKWARD = """
ALTER TABLE outcomes_experiment DROP CONSTRAINT outcomes_experiment_pkey,
  ADD CONSTRAINT outcomes_experiment_pkey PRIMARY KEY (id);
ALTER TABLE outcomes_dailymetric DROP CONSTRAINT outcomes_dailymetric_pkey,
  ADD CONSTRAINT outcomes_dailymetric_pkey PRIMARY KEY (id);
"""


class Migration(migrations.Migration):
    dependencies = [("outcomes", "0008_store_leading_keys")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
