"""Thin Celery tasks: they take ids and call a service; running one twice does the work once."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from recommendations.services import (
    TrainingRunBusy,
    scheduled_training_enqueue,
    training_run_execute,
    training_runs_recover,
)

# enough looks, a heartbeat's staleness apart, to outlast the longest training (the task's time limit)
BUSY_LOOKS = 100


# A store's long work (training, a replay): acknowledged once done, retried when the database drops out
LONG_STORE_WORK: dict = {
    "acks_late": True,
    "soft_time_limit": 3600,
    "time_limit": 3700,
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 5,
    "max_retries": 5,
}


# Queues are assigned in settings (CELERY_TASK_ROUTES): training has its own, so workers scale by kind.
@shared_task(bind=True, **LONG_STORE_WORK)
def train_store_task(self: Task, run_id: int) -> None:
    try:
        training_run_execute(run_id=run_id)
    except TrainingRunBusy as busy:
        # delivered again while its first worker may still live: look again once its heartbeat would be
        # stale (the run then is finished, or is taken over here); a training lasts at most the time limit
        raise self.retry(countdown=busy.retry_in, max_retries=BUSY_LOOKS) from busy


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def schedule_training_task() -> int:
    return scheduled_training_enqueue()


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def recover_training_runs_task() -> int:
    return training_runs_recover()


@shared_task(acks_late=True, soft_time_limit=3600, time_limit=3700, ignore_result=True)
def train_global_task() -> None:
    from recommendations.network import global_model_train

    global_model_train()


@shared_task(**LONG_STORE_WORK)
def model_replay_task(model_id: int) -> None:
    from recommendations.replay import replay_execute

    replay_execute(model_id=model_id)
