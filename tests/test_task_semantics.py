"""Task semantics: a run delivered twice runs once, a lost worker does not block the store or touch the
active model, and a transient database error queues the run again for the task's retry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from recommendations import services
from recommendations.models import TrainedModel, TrainingRun
from recommendations.services import training_run_create, training_run_execute, training_runs_recover
from recommendations.tasks import recover_training_runs_task, train_store_task
from tests.test_recommendations import trained  # noqa: F401 - the fixture


def test_a_message_delivered_twice_trains_once(trained, store):  # noqa: F811
    run = TrainingRun.objects.create(store=store)
    train_store_task.apply(args=[run.id])  # what a worker does with the message
    train_store_task.apply(args=[run.id])  # the same message again
    assert TrainedModel.objects.filter(store=store).count() == 2  # the fixture's, and this run's
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_a_killed_worker_leaves_the_model_and_frees_the_store(
    trained,  # noqa: F811
    store,
    django_capture_on_commit_callbacks,  # noqa: F811
):
    # given a run whose worker died mid-way: running, no progress for a long time
    lost = TrainingRun.objects.create(store=store, status="running", progress=0.45)
    TrainingRun.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    # when the message is delivered again, nothing runs (the run is no longer queued)
    assert training_run_execute(run_id=lost.id) is None
    # and the periodic recovery marks it failed; the active model is untouched
    assert recover_training_runs_task.apply().get() == 1
    lost.refresh_from_db()
    assert lost.status == "failed" and "worker was lost" in lost.message
    assert TrainedModel.objects.get(store=store, is_active=True).version == 1
    # so a new run can start
    with django_capture_on_commit_callbacks(execute=False):
        assert training_run_create(store=store).status == "queued"


def test_a_run_with_recent_progress_is_not_recovered(trained, store):  # noqa: F811
    busy = TrainingRun.objects.create(store=store, status="running", progress=0.5)
    assert training_runs_recover() == 0
    busy.refresh_from_db()
    assert busy.status == "running"


def test_a_transient_database_error_queues_the_run_again(trained, store, monkeypatch):  # noqa: F811
    run = TrainingRun.objects.create(store=store)
    calls = {"n": 0}
    real_train = services._train

    def flaky(run):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_train(run)

    monkeypatch.setattr(services, "_train", flaky)
    with pytest.raises(OperationalError):
        training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "queued" and "retrying" in run.message
    training_run_execute(run_id=run.id)  # the task's retry
    run.refresh_from_db()
    assert run.status == "succeeded" and run.model.version == 2
