"""GET /api/v1/health: database and broker, no authentication."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


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
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"down: {exc.__class__.__name__}"


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
                "duration_ms": serializers.FloatField(),
            },
        ),
        summary="Database and broker reachability (200 ok or degraded, 503 when the database is down)",
    )
    def get(self, request: Request) -> Response:
        started = time.perf_counter()
        database = database_check()
        broker = broker_check()
        if database != "ok":
            state, code = "down", 503
        elif broker != "ok":
            state, code = "degraded", 200
        else:
            state, code = "ok", 200
        body = {
            "status": state,
            "database": database,
            "broker": broker,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        return Response(body, status=code)
