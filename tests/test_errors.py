"""Every answer under /api/ is the API's JSON error, whatever refused the request: an unknown route, a
method, an unhandled exception (500 with the request id), ids and parameters with control characters."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from core.validation import RowError, clean_string
from tests.conftest import product


def _json(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return orjson.loads(response.content)


def test_unknown_api_route_is_a_json_404(db):
    response = Client().get("/api/v1/no-such-thing", HTTP_AUTHORIZATION="Bearer x")
    assert response.status_code == 404
    assert _json(response)["code"] == "not_found"


def test_a_page_outside_the_api_keeps_django_s_404(db):
    response = Client().get("/no-such-page")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_method_not_allowed_is_json(api):
    response = api.request("PUT", "/api/v1/trending", {})
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_an_unhandled_exception_is_a_json_500_with_the_request_id(api, tenant, monkeypatch):
    from recommendations import apis

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(apis.TrendingApi, "get", broken)
    client = Client(raise_request_exception=False)
    response = client.get(
        "/api/v1/trending", HTTP_AUTHORIZATION=f"Bearer {tenant.raw_key}", HTTP_X_REQUEST_ID="req-500"
    )
    assert response.status_code == 500
    body = _json(response)
    assert body["code"] == "internal_error"
    assert body["details"] == {"request_id": "req-500"}
    assert response["X-Request-ID"] == "req-500"
    assert "boom" not in response.content.decode()  # nothing internal leaks


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/products/a%00b",
        "/api/v1/products/a%01b/related",
        "/api/v1/users/u%00/recommendations",
        "/api/v1/users/u%1f/recently-viewed",
    ],
)
def test_ids_with_control_characters_are_a_400(api, path):
    response = api.get(path)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_id"


def test_query_values_with_nul_are_a_400(api):
    api.post("/api/v1/products/bulk", [product("p1")])
    response = api.get("/api/v1/products/p1/related", exclude="p2\x00")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"
    response = api.get("/api/v1/trending", category="a\x00")
    assert response.status_code == 400


@pytest.mark.parametrize("settings_value", [[None, None], "x", 3, True])
def test_store_settings_that_are_not_an_object_are_a_400(api, settings_value):
    response = api.patch("/api/v1/store", {"settings": settings_value})
    assert response.status_code == 400, response.content
    assert response.json()["details"] == {"settings": "must be an object"}


@pytest.mark.parametrize("number", [18446744073709551615, 2**64 + 1, -(2**63) - 1, 1.5e308])
def test_product_attributes_with_huge_numbers_read_back(api, number):
    body = json.dumps([product("big", attributes={"n": number})]).encode()
    stored = api.post("/api/v1/products/bulk", raw=body)
    assert stored.status_code in (200, 201, 400), stored.content
    listed = api.get("/api/v1/products")
    assert listed.status_code == 200, listed.content
    single = api.get("/api/v1/products/big")
    assert single.status_code in (200, 404), single.content


def test_a_database_that_is_down_is_a_503_to_retry(api, tenant, monkeypatch):
    from django.db import OperationalError

    from events import services
    from recommendations import apis

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection to server failed: the database system is starting up")

    monkeypatch.setattr(apis.TrendingApi, "get", down)
    response = api.get("/api/v1/trending")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["code"] == "database_unavailable"
    # the fast path's ingestion says the same (nothing was stored; a resend with event ids is safe)
    monkeypatch.setattr(services, "_ingest", down)
    from tests.conftest import ApiClient

    ApiClient.through_wsgi = True
    try:
        wsgi = ApiClient(tenant.raw_key)
        wsgi.post("/api/v1/products/bulk", [product("p1")])
        answered = wsgi.post(
            "/api/v1/events", {"event_id": "e1", "user_id": "u", "product_id": "p1", "type": "view"}
        )
    finally:
        ApiClient.through_wsgi = False
    assert answered.status_code == 503 and answered.json()["code"] == "database_unavailable"


def test_the_health_check_asks_the_server_only_when_it_sent_something(transactional_db, monkeypatch):
    """CONN_HEALTH_CHECKS without a round trip per request: a reused connection whose socket has nothing
    to read is taken as it is; one the server closed (here its backend terminated) is readable, checked
    with Django's query, found dead and replaced before the query runs."""
    import psycopg
    from django.db import connection
    from django.db.backends.postgresql.base import DatabaseWrapper

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    asked = []
    plain_is_usable = DatabaseWrapper.is_usable
    monkeypatch.setattr(DatabaseWrapper, "is_usable", lambda self: asked.append(1) or plain_is_usable(self))
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    assert asked == [] and connection.connection is not None  # healthy and quiet: not asked
    assert not connection.in_atomic_block
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # (waits until it is gone)
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    assert asked == [1] and connection.connection is None  # readable: asked, found dead, closed
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


class _NotPlainStr(str):
    """A str that clean_string's shortcut for plain str values does not take: its full checks run."""


@given(
    value=st.text(alphabet=st.sampled_from(["a", " ", "\t", "\x00", "\x1f", "\x7f", "é", "\u2028", "Z"])),
    field=st.sampled_from(["user_id", "title"]),
    required=st.booleans(),
    empty_ok=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_clean_string_s_shortcut_accepts_exactly_what_its_checks_accept(value, field, required, empty_ok):
    def outcome(given: str) -> str:
        try:
            return str.__str__(clean_string(given, field, max_length=6, required=required, empty_ok=empty_ok))
        except RowError as error:
            return f"error {error.code}"

    assert outcome(value) == outcome(_NotPlainStr(value))
