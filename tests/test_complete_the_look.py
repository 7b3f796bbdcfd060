"""Complete the look: one product from each category that goes with the product's, by rules learned
from co-purchase (lift, minimum support) and the merchant's own (added, forbidden), each reason naming
its rule; within a category the product bought with it, else the nearest in style."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recommendations.engine.baskets import CategoryCompatibility
from recommendations.serving.complete_the_look import compatible_categories
from tests.conftest import product
from tests.test_recommendations import train

LINES = {"s": (["Living room", "Sofas"], "Velvet sofa"), "t": (["Living room", "Coffee tables"], "Oak table"),
         "r": (["Decor", "Rugs"], "Wool rug"), "k": (["Kitchen", "Pans"], "Steel pan")}  # fmt: skip
CATALOG = [
    product(f"{line}{i}", category_path=path, title=f"{title} {i}", price=30 + 100 * i)
    for line, (path, title) in LINES.items()
    for i in range(4)
]


def _baskets() -> list[dict]:
    start = datetime.now(tz=UTC) - timedelta(days=5)
    events = []
    for n in range(24):
        i = n % 4
        basket = [f"s{i}", f"t{i}"] + ([f"r{(i + 1) % 4}"] if n % 2 else [])  # sofas with tables, often rugs
        if n % 3 == 0:
            basket = [f"k{i}", f"k{(i + 1) % 4}"]  # pans with pans only
        moment = start + timedelta(hours=n)
        for item in basket:
            events.append(
                {"user_id": f"b{n}", "product_id": item, "type": "view", "timestamp": moment.isoformat()}
            )
            bought = (moment + timedelta(minutes=5)).isoformat()
            events.append({"user_id": f"b{n}", "product_id": item, "type": "purchase",
                           "session_id": f"order-{n}", "timestamp": bought})  # fmt: skip
    return events


@pytest.fixture
def furnished(api, store):
    api.post("/api/v1/products/bulk", CATALOG)
    assert api.post("/api/v1/events", _baskets()).json()["rejected"] == 0
    run = train(store)
    assert run.status == "succeeded", run.message
    return api


def _look(api, product_id: str, **query) -> dict:
    response = api.get(f"/api/v1/products/{product_id}/complete-the-look", **query)
    assert response.status_code == 200, response.content
    return response.json()


def test_rules_are_learned_from_co_purchase_by_lift_with_a_minimum_support():
    # categories: 0 sofas, 1 tables, 2 rugs, 3 pans; items 0..3 of one each
    baskets = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7])
    items = np.array([0, 1, 0, 1, 0, 1, 0, 2, 3, 3, 3, 3, 0, 1, 2])
    found = CategoryCompatibility(min_support=2).fit(baskets, items, np.array([0, 1, 2, 3]), 4).pairs_
    pairs = {(int(a), int(b)): (round(float(lift), 3), int(n)) for a, b, lift, n in zip(*found, strict=True)}
    # 8 baskets; sofas in 5, tables in 4, together in 4: lift 4 * 8 / (5 * 4) = 1.6. Sofas and rugs
    # together once: under the minimum support. Pans only with pans: with nothing else.
    assert set(pairs) == {(0, 1), (1, 0)}
    assert pairs[(0, 1)] == (1.6, 4)
    assert compatible_categories({}, {"Sofas": [("Coffee tables", 2.0, 4)]}, ["Living room", "Sofas"]) == [
        ("Coffee tables", "goes with Sofas: bought together 2.0x as often as chance (4 baskets)")
    ]


def test_one_product_from_each_category_that_goes_with_it(furnished):
    answer = _look(furnished, "s1")
    chosen = [item["id"] for item in answer["items"]]
    assert chosen[0] == "t1"  # the table bought with this very sofa
    assert "bought together with s1" in answer["items"][0]["reason"]
    assert "goes with Sofas: bought together" in answer["items"][0]["reason"]
    assert [c[0] for c in chosen] == ["t", "r"]  # a table, then a rug; no sofa, no pan
    assert answer["source"].startswith("store-model")


def test_the_merchant_adds_and_forbids_rules(furnished, api):
    bad = [
        {"Sofas": "Rugs"},
        {"Sofas": {"allow": ["Rugs"]}},
        {"Sofas": [1]},
        {"Sofas": [""]},
        {"x" * 201: []},
    ]
    for rules in bad:
        response = api.patch("/api/v1/store", {"settings": {"compatibility": rules}})
        assert response.status_code == 400, rules
    rules = {"Sofas": {"add": ["Pans"], "forbid": ["Rugs"]}, "Living room": ["Rugs", "Lamps"]}
    assert api.patch("/api/v1/store", {"settings": {"compatibility": rules}}).status_code == 200
    answer = _look(furnished, "s2")
    chosen = [item["id"] for item in answer["items"]]
    # the deepest level's rules first (pans), "Living room"'s rug is forbidden by "Sofas", lamps: none
    # in the catalog; then the learned tables
    assert [c[0] for c in chosen] == ["k", "t"]
    assert answer["items"][0]["reason"] == "goes with Sofas (the store's rule)"
    # a pan goes with nothing learned or set: an empty answer, which says why
    empty = _look(furnished, "k0")
    assert empty["items"] == [] and "no category known to go with Pans" in empty["source"]
    assert furnished.get("/api/v1/products/nope/complete-the-look").status_code == 404


def test_within_a_category_the_merchant_s_embedding_picks_the_style(furnished, api, store):
    """Pans never go with sofas by co-purchase: added by the merchant, the pan is picked by style. With
    the merchant's own embeddings (given on products, one dimension per store), the pan whose embedding
    is nearest the sofa's, whatever the text and popularity say."""
    rules = {"settings": {"compatibility": {"Sofas": {"add": ["Pans"]}}}}
    assert api.patch("/api/v1/store", rules).status_code == 200
    default = next(item["id"] for item in _look(furnished, "s2")["items"] if item["id"][0] == "k")
    chosen = next(pan for pan in ("k0", "k1", "k2", "k3") if pan != default)
    vectors = {"s2": [1.0, 0.2, 0.0], chosen: [0.9, 0.3, 0.1]}
    for pan in ("k0", "k1", "k2", "k3"):
        vectors.setdefault(pan, [0.0, -0.2, 1.0])
    response = api.post("/api/v1/products/bulk", [{"id": pid, "embedding": v} for pid, v in vectors.items()])
    assert response.json()["rejected"] == 0
    assert api.get("/api/v1/products/s2").json()["embedding"] == [1.0, 0.2, 0.0]
    assert train(store).status == "succeeded"
    answer = _look(furnished, "s2")
    assert next(item["id"] for item in answer["items"] if item["id"][0] == "k") == chosen


