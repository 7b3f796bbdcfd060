"""Metrics, request ids and structured logs."""

from __future__ import annotations

import io
import json
import logging

from django.test import Client
from pythonjsonlogger.json import JsonFormatter

from core.observability import ContextFilter
from tests.conftest import product


def test_metrics_expose_latency_ingest_and_queues(api):
    api.post("/api/v1/products/bulk", [product("p1")])
    api.post("/api/v1/events", [{"user_id": "u", "product_id": "p1", "type": "view"}, {"user_id": "u"}])
    api.get("/api/v1/trending")
    response = Client().get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'recsys_request_seconds_count{method="GET",status="2xx",surface="trending"}' in text
    assert 'recsys_events_ingested_total{outcome="accepted"}' in text
    assert 'recsys_events_ingested_total{outcome="rejected"}' in text
    assert 'recsys_queue_depth{queue="train"}' in text
    assert "recsys_training_seconds" in text


def test_request_id_is_echoed_or_made(api):
    assert api.client.get("/api/v1/health", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    made = api.client.get("/api/v1/health", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"]
    assert made != "bad id\n" and len(made) == 32


def test_log_lines_are_json_with_request_id_and_store(api, store):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s %(request_id)s %(store)s"))
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = api.client.post(
            "/api/v1/events", data=b"{oops", content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {api.raw_key}", HTTP_X_REQUEST_ID="req-42",
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 400
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == "req-42"
    assert line["store"] == store.slug
    assert line["levelname"] == "WARNING"
