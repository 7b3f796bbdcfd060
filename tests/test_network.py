"""Cross-store related products: only stores that share contribute and receive, opting out takes effect
at once, and the same product in two stores is tied together in the network space."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command

from catalog.models import Product
from tests.conftest import make_tenant, product


def shop(slug: str, *, share: bool, rows: list[dict]):
    tenant = make_tenant(slug)
    tenant.api.post("/api/v1/products/bulk", rows)
    tenant.api.patch("/api/v1/store", {"share_network": share})
    return tenant


def catalogs():
    a = shop("net-a", share=True, rows=[
        product("a-shoe", title="Red trail running shoe", brand="Swift", category_path=["Shoes"], price=80),
        product("a-cake", title="Chocolate fudge cake", brand="Baker", category_path=["Food"], price=12),
    ])  # fmt: skip
    b = shop("net-b", share=True, rows=[
        product("b-shoe", title="Trail running shoe, red", brand="Swift", category_path=["Shoes"], price=85),
        product("b-boot", title="Leather winter boot", brand="North", category_path=["Shoes"], price=150),
        product("b-cake", title="Chocolate cake with fudge", brand="Oven", category_path=["Food"], price=10),
        product("b-same", title="Blue yoga mat", brand="Calm", gtin="0001234567890", category_path=["Sport"]),
    ])  # fmt: skip
    c = shop("net-c", share=False, rows=[
        product("c-shoe", title="Red trail running shoe", brand="Swift", category_path=["Shoes"], price=80),
    ])  # fmt: skip
    a.api.post(
        "/api/v1/products/bulk",
        [product("a-mat", title="Mat for exercise", brand="Other", gtin="0001234567890")],
    )
    return a, b, c


def train_global() -> str:
    out = StringIO()
    call_command("train_global", stdout=out)
    return out.getvalue()


def test_network_related_comes_from_other_sharing_stores_only(db):
    a, b, c = catalogs()
    printed = train_global()
    assert "7 products of 2 sharing stores" in printed
    body = a.api.get("/api/v1/products/a-shoe/related", scope="network", limit=3).json()
    assert body["source"] == "network"
    assert body["items"][0] == {**body["items"][0], "id": "b-shoe", "store": "net-b"}
    stores = {item["store"] for item in body["items"]}
    assert stores == {"net-b"}  # never its own store, never a store that does not share
    assert not Product.objects.filter(store=c.store, network_embedding__isnull=False).exists()
    # filters apply
    food = a.api.get("/api/v1/products/a-shoe/related", scope="network", category="Food").json()["items"]
    assert [item["id"] for item in food] == ["b-cake"]


def test_the_same_gtin_is_the_same_point(db):
    a, b, _ = catalogs()
    train_global()
    items = a.api.get("/api/v1/products/a-mat/related", scope="network", limit=1).json()["items"]
    assert items[0]["id"] == "b-same" and items[0]["score"] > 0.99


def test_opting_out_leaves_the_network_at_once(db):
    a, b, _ = catalogs()
    train_global()
    b.api.patch("/api/v1/store", {"share_network": False})
    assert a.api.get("/api/v1/products/a-shoe/related", scope="network").json()["items"] == []
    # and a store that does not share receives nothing either
    response = b.api.get("/api/v1/products/b-shoe/related", scope="network")
    assert response.status_code == 403 and response.json()["code"] == "network_sharing_off"
    # the next global training clears its vectors
    train_global()
    assert not Product.objects.filter(store=b.store, network_embedding__isnull=False).exists()


def test_a_product_added_since_the_last_global_training(db):
    a, _, _ = catalogs()
    train_global()
    a.api.put("/api/v1/products/a-new", {"title": "Brand new thing"})
    body = a.api.get("/api/v1/products/a-new/related", scope="network").json()
    assert body["items"] == [] and "next global training" in body["source"]
    assert a.api.get("/api/v1/products/nope/related", scope="network").status_code == 404
