"""Health, the OpenAPI schema and the docs page."""

from __future__ import annotations

import re

from django.test import Client

from tests.test_isolation import scoped_routes


def test_health_reports_database_and_broker(db):
    response = Client().get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["broker"] == "ok"


def test_health_reports_a_broker_that_is_down(db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    body = Client().get("/api/v1/health").json()
    assert body["status"] == "degraded"
    assert body["broker"].startswith("down")


def test_health_answers_degraded_within_a_second_when_redis_and_the_broker_hang(db, monkeypatch):
    import time

    from core import apis

    def hung() -> str:
        time.sleep(3)
        return "ok"

    monkeypatch.setattr(apis, "answer_cache_check", hung)
    monkeypatch.setattr(apis, "broker_check", hung)
    started = time.monotonic()
    response = Client().get("/api/v1/health")
    took = time.monotonic() - started
    assert response.status_code == 200 and took < 1.0
    body = response.json()
    assert body["status"] == "degraded"
    assert body["answer_cache"] == body["broker"] == "down: timeout"


def test_schema_lists_every_v1_path_with_shapes(db):
    response = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    expected = {"/" + re.sub(r"<\w+:(\w+)>", r"{\1}", route) for route in scoped_routes()} | {
        "/api/v1/health"
    }
    assert expected <= set(paths)
    assert set(paths["/api/v1/products/{product_id}"]) >= {"get", "put", "patch", "delete"}
    bulk = paths["/api/v1/products/bulk"]["post"]
    assert "requestBody" in bulk and "200" in bulk["responses"]
    assert "ApiKey" in schema["components"]["securitySchemes"]
    assert {"EventInRequest", "IngestResult", "ProductOut", "ProductBulkResult"} <= set(
        schema["components"]["schemas"]
    )


def test_docs_page_is_served_without_a_cdn(db):
    response = Client().get("/api/v1/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    assert "cdn.jsdelivr" not in html


def test_health_is_degraded_while_a_store_with_events_has_no_model(api, store):
    from recommendations.models import TrainedModel
    from tests.conftest import product

    api.post("/api/v1/products/bulk", [product("p1")])
    api.post("/api/v1/events", {"user_id": "u", "product_id": "p1", "type": "view"})
    body = Client().get("/api/v1/health").json()
    assert body["status"] == "degraded" and body["stores_without_model"] == 1
    TrainedModel.objects.create(store=store, version=1, is_active=True, artifact=b"")
    body = Client().get("/api/v1/health").json()
    assert body["status"] == "ok" and body["stores_without_model"] == 0
