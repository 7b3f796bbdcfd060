"""Thin Celery tasks of outcomes."""

from __future__ import annotations

from celery import shared_task

from outcomes.services import impressions_drain, outcomes_rollup


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def impressions_drain_task() -> int:
    return impressions_drain()


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def outcomes_rollup_task() -> int:
    return outcomes_rollup()
