"""The operator console: lists open, a new key is shown once, keys are revoked, models rolled back."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from recommendations.models import TrainedModel
from tenants.models import ApiKey


@pytest.fixture
def operator(db):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tenants/store/",
        "/admin/tenants/apikey/",
        "/admin/catalog/product/",
        "/admin/events/event/",
        "/admin/recommendations/trainingrun/",
        "/admin/recommendations/trainedmodel/",
    ],
)
def test_lists_open(operator, tenant, path):
    assert operator.get(path).status_code == 200


def test_adding_a_key_shows_it_once_and_stores_a_hash(operator, store):
    response = operator.post(
        "/admin/tenants/apikey/add/", {"store": store.id, "name": "ops", "scopes": "read"}, follow=True
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "shown this once" in str(m)]
    assert len(shown) == 1
    raw_key = shown[0].rsplit(" ", 1)[-1]
    key = ApiKey.objects.get(store=store, name="ops")
    assert key.scopes == ["read"]
    assert raw_key.startswith(f"rk_{key.prefix}_") and raw_key not in key.hashed_secret


def test_revoke_action(operator, tenant):
    key = ApiKey.objects.get(store=tenant.store)
    operator.post("/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [key.id]})
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert tenant.api.get("/api/v1/store").status_code == 401


def test_rollback_action(operator, store):
    old = TrainedModel.objects.create(store=store, version=1, artifact=b"")
    TrainedModel.objects.create(store=store, version=2, artifact=b"", is_active=True)
    operator.post(
        "/admin/recommendations/trainedmodel/", {"action": "activate", "_selected_action": [old.id]}
    )
    assert TrainedModel.objects.get(store=store, is_active=True).version == 1
