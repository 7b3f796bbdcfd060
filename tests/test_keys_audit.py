"""API keys: issued, listed, expiring, rotated with an overlap, revoked, through the API and the admin;
and the audit log of key, settings, activation and deletion changes: who, when, what."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from recommendations.models import TrainedModel
from tenants.models import ApiKey, AuditEntry
from tests.conftest import ApiClient


@pytest.fixture(params=["django", "wsgi"])
def through(request):
    ApiClient.through_wsgi = request.param == "wsgi"
    yield request.param
    ApiClient.through_wsgi = False


def _issue(api, **body):  # noqa: ANN001, ANN003, ANN202
    response = api.post("/api/v1/keys", body)
    assert response.status_code == 201, response.content
    return response.json()


def test_an_admin_key_issues_lists_and_revokes_keys(tenant, through):
    issued = _issue(tenant.api, name="storefront", scopes=["read", "write"])
    assert issued["key"].startswith(f"rk_{issued['prefix']}_") and issued["live"]
    new = ApiClient(issued["key"])
    assert new.get("/api/v1/trending").status_code == 200
    assert new.get("/api/v1/keys").status_code == 403  # listing keys needs the admin scope
    listed = tenant.api.get("/api/v1/keys").json()
    assert {k["prefix"] for k in listed} == set(
        ApiKey.objects.filter(store=tenant.store).values_list("prefix", flat=True)
    )
    assert all("key" not in k and "hashed_secret" not in k for k in listed)
    revoked = tenant.api.delete(f"/api/v1/keys/{issued['prefix']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] and not revoked.json()["live"]
    assert new.get("/api/v1/trending").status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"scopes": ["root"]}, "invalid_scope"),
        ({"scopes": []}, "invalid_scope"),
        ({"expires_at": "soon"}, "invalid_expiry"),
        ({"name": ""}, "invalid"),
        ({"colour": "red"}, "unknown_field"),
    ],
)
def test_a_bad_key_request_is_a_400(api, body, code):
    response = api.post("/api/v1/keys", body)
    assert response.status_code == 400 and response.json()["code"] == code


def test_a_key_issued_with_an_expiry_in_the_past_never_works(tenant):
    issued = _issue(tenant.api, expires_at="2001-01-01T00:00:00Z")
    assert not issued["live"]
    assert ApiClient(issued["key"]).get("/api/v1/trending").status_code == 401


def test_a_key_stops_working_when_it_expires(tenant, through):
    issued = _issue(tenant.api, expires_at=(timezone.now() + timedelta(seconds=2)).isoformat())
    client = ApiClient(issued["key"])
    assert client.get("/api/v1/trending").status_code == 200
    assert client.get("/api/v1/trending").status_code == 200  # remembered by the process now
    time.sleep(2.1)
    refused = client.get("/api/v1/trending")
    assert refused.status_code == 401 and refused.json()["code"] == "authentication_failed"


def test_rotation_keeps_the_old_key_for_the_overlap(tenant, through):
    old = _issue(tenant.api, name="backend", scopes=["read"])
    old_client = ApiClient(old["key"])
    assert old_client.get("/api/v1/trending").status_code == 200
    rotated = tenant.api.post(f"/api/v1/keys/{old['prefix']}/rotate", {"overlap_hours": 24})
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["replaces"] == old["prefix"] and new["name"] == "backend" and new["scopes"] == ["read"]
    assert ApiClient(new["key"]).get("/api/v1/trending").status_code == 200
    assert old_client.get("/api/v1/trending").status_code == 200  # still, for the overlap
    ends = ApiKey.objects.get(prefix=old["prefix"]).expires_at
    assert timedelta(hours=23.9) < ends - timezone.now() <= timedelta(hours=24)


def test_rotation_without_overlap_ends_the_old_key_at_once(tenant, through):
    old = _issue(tenant.api, scopes=["read"])
    old_client = ApiClient(old["key"])
    assert old_client.get("/api/v1/trending").status_code == 200
    rotated = tenant.api.post(f"/api/v1/keys/{old['prefix']}/rotate", {"overlap_hours": 0})
    assert rotated.status_code == 201
    assert old_client.get("/api/v1/trending").status_code == 401
    assert ApiClient(rotated.json()["key"]).get("/api/v1/trending").status_code == 200
    again = tenant.api.post(f"/api/v1/keys/{old['prefix']}/rotate", {"overlap_hours": 0})
    assert again.status_code == 404  # an ended key is not rotated again
    assert tenant.api.post(f"/api/v1/keys/{old['prefix']}/rotate", {"overlap_hours": -1}).status_code in (
        400,
        404,
    )


def test_the_audit_log_records_who_changed_what(tenant, store):
    prefix = ApiKey.objects.get(store=store).prefix
    actor = f"api key {prefix}"
    issued = _issue(tenant.api, name="ops", scopes=["read"])
    tenant.api.post(f"/api/v1/keys/{issued['prefix']}/rotate", {"overlap_hours": 1})
    tenant.api.delete(f"/api/v1/keys/{issued['prefix']}")
    tenant.api.request("PATCH", "/api/v1/store", {"settings": {"include_purchased": True}},
                       meta={"HTTP_X_REQUEST_ID": "req-audit-1"})  # fmt: skip
    TrainedModel.objects.create(store=store, version=1, artifact=b"")
    tenant.api.post("/api/v1/models/1/activate")
    first, *entries = list(AuditEntry.objects.filter(store=store).order_by("id"))
    assert (first.action, first.actor) == ("key_issued", "system")  # the store's first key
    assert [e.action for e in entries] == [
        "key_issued", "key_issued", "key_rotated", "key_revoked", "store_updated", "model_activated"
    ]  # fmt: skip
    assert {e.actor for e in entries} == {actor}
    update = entries[4]
    assert update.changes == {"include_purchased": [False, True]} and update.request_id == "req-audit-1"
    assert entries[2].target == issued["prefix"] and entries[5].target == "store v1"
    assert all(e.store_slug == store.slug for e in entries)


def test_an_unchanged_patch_records_nothing(api, store):
    api.patch("/api/v1/store", {"name": store.name})
    assert not AuditEntry.objects.filter(store=store, action="store_updated").exists()


def test_the_admin_shows_the_audit_log_and_records_its_user(tenant, store):
    user = get_user_model().objects.create_superuser("auditor", "a@example.com", "pw")
    client = Client()
    client.force_login(user)
    key = ApiKey.objects.get(store=store)
    client.post("/admin/tenants/apikey/", {"action": "rotate", "_selected_action": [key.id]})
    entry = AuditEntry.objects.filter(store=store, action="key_rotated").get()
    assert entry.actor == "admin auditor"
    page = client.get("/admin/tenants/auditentry/")
    assert page.status_code == 200 and b"key_rotated" in page.content
    assert client.get(f"/admin/tenants/auditentry/{entry.id}/change/").status_code in (200, 403)
