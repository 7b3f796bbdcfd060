"""The trained models', training runs' and network slices' primary keys lead with store_id, as the
events' do (events/0002): the three tables are distributed by store with them (README, "Scale-out"). A
run's link to its model becomes (store_id, model_id) -> (store_id, id): a foreign key between two tables
distributed by store must name the distribution column on both sides (Django's own named model_id alone,
and needed the model's id unique by itself). Deferred to the commit, as Django makes its own."""

from django.db import migrations, models

FORWARD = """
ALTER TABLE recommendations_trainedmodel DROP CONSTRAINT recommendations_trainedmodel_pkey,
  ADD CONSTRAINT recommendations_trainedmodel_pkey PRIMARY KEY (store_id, id);
ALTER TABLE recommendations_trainingrun DROP CONSTRAINT recommendations_trainingrun_pkey,
  ADD CONSTRAINT recommendations_trainingrun_pkey PRIMARY KEY (store_id, id),
  ADD CONSTRAINT training_run_model_fk FOREIGN KEY (store_id, model_id)
    REFERENCES recommendations_trainedmodel (store_id, id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE recommendations_networkslice DROP CONSTRAINT recommendations_networkslice_pkey,
  ADD CONSTRAINT recommendations_networkslice_pkey PRIMARY KEY (store_id, id);
"""

BACKWARD = """
ALTER TABLE recommendations_networkslice DROP CONSTRAINT recommendations_networkslice_pkey,
  ADD CONSTRAINT recommendations_networkslice_pkey PRIMARY KEY (id);
ALTER TABLE recommendations_trainingrun DROP CONSTRAINT training_run_model_fk,
  DROP CONSTRAINT recommendations_trainingrun_pkey,
  ADD CONSTRAINT recommendations_trainingrun_pkey PRIMARY KEY (id);
ALTER TABLE recommendations_trainedmodel DROP CONSTRAINT recommendations_trainedmodel_pkey,
  ADD CONSTRAINT recommendations_trainedmodel_pkey PRIMARY KEY (id);
"""


class Migration(migrations.Migration):
    dependencies = [("recommendations", "0006_ranker_lessons")]
    operations = [
        # Django's constraint (model_id -> id) goes first: it depends on the model's primary key
        migrations.AlterField(
            model_name="trainingrun",
            name="model",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=models.deletion.SET_NULL,
                related_name="+",
                to="recommendations.trainedmodel",
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
