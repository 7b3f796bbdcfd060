"""Authentication by bearer key, scopes, and the sealed scoping base class."""

from __future__ import annotations

import pytest

from tenants.authentication import StoreScopedAPIView
from tenants.models import ApiKey
from tenants.services import api_key_revoke
from tests.conftest import ApiClient, product

STORE_CALLS = [
    ("GET", "/api/v1/store"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products/p1"),
    ("POST", "/api/v1/products/bulk"),
    ("POST", "/api/v1/events"),
]


@pytest.mark.parametrize(("method", "path"), STORE_CALLS)
def test_missing_key_is_401(db, method, path):
    # given no Authorization header
    response = ApiClient(None).request(method, path, [product("p1")] if method == "POST" else None)
    # then
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "raw_key",
    ["rk_000000000000_wrong", "not-a-key", "rk_short_x", "rk_" + "a" * 300],
)
def test_wrong_key_is_401(db, tenant, raw_key):
    response = ApiClient(raw_key).get("/api/v1/store")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_right_prefix_wrong_secret_is_401(tenant):
    prefix = tenant.raw_key.split("_")[1]
    response = ApiClient(f"rk_{prefix}_guessed").get("/api/v1/store")
    assert response.status_code == 401


def test_non_bearer_scheme_is_401(tenant):
    client = ApiClient(None)
    response = client.client.get("/api/v1/store", HTTP_AUTHORIZATION=f"Basic {tenant.raw_key}")
    assert response.status_code == 401


def test_revoked_key_is_401(tenant):
    # given a key that worked
    assert tenant.api.get("/api/v1/store").status_code == 200
    key = ApiKey.objects.get(store=tenant.store)
    # when it is revoked
    api_key_revoke(store=tenant.store, api_key=key)
    # then it no longer does
    response = tenant.api.get("/api/v1/store")
    assert response.status_code == 401


def test_key_records_last_use(tenant):
    assert ApiKey.objects.get(store=tenant.store).last_used_at is None
    tenant.api.get("/api/v1/store")
    assert ApiKey.objects.get(store=tenant.store).last_used_at is not None


def test_only_a_hash_of_the_key_is_stored(tenant):
    key = ApiKey.objects.get(store=tenant.store)
    secret = tenant.raw_key.split("_", 2)[2]
    assert secret not in key.hashed_secret
    assert len(key.hashed_secret) == 64
    assert tenant.raw_key.startswith(f"rk_{key.prefix}_")


def test_read_only_key_cannot_write(tenant):
    # given a read-only key
    reader = tenant.client_with_scopes("read")
    # when it writes
    products = reader.post("/api/v1/products/bulk", [product("p1")])
    events = reader.post("/api/v1/events", {"user_id": "u", "product_id": "p1", "type": "view"})
    # then it is refused and nothing is stored
    assert products.status_code == 403
    assert products.json()["code"] == "permission_denied"
    assert events.status_code == 403
    assert reader.get("/api/v1/products").json()["items"] == []
    # and it can still read
    assert reader.get("/api/v1/store").status_code == 200


def test_write_key_without_read_cannot_read(tenant):
    writer = tenant.client_with_scopes("write")
    assert writer.get("/api/v1/products").status_code == 403
    assert writer.post("/api/v1/products/bulk", [product("p1")]).status_code == 200


def test_changing_store_settings_needs_admin_scope(tenant):
    writer = tenant.client_with_scopes("read", "write")
    response = writer.patch("/api/v1/store", {"share_network": True})
    assert response.status_code == 403
    assert tenant.api.get("/api/v1/store").json()["settings"]["share_network"] is False
    # an admin key can
    response = tenant.api.patch("/api/v1/store", {"share_network": True})
    assert response.status_code == 200
    assert response.json()["settings"]["share_network"] is True


@pytest.mark.parametrize("sealed", ["authentication_classes", "permission_classes", "initial", "store"])
def test_scoping_cannot_be_overridden(sealed):
    with pytest.raises(TypeError, match="may not override tenant scoping"):
        type("Sneaky", (StoreScopedAPIView,), {sealed: []})


def test_store_is_unbound_before_authentication():
    from rest_framework.exceptions import NotAuthenticated

    view = StoreScopedAPIView()
    with pytest.raises(NotAuthenticated):
        _ = view.store


def test_a_remembered_key_costs_no_sql_until_keys_or_stores_change(tenant):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tenant.api.post("/api/v1/products/bulk", [product("p1")])
    event = {"user_id": "u", "product_id": "p1", "type": "view"}
    assert tenant.api.post("/api/v1/events", event).status_code == 200  # looked up once, remembered
    with CaptureQueriesContext(connection) as queries:
        assert tenant.api.post("/api/v1/events", event).status_code == 200
    assert not [q for q in queries.captured_queries if "tenants_apikey" in q["sql"]]
    # a store switched off is refused at once, writes included
    store = tenant.store
    store.is_active = False
    store.save()
    assert tenant.api.post("/api/v1/events", event).status_code == 401
