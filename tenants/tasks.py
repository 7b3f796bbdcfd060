"""Thin Celery tasks of stores."""

from __future__ import annotations

from celery import shared_task

from tenants.services import store_erase


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=3600, time_limit=3700)
def store_erase_task(store_id: int) -> None:
    store_erase(store_id=store_id)
