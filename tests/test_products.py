"""The catalog API: bulk upsert with per-row errors, one product, the paginated list."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from tests.conftest import product


def test_bulk_upsert_creates_then_updates(api, store):
    # when
    first = api.post("/api/v1/products/bulk", [product("a", price=10), product("b", brand="Acme")])
    second = api.post("/api/v1/products/bulk", [product("a", price=12), product("c")])
    # then
    assert first.status_code == 200
    assert first.json() == {"created": 2, "updated": 0, "rejected": 0, "errors": []}
    assert second.json() == {"created": 1, "updated": 1, "rejected": 0, "errors": []}
    assert Product.objects.filter(store=store).count() == 3
    assert api.get("/api/v1/products/a").json()["price"] == 12.0


def test_bulk_accepts_an_object_with_products(api):
    response = api.post("/api/v1/products/bulk", {"products": [product("a")]})
    assert response.json()["created"] == 1


def test_bulk_upsert_keeps_fields_a_row_leaves_out(api):
    api.post("/api/v1/products/bulk", [product("a", brand="Acme", category_path=["Shoes", "Boots"], price=5)])
    api.post("/api/v1/products/bulk", [{"id": "a", "in_stock": False}])
    body = api.get("/api/v1/products/a").json()
    assert body["brand"] == "Acme"
    assert body["category_path"] == ["Shoes", "Boots"]
    assert body["price"] == 5.0
    assert body["in_stock"] is False
    assert body["title"] == "Product a"


def test_bulk_keeps_valid_rows_and_reports_invalid_ones(api, store):
    rows = [
        product("ok-1"),
        product("neg", price=-1),
        {"id": "no-title"},
        product("x" * 300),
        product("nul\x00id"),
        product("ok-2", price="19.99"),
        "not an object",
        product("bad-type", in_stock="yes"),
        product("ok-1"),
        product("extra", colour="red"),
        product("nan", price="NaN"),
    ]
    response = api.post("/api/v1/products/bulk", rows)
    assert response.status_code == 200
    body = response.json()
    assert body["created"] == 2
    assert body["rejected"] == 9
    assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
        (1, "price", "negative"),
        (2, "title", "required"),
        (3, "id", "too_long"),
        (4, "id", "invalid_character"),
        (6, "", "invalid_type"),
        (7, "in_stock", "invalid_type"),
        (8, "id", "duplicate_id"),
        (9, "colour", "unknown_field"),
        (10, "price", "invalid_number"),
    ]
    assert all(error["message"] for error in body["errors"])
    assert sorted(Product.objects.filter(store=store).values_list("external_id", flat=True)) == [
        "ok-1",
        "ok-2",
    ]


def test_bulk_with_only_invalid_rows_is_400_and_stores_nothing(api, store):
    response = api.post("/api/v1/products/bulk", [product("a", price=-5), {"id": "b"}])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_rows"
    assert body["details"]["rejected"] == 2
    assert not Product.objects.filter(store=store).exists()


def test_bulk_rejects_an_oversize_batch_whole(api, store, settings):
    settings.MAX_BATCH_ROWS = 10
    response = api.post("/api/v1/products/bulk", [product(str(i)) for i in range(11)])
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"
    assert not Product.objects.filter(store=store).exists()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "empty_body"),
        (b'"just a string"', "invalid"),
        (b"42", "invalid"),
    ],
)
def test_bulk_rejects_malformed_bodies(api, raw, code):
    response = api.post("/api/v1/products/bulk", raw=raw)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["message"]


def test_nul_characters_in_attributes_are_kept_as_replacement_characters(api):
    # jsonb cannot hold NUL: free-form attributes keep everything else, in keys and values alike
    response = api.post(
        "/api/v1/products/bulk", [product("a", attributes={"k\x00": ["v\x00", {"x": "\x00"}]})]
    )
    assert response.status_code == 200 and response.json()["created"] == 1
    assert api.get("/api/v1/products/a").json()["attributes"] == {"k\ufffd": ["v\ufffd", {"x": "\ufffd"}]}
    # NUL in an id or a title is still refused
    refused = api.post("/api/v1/products/bulk", [product("b\x00")])
    assert (
        refused.status_code == 400 and refused.json()["details"]["errors"][0]["code"] == "invalid_character"
    )


def test_bulk_upsert_is_set_based(api):
    # the number of queries does not grow with the number of rows
    api.get("/api/v1/store")  # the key's first use is recorded once; keep it out of the count
    with CaptureQueriesContext(connection) as small:
        api.post("/api/v1/products/bulk", [product(f"s{i}") for i in range(2)])
    with CaptureQueriesContext(connection) as large:
        response = api.post("/api/v1/products/bulk", [product(f"l{i}") for i in range(2000)])
    assert response.json()["created"] == 2000
    assert len(large.captured_queries) == len(small.captured_queries)


def test_put_creates_then_replaces(api):
    created = api.put("/api/v1/products/a", {"title": "Boot", "brand": "Acme", "price": 10})
    assert created.status_code == 201
    replaced = api.put("/api/v1/products/a", {"title": "Boot v2"})
    assert replaced.status_code == 200
    body = replaced.json()
    assert body["title"] == "Boot v2"
    assert body["brand"] == ""  # PUT replaces: fields left out take their defaults
    assert body["price"] is None


def test_put_needs_a_title_and_a_matching_id(api):
    assert api.put("/api/v1/products/a", {"brand": "x"}).json()["code"] == "required"
    mismatch = api.put("/api/v1/products/a", {"id": "b", "title": "t"})
    assert mismatch.status_code == 400
    assert mismatch.json()["code"] == "id_mismatch"
    assert api.get("/api/v1/products/a").status_code == 404


def test_patch_changes_only_given_fields(api):
    api.put("/api/v1/products/a", {"title": "Boot", "brand": "Acme"})
    response = api.patch("/api/v1/products/a", {"price": 3.5})
    assert response.status_code == 200
    assert response.json()["brand"] == "Acme"
    assert response.json()["price"] == 3.5
    bad = api.patch("/api/v1/products/a", {"price": -1})
    assert bad.status_code == 400
    assert bad.json()["code"] == "negative"
    assert api.get("/api/v1/products/a").json()["price"] == 3.5


def test_patch_of_a_missing_product_is_404(api):
    assert api.patch("/api/v1/products/nope", {"price": 1}).status_code == 404


def test_delete_deactivates(api, store):
    api.put("/api/v1/products/a", {"title": "Boot"})
    assert api.delete("/api/v1/products/a").status_code == 204
    # gone from its URL (and its surfaces); kept for history, listed with active=false
    assert api.get("/api/v1/products/a").status_code == 404
    assert api.get("/api/v1/products/a/related").status_code == 404
    assert api.patch("/api/v1/products/a", {"price": 3}).status_code == 404
    assert api.delete("/api/v1/products/a").status_code == 404
    assert [p["id"] for p in api.get("/api/v1/products", active="false").json()["items"]] == ["a"]
    assert Product.objects.filter(store=store, external_id="a", is_active=False).exists()
    assert api.delete("/api/v1/products/nope").status_code == 404
    # an upsert brings it back
    api.post("/api/v1/products/bulk", [{"id": "a", "price": 2}])
    assert api.get("/api/v1/products/a").json()["active"] is True


def test_list_paginates_and_filters(api):
    rows = [
        product(f"p{i:02d}", category_path=["Shoes" if i % 2 else "Bags"], in_stock=i % 3 != 0)
        for i in range(25)
    ]
    api.post("/api/v1/products/bulk", rows)
    # pages of 10 cover every product once
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/products", limit=10, **({"cursor": cursor} if cursor else {})).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(row["id"] for row in rows)
    shoes = api.get("/api/v1/products", category="Shoes", limit=100).json()["items"]
    assert {item["id"] for item in shoes} == {f"p{i:02d}" for i in range(25) if i % 2}
    out = api.get("/api/v1/products", in_stock="false", limit=100).json()["items"]
    assert {item["id"] for item in out} == {f"p{i:02d}" for i in range(25) if i % 3 == 0}
    future = api.get("/api/v1/products", updated_since="2999-01-01T00:00:00Z").json()["items"]
    assert future == []


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "5000"},
        {"cursor": "!!"},
        {"in_stock": "maybe"},
        {"updated_since": "yesterday"},
    ],
)
def test_list_rejects_bad_parameters(api, query):
    response = api.get("/api/v1/products", **query)
    assert response.status_code == 400
    assert response.json()["code"]


def test_an_image_url_with_square_brackets_is_refused(api):
    # an unmatched bracket makes the URL unreadable to any client (urlsplit: "Invalid IPv6 URL")
    response = api.post("/api/v1/products/bulk", [product("a", image_url="http://[x/a.png")])
    assert response.status_code == 400
    assert response.json()["details"]["errors"][0]["code"] == "invalid_url"
    assert (
        api.post("/api/v1/products/bulk", [product("b", image_url="https://x.example/a.png")]).status_code
        == 200
    )


def test_internal_ids_found_are_remembered_and_missing_ones_asked_again(api, store):
    """Ingestion turns every event's product id into the internal id: found ids are remembered by the
    process (a product's internal id never changes), ids not found are asked again (they may be created
    since), and `active_only` always asks."""
    from catalog.selectors import product_internal_ids

    api.post("/api/v1/products/bulk", [product("a"), product("b")])
    ids = {p.external_id: p.id for p in Product.objects.filter(store=store)}
    assert product_internal_ids(store=store, external_ids=["a", "b"]) == ids
    with CaptureQueriesContext(connection) as remembered:
        assert product_internal_ids(store=store, external_ids=["b", "a", "b"]) == ids
    assert remembered.captured_queries == []
    with CaptureQueriesContext(connection) as missing:
        assert product_internal_ids(store=store, external_ids=["a", "c"]) == {"a": ids["a"]}
    assert len(missing.captured_queries) == 1
    assert "'c'" in missing.captured_queries[0]["sql"] and "'a'" not in missing.captured_queries[0]["sql"]
    # the ids asked for travel as one text split by a control character, which no stored id holds: an id
    # holding it matches nothing, and is not split into others
    assert product_internal_ids(store=store, external_ids=["a\x1fb", "b"]) == {"b": ids["b"]}
    api.post("/api/v1/products/bulk", [product("c")])
    assert (
        product_internal_ids(store=store, external_ids=["a", "c"])["c"]
        == Product.objects.get(store=store, external_id="c").id
    )
    api.delete("/api/v1/products/a")  # deactivated: still its id, but not among the active
    assert product_internal_ids(store=store, external_ids=["a"]) == {"a": ids["a"]}
    assert product_internal_ids(store=store, external_ids=["a"], active_only=True) == {}
