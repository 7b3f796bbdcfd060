"""Thin Celery tasks of events."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from events.services import events_maintain


@shared_task(ignore_result=True, soft_time_limit=3000, time_limit=3600)
def events_maintain_task() -> dict[str, Any]:
    return events_maintain()
