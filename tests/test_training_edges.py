"""Training on the edges: a catalog without events, and a store with a handful of events."""

from __future__ import annotations

from tests.conftest import product
from tests.test_recommendations import train


def test_a_catalog_without_events_trains_and_answers_by_content(api, store):
    api.post(
        "/api/v1/products/bulk",
        [product("a", title="red running shoe"), product("b", title="red running shoe sport"),
         product("c", title="chocolate cake")],
    )  # fmt: skip
    run = train(store)
    assert run.status == "succeeded", run.message
    assert run.metrics["users"] == 0
    body = api.get("/api/v1/products/a/related", limit=1).json()
    assert body["items"][0]["id"] == "b"
    assert api.get("/api/v1/trending").json()["items"] == []  # nothing has happened yet


def test_a_few_events_train_without_a_hold_out(api, store):
    api.post("/api/v1/products/bulk", [product("a"), product("b")])
    api.post("/api/v1/events", [{"user_id": "u", "product_id": p, "type": "view"} for p in ("a", "b")])
    run = train(store)
    assert run.status == "succeeded", run.message
    assert api.get("/api/v1/users/u/recommendations").json()["source"] == "store-model:v1"
