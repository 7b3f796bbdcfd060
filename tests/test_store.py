"""GET/PATCH /api/v1/store and manage.py create_store."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tenants.models import ApiKey, Store
from tests.conftest import ApiClient


def test_get_store(tenant):
    response = tenant.api.get("/api/v1/store")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "shop-a"
    assert body["name"] == "Shop-A"
    assert body["settings"]["share_network"] is False
    assert body["settings"]["retrain_interval_hours"] == 24


def test_patch_store_settings(tenant):
    response = tenant.api.patch(
        "/api/v1/store",
        {"name": "Shop A", "settings": {"include_purchased": True, "retrain_interval_hours": 6}},
    )
    assert response.status_code == 200
    settings = tenant.api.get("/api/v1/store").json()
    assert settings["name"] == "Shop A"
    assert settings["settings"]["include_purchased"] is True
    assert settings["settings"]["retrain_interval_hours"] == 6


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"share_network": "yes"}, "invalid"),
        ({"settings": {"retrain_interval_hours": 0}}, "invalid"),
        ({"settings": {"retrain_interval_hours": True}}, "invalid"),
        ({"store_id": 5}, "unknown_field"),
        ({"name": ""}, "invalid"),
        ([1, 2], "invalid"),
    ],
)
def test_patch_store_rejects_bad_values(tenant, body, code):
    response = tenant.api.patch("/api/v1/store", body)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert tenant.api.get("/api/v1/store").json()["settings"]["share_network"] is False


def test_create_store_command_prints_json_last_line(db):
    out = StringIO()
    call_command("create_store", "new-shop", "--name", "New Shop", "--json", stdout=out)
    payload = json.loads(out.getvalue().strip().splitlines()[-1])
    assert payload["store"] == "new-shop"
    assert payload["api_key"].startswith("rk_")
    assert set(payload["scopes"]) == {"read", "write", "admin"}
    # the printed key works
    response = ApiClient(payload["api_key"]).get("/api/v1/store")
    assert response.json()["name"] == "New Shop"


def test_create_store_command_plain_output(db):
    out = StringIO()
    call_command("create_store", "plain-shop", stdout=out)
    assert "rk_" in out.getvalue()
    assert Store.objects.filter(slug="plain-shop").exists()


def test_create_store_twice_fails_without_second_key(db):
    call_command("create_store", "twice", stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_store", "twice", stdout=StringIO())
    assert ApiKey.objects.filter(store__slug="twice").count() == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"pins": {"trending": [{"id": "p1", "position": "top"}]}},
        {"pins": {"trending": "p1"}},
        {"pins": {"*": [{"position": 1}]}},
        {"boosts": {"colour": {"red": 2}}},
        {"boosts": {"brand": {"Acme": "lots"}}},
        {"boosts": {"brand": {"Acme": -1}}},
        {"event_weights": {"teleport": 1}},
        {"event_weights": {"view": "heavy"}},
    ],
)
def test_pins_boosts_and_event_weights_are_checked_when_set(tenant, settings):
    response = tenant.api.patch("/api/v1/store", settings)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    stored = tenant.api.get("/api/v1/store").json()["settings"]
    assert stored["pins"] == {} and stored["boosts"] == {} and stored["event_weights"] == {}
