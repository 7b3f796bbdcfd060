"""Impressions' and attributions' primary keys lead with store_id, as the events' do (events/0002): both
tables can be distributed by store (Citus), and every lookup of an answer or an event's credit already
names its store. The varchar_pattern_ops twin Django made for the recommendation id (LIKE on it: never
asked) goes, one index fewer on every impression stored."""

from django.db import migrations

FORWARD = """
DO $$
DECLARE twin text;
BEGIN
  FOR twin IN SELECT indexname FROM pg_indexes
              WHERE schemaname = current_schema() AND tablename = 'outcomes_impression'
                AND indexname LIKE 'outcomes_impression_recommendation_id_%_like'
  LOOP
    EXECUTE format('DROP INDEX %I', twin);
  END LOOP;
END $$;
ALTER TABLE outcomes_impression DROP CONSTRAINT outcomes_impression_pkey,
  ADD CONSTRAINT outcomes_impression_pkey PRIMARY KEY (store_id, recommendation_id);
ALTER TABLE outcomes_attribution DROP CONSTRAINT outcomes_attribution_pkey,
  ADD CONSTRAINT outcomes_attribution_pkey PRIMARY KEY (store_id, event_id);
"""

BACKWARD = """
ALTER TABLE outcomes_attribution DROP CONSTRAINT outcomes_attribution_pkey,
  ADD CONSTRAINT outcomes_attribution_pkey PRIMARY KEY (event_id);
ALTER TABLE outcomes_impression DROP CONSTRAINT outcomes_impression_pkey,
  ADD CONSTRAINT outcomes_impression_pkey PRIMARY KEY (recommendation_id);
"""


class Migration(migrations.Migration):
    dependencies = [("outcomes", "0007_store_indexes")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
