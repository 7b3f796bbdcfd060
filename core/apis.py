"""GET /api/v1/health: database, broker and answer cache, no authentication. Each check has a deadline
(a hung Redis or broker answers "down: timeout" within a second, instead of pinning a web thread)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import answer_cache, tenancy

CHECK_DEADLINE_SECONDS = 0.8
# checks that talk to a service that may hang run here, waited for at most the deadline; a hung one holds
# a thread of this pool (not a web thread) until its own socket timeout
_checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")


def within_deadline(*checks: Callable[[], str]) -> list[str]:
    """The checks run at once, all waited for until one deadline: health answers within it."""
    deadline = time.monotonic() + CHECK_DEADLINE_SECONDS
    futures = [_checks.submit(check) for check in checks]
    results = []
    for future in futures:
        try:
            results.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            results.append("down: timeout")
    return results


def database_check() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is "down", reported with its message
        return f"down: {exc.__class__.__name__}"


def broker_check() -> str:
    from kombu import Connection

    try:
        with Connection(
            settings.CELERY_BROKER_URL, connect_timeout=2, transport_options={"socket_timeout": 2}
        ) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"down: {exc.__class__.__name__}"


def answer_cache_check() -> str:
    if not settings.ANSWER_CACHE_URL:
        return "off"
    return "ok" if answer_cache.healthy() else "down"


def stores_without_model_count() -> int | None:
    """Active stores that have events but no active model: their shoppers get fallbacks."""
    try:
        with tenancy.all_stores(), connection.cursor() as cursor:  # a count across the stores
            cursor.execute(
                "SELECT count(*) FROM tenants_store AS s WHERE s.is_active "
                "AND EXISTS (SELECT 1 FROM events_event AS e WHERE e.store_id = s.id) "
                "AND NOT EXISTS (SELECT 1 FROM recommendations_trainedmodel AS m "
                "WHERE m.store_id = s.id AND m.is_active)"
            )
            return int(cursor.fetchone()[0])
    except Exception:  # noqa: BLE001 - reported as unknown; the database check says why
        return None


class HealthApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        auth=[],
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.ChoiceField(choices=["ok", "degraded", "down"]),
                "database": serializers.CharField(),
                "broker": serializers.CharField(),
                "answer_cache": serializers.CharField(),
                "stores_without_model": serializers.IntegerField(allow_null=True),
                "duration_ms": serializers.FloatField(),
            },
        ),
        summary="Database, broker, answer cache and models: 200 ok or degraded (broker or cache down, a "
        "store with events but no active model), 503 when the database is down",
    )
    def get(self, request: Request) -> Response:
        started = time.perf_counter()
        database = database_check()
        broker, cache = within_deadline(broker_check, answer_cache_check)
        without_model = stores_without_model_count() if database == "ok" else None
        if database != "ok":
            state, code = "down", 503
        elif broker != "ok" or cache not in ("ok", "off") or without_model:
            state, code = "degraded", 200
        else:
            state, code = "ok", 200
        body = {
            "status": state,
            "database": database,
            "broker": broker,
            "answer_cache": cache,
            "stores_without_model": without_model,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        return Response(body, status=code)
