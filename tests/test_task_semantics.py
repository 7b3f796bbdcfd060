"""Task semantics: a run delivered twice runs once, a lost worker does not block the store or touch the
active model, and a transient database error queues the run again for the task's retry."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.db import OperationalError
from django.utils import timezone

from recommendations import services
from recommendations.models import TrainedModel, TrainingRun
from recommendations.services import TrainingRunBusy, training_run_execute, training_runs_recover
from recommendations.tasks import recover_training_runs_task, train_store_task
from tests.conftest import make_tenant
from tests.test_recommendations import trained  # noqa: F401 - the fixture


def test_a_message_delivered_twice_trains_once(trained, store):  # noqa: F811
    run = TrainingRun.objects.create(store=store)
    train_store_task.apply(args=[run.id])  # what a worker does with the message
    train_store_task.apply(args=[run.id])  # the same message again
    assert TrainedModel.objects.filter(store=store).count() == 2  # the fixture's, and this run's
    run.refresh_from_db()
    assert run.status == "succeeded"


def _lost(store, seconds_ago: float, **fields):  # noqa: ANN001, ANN202
    """A run whose worker died mid-way: running, its last heartbeat `seconds_ago`."""
    run = TrainingRun.objects.create(store=store, status="running", progress=0.45, attempt=1, **fields)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago))
    return run


def test_the_redelivered_message_takes_over_a_run_whose_worker_was_lost(trained, store):  # noqa: F811
    lost = _lost(store, seconds_ago=120)
    # when the message comes back (acks_late), the run is taken over and trained
    train_store_task.apply(args=[lost.id])
    lost.refresh_from_db()
    assert lost.status == "succeeded" and lost.attempt == 2
    assert lost.model.version == 2
    assert TrainedModel.objects.filter(store=store).count() == 2


def test_a_message_delivered_while_the_first_worker_lives_looks_again_later(trained, store, monkeypatch):  # noqa: F811
    busy = _lost(store, seconds_ago=5)
    with pytest.raises(TrainingRunBusy) as raised:
        training_run_execute(run_id=busy.id)
    assert 50 < raised.value.retry_in <= 61
    # the task turns it into a retry with that countdown, not an acknowledged no-op
    asked = {}

    def retry(**kwargs):  # noqa: ANN003, ANN202
        asked.update(kwargs)
        return Retry("looking again later")

    monkeypatch.setattr(train_store_task, "retry", retry)
    with pytest.raises(Retry):
        train_store_task(busy.id)
    assert 50 < asked["countdown"] <= 61 and asked["max_retries"] >= 60
    busy.refresh_from_db()
    assert busy.status == "running" and busy.attempt == 1
    assert TrainedModel.objects.filter(store=store).count() == 1


def test_the_periodic_recovery_queues_a_lost_run_again(
    trained,  # noqa: F811
    store,
    django_capture_on_commit_callbacks,  # noqa: F811
):
    lost = _lost(store, seconds_ago=120)
    fresh_store_run_count = TrainingRun.objects.count()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert recover_training_runs_task.apply().get() == 1
    assert len(callbacks) == 1  # the run's task is enqueued again
    lost.refresh_from_db()
    assert lost.status == "queued" and "worker was lost" in lost.message
    # the active model is untouched, the store is not blocked for long: the queued run trains
    assert TrainedModel.objects.get(store=store, is_active=True).version == 1
    training_run_execute(run_id=lost.id)
    lost.refresh_from_db()
    assert lost.status == "succeeded" and lost.attempt == 2
    assert TrainingRun.objects.count() == fresh_store_run_count


def test_a_run_with_a_recent_heartbeat_is_not_recovered(trained, store):  # noqa: F811
    busy = _lost(store, seconds_ago=5)
    assert training_runs_recover() == 0
    busy.refresh_from_db()
    assert busy.status == "running"


def test_a_worker_whose_run_was_taken_over_writes_nothing(trained, store, monkeypatch):  # noqa: F811
    run = TrainingRun.objects.create(store=store)
    real_train = services._train

    def paused_then_taken_over(claimed):  # noqa: ANN001, ANN202
        # while this worker was frozen, its heartbeat went stale and another worker claimed the run
        TrainingRun.objects.filter(pk=claimed.pk).update(attempt=claimed.attempt + 1)
        return real_train(claimed)

    monkeypatch.setattr(services, "_train", paused_then_taken_over)
    assert training_run_execute(run_id=run.id) is None
    assert TrainedModel.objects.filter(store=store).count() == 1  # no second version from the loser


def test_a_run_that_keeps_losing_workers_fails_for_good(trained, store, settings):  # noqa: F811
    settings.TRAINING_MAX_ATTEMPTS = 3
    lost = _lost(store, seconds_ago=120)
    TrainingRun.objects.filter(pk=lost.pk).update(attempt=3)
    assert training_run_execute(run_id=lost.id) is None
    lost.refresh_from_db()
    assert lost.status == "failed" and "gave up after 3 attempts" in lost.message


def test_the_heartbeat_is_written_while_training(transactional_db, settings, monkeypatch):
    # (committed rows: the heartbeat thread has its own connection)
    settings.TRAINING_HEARTBEAT_SECONDS = 0.05
    run = TrainingRun.objects.create(store=make_tenant("beating").store)
    seen = []

    def slow(claimed):  # noqa: ANN001, ANN202
        seen.append(TrainingRun.objects.get(pk=claimed.pk).heartbeat_at)
        time.sleep(0.5)
        seen.append(TrainingRun.objects.get(pk=claimed.pk).heartbeat_at)

    monkeypatch.setattr(services, "_train", slow)
    training_run_execute(run_id=run.id)
    assert seen[1] > seen[0]


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