def test_embeddings_are_checked_per_row_and_keep_one_dimension_per_store(furnished, api):
    rows = [
        {"id": "s0", "embedding": [0.1, 0.2]},  # the store's first: two dimensions from now on
        {"id": "s1", "embedding": [0.1, 0.2, 0.3]},
        {"id": "s2", "embedding": "0.1,0.2"},
        {"id": "s3", "embedding": [True, 1.0]},
        {"id": "t0", "embedding": [0.0, 0.0]},  # no style to compare, as null
        {"id": "t1", "embedding": []},
        {"id": "t2", "embedding": [1e300, 1.0]},
        {"id": "t3", "embedding": [0.5, -0.5]},
    ]
    result = api.post("/api/v1/products/bulk", rows).json()
    codes = {error["index"]: error["code"] for error in result["errors"]}
    assert codes == {1: "embedding_dimensions", 2: "invalid_type", 3: "invalid_type", 5: "invalid_type",
                     6: "invalid_value"}, result  # fmt: skip
    assert result["updated"] == 3
    again = api.put("/api/v1/products/s1", {"title": "Sofa", "embedding": [1.0, 2.0, 3.0]})
    assert again.status_code == 409 and again.json()["code"] == "embedding_dimensions"
    # null takes it away; once no product keeps two dimensions, another dimension may start
    cleared = [{"id": pid, "embedding": None} for pid in ("s0", "t0", "t3")]
    assert api.post("/api/v1/products/bulk", cleared).json()["rejected"] == 0
    assert api.get("/api/v1/products/s0").json()["embedding"] is None
    assert api.put("/api/v1/products/s1", {"title": "Sofa", "embedding": [1.0, 2.0, 3.0]}).status_code == 200
