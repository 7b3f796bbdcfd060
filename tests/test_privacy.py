"""Privacy: a shopper's erasure and export, a store's deletion. Each proves that nothing remains by
scanning every tenant table (every model with a `store`) and the store's Redis keys."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.db import connection, models

from core import answer_cache
from outcomes.services import impressions_drain, outcomes_rollup
from tenants.models import Store
from tenants.tasks import store_erase_task
from tests.conftest import make_tenant, product


def tenant_models() -> list[type[models.Model]]:
    found = []
    for model in apps.get_models():
        field = next((f for f in model._meta.get_fields() if getattr(f, "name", None) == "store"), None)
        if field is not None and getattr(field, "related_model", None) is Store and not field.auto_created:
            found.append(model)
    return found


def rows_of_store(store_id: int) -> dict[str, int]:
    return {
        model._meta.db_table: count
        for model in tenant_models()
        if (count := model.objects.filter(store_id=store_id).count())
    }


def rows_mentioning(store_id: int, needles: list[str]) -> dict[str, int]:
    """Rows of the store whose any text or JSON column holds one of `needles`."""
    found = {}
    with connection.cursor() as cursor:
        for model in tenant_models():
            columns = [
                f.column
                for f in model._meta.concrete_fields
                if isinstance(f, models.CharField | models.TextField | models.JSONField)
            ]
            if not columns:
                continue
            condition = " OR ".join(f"{column}::text LIKE ANY(%s)" for column in columns)
            patterns = [f"%{needle}%" for needle in needles]
            cursor.execute(
                f"SELECT count(*) FROM {model._meta.db_table} WHERE store_id = %s AND ({condition})",  # noqa: S608
                [store_id, *([patterns] * len(columns))],
            )
            count = cursor.fetchone()[0]
            if count:
                found[model._meta.db_table] = count
    return found


def redis_keys(store: Store, part: str = "") -> list[bytes]:
    client = answer_cache._redis()
    assert client is not None
    return list(client.scan_iter(match=f"{answer_cache._namespace(store)}:{part}*", count=1000))


def _events(user: str, products: list[str], prefix: str) -> list[dict[str, Any]]:
    return [
        {"event_id": f"{prefix}-{user}-{i}", "user_id": user, "product_id": p, "type": "view"}
        for i, p in enumerate(products)
    ]


@pytest.fixture
def shoppers(tenant, other_tenant, django_capture_on_commit_callbacks):
    for t in (tenant, other_tenant):
        t.api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(5)])
    with django_capture_on_commit_callbacks(execute=True):
        tenant.api.post("/api/v1/events", _events("anon-1", ["p0", "p1"], "a"))
        assert tenant.api.post("/api/v1/users/alice/aliases", {"alias_id": "anon-1"}).status_code == 201
        tenant.api.post("/api/v1/events", _events("alice", ["p2", "p3"], "a"))
        tenant.api.post("/api/v1/events", _events("bob", ["p0", "p4"], "b"))
        other_tenant.api.post("/api/v1/events", _events("alice", ["p1"], "o"))
    # her profile is held in Redis once an answer about her was computed; the answers are impressions
    assert tenant.api.get("/api/v1/users/alice/recently-viewed").json()["items"]
    answer = tenant.api.get("/api/v1/users/alice/recommendations").json()
    assert tenant.api.get("/api/v1/users/anon-1/recommendations").status_code == 200
    assert redis_keys(tenant.store, "p:")
    assert impressions_drain() == 3
    # she clicked one of them: the click is credited to the answer (an attribution naming her)
    click = {
        "event_id": "a-alice-click",
        "user_id": "alice",
        "product_id": answer["items"][0]["id"],
        "type": "click",
    }
    tenant.api.post("/api/v1/events", {**click, "recommendation_id": answer["recommendation_id"]})
    assert outcomes_rollup(lag_seconds=0) == 1
    return tenant


def test_a_shopper_is_erased_with_her_aliases_and_nothing_of_her_remains(
    shoppers, tenant, other_tenant, django_capture_on_commit_callbacks
):
    assert rows_mentioning(tenant.store.id, ["alice", "anon-1"])  # the scan finds her before
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant.api.delete("/api/v1/users/alice")
    assert response.status_code == 200
    body = response.json()
    assert body["identities"] == ["alice", "anon-1"]
    assert body["deleted"] == {"events": 5, "aliases": 1, "impressions": 3, "attributions": 1}
    assert rows_mentioning(tenant.store.id, ["alice", "anon-1"]) == {}
    # her profile is gone from Redis, and answers about her know nothing of her
    assert redis_keys(tenant.store, "p:") == []  # (bob's was never built)
    assert tenant.api.get("/api/v1/users/alice/recently-viewed").json()["items"] == []
    assert tenant.api.get("/api/v1/users/anon-1/data").json()["events"] == []
    # bob, and the other store's alice, are untouched
    assert len(tenant.api.get("/api/v1/users/bob/data").json()["events"]) == 2
    assert len(other_tenant.api.get("/api/v1/users/alice/data").json()["events"]) == 1


def test_erasing_through_an_alias_erases_the_whole_shopper(shoppers, tenant):
    response = tenant.api.delete("/api/v1/users/anon-1")
    assert response.json()["identities"] == ["alice", "anon-1"]
    assert rows_mentioning(tenant.store.id, ["alice", "anon-1"]) == {}


def test_erasing_an_unknown_shopper_succeeds_and_erases_nothing(shoppers, tenant):
    response = tenant.api.delete("/api/v1/users/nobody")
    assert response.status_code == 200
    assert response.json()["deleted"] == {"events": 0, "aliases": 0, "impressions": 0, "attributions": 0}


def test_erasure_needs_the_write_scope(shoppers, tenant):
    reader = tenant.client_with_scopes("read")
    assert reader.delete("/api/v1/users/alice").status_code == 403
    assert rows_mentioning(tenant.store.id, ["alice"])


def test_the_export_holds_every_event_and_alias_of_the_shopper_and_no_one_else_s(shoppers, tenant):
    response = tenant.api.get("/api/v1/users/alice/data")
    assert response.status_code == 200
    body = response.json()
    assert body["identities"] == ["alice", "anon-1"]
    assert [a["alias_id"] for a in body["aliases"]] == ["anon-1"]
    events = body["events"]
    assert sorted(e["event_id"] for e in events) == [
        "a-alice-0", "a-alice-1", "a-alice-click", "a-anon-1-0", "a-anon-1-1"
    ]  # fmt: skip
    assert {e["user_id"] for e in events} == {"alice", "anon-1"}
    assert {e["product_id"] for e in events if e["type"] == "view"} == {"p0", "p1", "p2", "p3"}
    assert {e["type"] for e in events} == {"view", "click"} and {e["channel"] for e in events} == {"web"}
    assert [(a["kind"], a["surface"], a["position"]) for a in body["attributions"]] == [
        ("direct", "for_user", 0)
    ]
    shown = body["impressions"]
    assert [i["surface"] for i in shown] == ["recently_viewed", "for_user", "for_user"]
    assert {i["user_id"] for i in shown} == {"alice", "anon-1"} and all(i["items"] is not None for i in shown)


def test_a_deleted_store_stops_answering_at_once_and_is_erased_whole(
    shoppers, tenant, other_tenant, django_capture_on_commit_callbacks, monkeypatch
):
    store = tenant.store
    assert rows_of_store(store.id) and redis_keys(store)
    assert tenant.client_with_scopes("read", "write").delete("/api/v1/store").status_code == 403
    enqueued: list[Any] = []
    monkeypatch.setattr(store_erase_task, "delay", lambda *args: enqueued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant.api.delete("/api/v1/store")
    assert response.status_code == 202 and response.json()["status"] == "erasing"
    assert enqueued == [(store.id,)]
    assert tenant.api.get("/api/v1/trending").status_code == 401  # its keys stopped working at once
    store_erase_task.apply(args=[store.id])  # what the worker does
    assert not Store.objects.filter(pk=store.id).exists()
    assert rows_of_store(store.id) == {}
    assert redis_keys(store) == []
    store_erase_task.apply(args=[store.id])  # delivered twice: nothing more to do
    # the other store is untouched
    assert other_tenant.api.get("/api/v1/users/alice/data").json()["events"]
    assert rows_of_store(other_tenant.store.id)


def test_a_store_that_was_not_deleted_is_never_erased(tenant):
    from core.errors import ApiError
    from tenants.services import store_erase

    with pytest.raises(ApiError):
        store_erase(store_id=tenant.store.id)
    assert Store.objects.filter(pk=tenant.store.id).exists()


def test_every_tenant_table_is_known_to_the_scan():
    tables = {model._meta.db_table for model in tenant_models()}
    assert {
        "catalog_product",
        "events_event",
        "events_useralias",
        "recommendations_trainedmodel",
        "recommendations_trainingrun",
        "recommendations_networkslice",
        "tenants_apikey",
        "tenants_storesettings",
    } <= tables


def test_a_new_store_gets_a_fresh_slug_after_erasure(tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        tenant.api.delete("/api/v1/store")
    store_erase_task.apply(args=[tenant.store.id])
    again = make_tenant(tenant.store.slug)
    assert again.api.get("/api/v1/store").json()["id"] == tenant.store.slug
