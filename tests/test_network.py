"""Cross-store related products: only stores that share contribute and receive, opting out takes effect
at once, and the same product in two stores is tied together in the network space."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import numpy as np
from django.core.management import call_command

from catalog.models import Product
from recommendations.artifacts import artifact_load
from recommendations.models import NetworkSlice, TrainedModel, TrainingRun
from recommendations.network import network_slice_for
from recommendations.services import training_run_execute
from tenants.models import Store
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


# --- blending the global model into each store's model -------------------------------------------------


def gtin(i: int) -> str:
    return f"4006381333{i:03d}"


def pair_views(prefix: str, pairs: list[tuple[int, int]], users: int, start: int = 0) -> list[dict]:
    """Each shopper views one pair of products, one after the other."""
    moment = datetime.now(tz=UTC) - timedelta(days=5)
    events = []
    for user in range(start, start + users):
        first, second = pairs[user % len(pairs)]
        for step, item in enumerate((first, second)):
            at = moment + timedelta(minutes=user, seconds=step)
            events.append({"user_id": f"{prefix}-u{user}", "product_id": f"{prefix}{item}", "type": "view",
                           "timestamp": at.isoformat()})  # fmt: skip
    return events


def network_stores():
    """big (shares, many shoppers who view 2p then 2p+1), small (shares, the same products by GTIN, a
    few shoppers of its own) and private (does not share; its shoppers view 2p then 2p+2)."""
    tenants = {}
    for slug, share in (("big", True), ("small", True), ("private", False)):
        rows = [product(f"{slug}{i}", title=f"{slug} thing {i}", gtin=gtin(i), category_path=["Things"])
                for i in range(12)]  # fmt: skip
        tenants[slug] = shop(f"net-{slug}", share=share, rows=rows)
    post = lambda slug, events: tenants[slug].api.post("/api/v1/events", events)  # noqa: E731
    post("big", pair_views("big", [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)], users=120))
    post("private", pair_views("private", [(0, 2), (4, 6), (8, 10)], users=120))
    post("small", pair_views("small", [(0, 3), (6, 9)], users=3))
    return tenants


def train_store(tenant) -> TrainedModel:
    run = TrainingRun.objects.create(store=tenant.store)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded", run.message
    return run.model


def test_a_small_store_learns_from_the_network(db):
    stores = network_stores()
    printed = train_global()
    assert "global model v1: 24 products of 2 sharing stores" in printed  # never the private store's 12
    small = stores["small"]
    model = train_store(small)
    assert model.parameters["global_version"] == 1
    assert model.parameters["global_share"] == 0.5  # three shoppers: too few to validate, lean on the network
    small.api.post("/api/v1/events", [{"user_id": "shopper", "product_id": "small4", "type": "view"}])
    body = small.api.get("/api/v1/users/shopper/recommendations", limit=3).json()
    assert body["source"].startswith("blend:store-model:v1+global-model:v1 (global share 0.5")
    # only the big store's shoppers take 4 with 5; the private store's (4 with 6) never count
    assert body["items"][0]["id"] == "small5"
    assert "small6" not in [item["id"] for item in body["items"]]
    related = small.api.get("/api/v1/products/small4/related", limit=1).json()
    assert related["items"][0]["id"] == "small5" and related["source"].startswith("blend:")


def test_slices_hold_only_the_stores_own_products_and_no_private_behaviour(db):
    stores = network_stores()
    train_global()
    assert not NetworkSlice.objects.filter(store=stores["private"].store).exists()
    for slug in ("big", "small"):
        store = stores[slug].store
        (blob,) = NetworkSlice.objects.filter(store=store).values_list("artifact", flat=True)
        arrays = artifact_load(blob)
        own_ids = set(Product.objects.filter(store=store).values_list("id", flat=True))
        assert set(arrays["product_ids"].tolist()) <= own_ids
    # the big store's slice has nothing from its own shoppers (they alone take 0 with 1), and nothing from
    # the private store (0 with 2): only the small store's (0 with 3)
    big = Store.objects.get(pk=stores["big"].store.pk)  # settings as they are now
    matrix, version = network_slice_for(
        store=big,
        product_ids=np.array(sorted(Product.objects.filter(store=big).values_list("id", flat=True))),
    )
    external = dict(Product.objects.filter(store=big).values_list("id", "external_id"))
    ordered = [external[i] for i in sorted(external)]
    links = {(ordered[r], ordered[c]) for r, c in zip(*matrix.nonzero(), strict=True)}
    assert version == 1 and links == {("big0", "big3"), ("big3", "big0"), ("big6", "big9"), ("big9", "big6")}


def test_a_store_that_does_not_share_is_not_blended(db):
    stores = network_stores()
    train_global()
    model = train_store(stores["private"])
    assert "global_share" not in model.parameters
    stores["small"].api.patch("/api/v1/store", {"share_network": False})
    model = train_store(stores["small"])
    assert "global_share" not in model.parameters
    body = stores["small"].api.get("/api/v1/users/small-u0/recommendations").json()
    assert body["source"] == "store-model:v1"


def test_a_store_may_fix_its_global_share(db):
    stores = network_stores()
    train_global()
    small = stores["small"]
    for bad in ({"global": 2}, {"global": "half"}, {"local": 0.5}, {"global": True}):
        response = small.api.patch("/api/v1/store", {"blend_weights": bad})
        assert response.status_code == 400, bad
    assert small.api.patch("/api/v1/store", {"blend_weights": {"global": 0.2}}).status_code == 200
    model = train_store(small)
    assert model.parameters["global_share"] == 0.2
    assert model.parameters["global_share_chosen_by"] == "the store's setting"


def test_a_middle_store_chooses_its_share_on_validation(db):
    stores = network_stores()
    small = stores["small"]
    # enough shoppers of its own to validate on, who behave like the network's
    small.api.post(
        "/api/v1/events", pair_views("small", [(0, 1), (2, 3), (4, 5), (6, 7)], users=60, start=10)
    )
    train_global()
    model = train_store(small)
    assert model.parameters["global_share_chosen_by"] == "validation"
    tried = model.parameters["global_shares_tried"]
    assert set(tried) >= {"0", "0.5", "1"} and model.metrics["ndcg@10_store_only"] == tried["0"]


def test_global_training_with_no_store_sharing(db):
    shop("lonely", share=False, rows=[product("x", title="Something")])
    assert "global model v1: 0 products of 0 sharing stores" in train_global()


def test_a_sharing_store_with_no_shoppers_yet_is_trained_from_the_network(db):
    from recommendations.services import stores_due_for_training

    network_stores()
    rows = [
        product(f"new{i}", title=f"new thing {i}", gtin=gtin(i), category_path=["Things"]) for i in range(12)
    ]
    new = shop("net-new", share=True, rows=rows)
    shop("net-lonely", share=False, rows=rows)

    def due(days: int = 0) -> set[str]:
        later = datetime.now(tz=UTC) + timedelta(days=days)
        return {store.slug for store in stores_due_for_training(now=later)}

    assert "net-new" not in due() and "net-lonely" not in due()  # no events, and nothing from the network yet
    train_global()
    assert "net-new" in due() and "net-lonely" not in due()
    model = train_store(new)
    assert model.parameters["global_version"] == 1 and model.metrics["users"] == 0
    related = new.api.get("/api/v1/products/new4/related", limit=1).json()
    assert related["items"][0]["id"] == "new5" and related["source"].startswith("blend:store-model:v1+global")
    # trending too, from how much the network's shoppers take its products: 0, 3, 6 and 9 most (the small
    # store's shoppers as well as the big one's)
    trending = new.api.get("/api/v1/trending", limit=4).json()
    assert trending["source"].startswith("trending:blend:store-model:v1")
    assert {item["id"] for item in trending["items"]} == {"new0", "new3", "new6", "new9"}
    # trained on this global version: not due again until there is a new one, however long it waits
    assert "net-new" not in due(days=30)
    train_global()
    assert "net-new" in due(days=30)
    # a store that stops sharing is not trained for the network's sake
    new.api.patch("/api/v1/store", {"share_network": False})
    assert "net-new" not in due(days=30)


def test_an_unreadable_slice_leaves_the_store_to_train_on_its_own(db):
    stores = network_stores()
    train_global()
    small = stores["small"]
    NetworkSlice.objects.filter(store=small.store).update(artifact=b"torn")
    model = train_store(small)
    assert "global_share" not in model.parameters
    assert small.api.get("/api/v1/products/small0/related").json()["source"] == "store-model:v1"


def test_the_spark_engine_without_pyspark_says_what_to_install(db, monkeypatch):
    import sys

    import pytest
    from django.core.management.base import CommandError

    monkeypatch.setitem(sys.modules, "pyspark", None)  # as where it is not installed
    with pytest.raises(CommandError, match=r"pip install 'recsys\[spark\]'"):
        call_command("train_global", "--engine", "spark", stdout=StringIO())
