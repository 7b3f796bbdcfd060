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


def test_a_trained_artifact_is_stored_and_read_as_binary_within_its_store(api, store, other_store):
    """The artifact goes in as a binary parameter and comes back as a binary result (core/db/binary.py):
    every byte value intact, in the store's tenancy scope (another store's scope reads nothing)."""
    from core import tenancy
    from core.db.binary import binary_first, binary_update
    from recommendations.models import TrainedModel

    api.post("/api/v1/products/bulk", [product("a"), product("b")])
    api.post("/api/v1/events", [{"user_id": "u", "product_id": p, "type": "view"} for p in ("a", "b")])
    run = train(store)
    model = TrainedModel.objects.get(pk=run.model_id)
    rows = TrainedModel.objects.filter(pk=model.pk)
    stored = binary_first(rows, "artifact")
    assert stored is not None and len(stored) == model.artifact_bytes > 0
    every_byte = bytes(range(256)) * 1000 + b"\x00\\x'"
    assert binary_update(TrainedModel, model.pk, "artifact", every_byte) == 1
    assert binary_first(rows, "artifact") == every_byte
    assert bytes(TrainedModel.objects.values_list("artifact", flat=True).get(pk=model.pk)) == every_byte
    with tenancy.store_scope(other_store.id):
        assert binary_first(rows, "artifact") is None
        assert binary_update(TrainedModel, model.pk, "artifact", b"x") == 0
    assert binary_first(TrainedModel.objects.filter(pk=-1), "artifact") is None


def test_content_vectors_are_written_as_the_artifact_holds_them(api, store):
    """Training writes each product's content vector to pgvector (binary COPY, catalog/services.py): the
    same half-precision values the artifact holds, a product without content left without one, and a
    second training overwrites them."""
    import numpy as np

    from catalog.models import Product
    from catalog.services import product_content_vectors_write
    from recommendations.artifacts import artifact_load
    from recommendations.models import TrainedModel

    api.post(
        "/api/v1/products/bulk",
        [product("a", title="red running shoe"), product("b", title="red running shoe sport"),
         product("c", title="chocolate cake"), product("d", title="")],
    )  # fmt: skip
    run = train(store)
    arrays = artifact_load(bytes(TrainedModel.objects.get(pk=run.model_id).artifact))
    by_external = dict(Product.objects.filter(store=store).values_list("id", "external_id"))
    stored = {
        by_external[pk]: v
        for pk, v in Product.objects.filter(store=store).values_list("id", "content_embedding")
    }
    for position, pk in enumerate(arrays["product_ids"].tolist()):
        want = arrays["vectors"][position]
        got = stored[by_external[pk]]
        if not np.any(want):
            assert got is None
        else:
            assert np.array_equal(np.asarray(got, np.float16), want)
    ids = np.array(sorted(by_external), dtype=np.int64)
    vectors = (
        np.random.default_rng(0).standard_normal((len(ids), arrays["vectors"].shape[1])).astype(np.float32)
    )
    product_content_vectors_write(store=store, product_ids=ids, vectors=vectors)
    again = dict(Product.objects.filter(store=store).values_list("id", "content_embedding"))
    assert all(
        np.array_equal(np.asarray(again[pk], np.float16), vectors[i].astype(np.float16))
        for i, pk in enumerate(ids.tolist())
    )


def test_figures_of_a_version_are_read_without_its_artifact(api, store, admin_client):
    """A training run's figures (the API), its page and the versions' list in the admin, a second training
    comparing with the active version and an activation read no artifact (100 MB for a large store)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from recommendations.services import trained_model_activate

    api.post("/api/v1/products/bulk", [product("a"), product("b")])
    api.post("/api/v1/events", [{"user_id": "u", "product_id": p, "type": "view"} for p in ("a", "b")])
    first = train(store)

    def reads_artifact(queries: CaptureQueriesContext) -> list[str]:
        return [
            q["sql"]
            for q in queries
            if q["sql"].lstrip().upper().startswith("SELECT")
            and ('."artifact"' in q["sql"] or '."ranker_lessons"' in q["sql"])
        ]

    with CaptureQueriesContext(connection) as queries:
        assert api.get(f"/api/v1/training-runs/{first.id}").json()["status"] == "succeeded"
        assert admin_client.get(f"/admin/recommendations/trainingrun/{first.id}/change/").status_code == 200
        assert admin_client.get("/admin/recommendations/trainedmodel/").status_code == 200
        second = train(store)
        trained_model_activate(store=store, version=1)
    assert second.status == "succeeded"
    assert reads_artifact(queries) == []
