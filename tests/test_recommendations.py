"""Training through the API and the v1 recommendation surfaces, on planted structure:
viewers of p(2k) go on to p(2k+1); shoppers buy p4 and p5 together; p18 and p19 have no events."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from catalog.models import Product
from events.profiles import History, profile_entry
from events.selectors import user_history
from recommendations.models import TrainedModel, TrainingRun
from recommendations.replay import replay_execute, top_for_user
from recommendations.services import training_run_create, training_run_execute
from recommendations.serving.state import serving_state
from tenants.selectors import store_settings_get
from tests.conftest import product

CATALOG = [
    product(f"p{i}", category_path=["Alpha" if i < 10 else "Beta"], brand="Acme" if i % 2 else "Bolt",
            price=10 + i, title=f"{'Garden hose' if i in (16, 18) else 'Item'} {i}")
    for i in range(20)
]  # fmt: skip


def planted_events(users: int = 120) -> list[dict]:
    start = datetime.now(tz=UTC) - timedelta(days=10)
    events = []
    for user in range(users):
        first = 2 * (user % 8)  # 0, 2, ..., 14
        moment = start + timedelta(minutes=user)
        for step, item in enumerate([first, first + 1, (first + 2) % 16, (first + 3) % 16]):
            events.append({"user_id": f"u{user}", "product_id": f"p{item}", "type": "view",
                           "timestamp": (moment + timedelta(seconds=10 * step)).isoformat()})  # fmt: skip
        if user % 3 == 0:
            bought = (moment + timedelta(minutes=1)).isoformat()
            for item in (4, 5):
                events.append({"user_id": f"u{user}", "product_id": f"p{item}", "type": "purchase",
                               "session_id": f"order-{user}", "timestamp": bought})  # fmt: skip
    return events


def train(store) -> TrainingRun:
    run = TrainingRun.objects.create(store=store)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    return run


@pytest.fixture
def trained(api, store):
    serving_state().clear()
    api.post("/api/v1/products/bulk", CATALOG)
    assert api.post("/api/v1/events", planted_events()).json()["rejected"] == 0
    run = train(store)
    assert run.status == "succeeded", run.message
    return run


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["items"]]


def test_post_training_run_queues_on_commit_and_answers_202(api, store, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post("/api/v1/training-runs")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert len(callbacks) == 1  # the task is sent only after the run row is committed
    # a second request while one is open is refused by the database constraint
    again = api.post("/api/v1/training-runs")
    assert again.status_code == 409
    assert again.json()["code"] == "training_in_progress"
    assert again.json()["details"]["run_id"] == body["id"]


def test_training_run_reports_metrics_and_activates(trained, api):
    body = api.get(f"/api/v1/training-runs/{trained.id}").json()
    assert body["status"] == "succeeded"
    assert body["progress"] == 1.0
    assert body["model_version"] == 1 and body["model_active"] is True
    assert {"recall@10", "ndcg@10", "hit@10", "coverage", "users"} <= set(body["metrics"])
    assert body["metrics"]["hit@10"] > 0.5


def test_running_a_run_twice_does_the_work_once(trained, store):
    assert training_run_execute(run_id=trained.id) is None
    assert TrainedModel.objects.filter(store=store).count() == 1


def test_for_user_follows_the_latest_event(trained, api):
    # u0 viewed p0, p1, p2, p3; the freshest signal is p3 -> p4 ... but p4 may be bought; check shape first
    response = api.get("/api/v1/users/u0/recommendations", limit=3)
    body = response.json()
    assert body["source"].startswith("store-model:v1 (no ranking stage: ")
    assert len(body["items"]) == 3 and body["recommendation_id"]
    assert all(item["reason"] for item in body["items"])
    # a new shopper views p6 now: the next answer leads with p7
    api.post("/api/v1/events", {"user_id": "fresh", "product_id": "p6", "type": "view"})
    items = api.get("/api/v1/users/fresh/recommendations", limit=3).json()["items"]
    assert items[0]["id"] == "p7"
    assert items[0]["reason"] == "because you showed interest in p6"
    # and another view moments later changes it again
    api.post("/api/v1/events", {"user_id": "fresh", "product_id": "p10", "type": "view"})
    assert ids(api.get("/api/v1/users/fresh/recommendations", limit=1)) == ["p11"]


def test_purchased_items_are_excluded_unless_asked(trained, api, store):
    api.post("/api/v1/events", [{"user_id": "buyer", "product_id": "p6", "type": "view"},
                                {"user_id": "buyer", "product_id": "p7", "type": "purchase"}])  # fmt: skip
    assert "p7" not in ids(api.get("/api/v1/users/buyer/recommendations", limit=10))
    assert "p7" in ids(api.get("/api/v1/users/buyer/recommendations", limit=10, include_purchased="true"))
    api.patch("/api/v1/store", {"include_purchased": True})
    assert "p7" in ids(api.get("/api/v1/users/buyer/recommendations", limit=10))


def test_unknown_user_gets_trending(trained, api):
    body = api.get("/api/v1/users/stranger/recommendations", limit=5).json()
    assert body["source"].startswith("trending:store-model:v1")
    assert len(body["items"]) == 5


def test_no_model_falls_back_to_popularity(api, store):
    api.post("/api/v1/products/bulk", CATALOG)
    api.post("/api/v1/events", [{"user_id": f"u{i}", "product_id": "p3", "type": "view"} for i in range(3)])
    body = api.get("/api/v1/users/u1/recommendations").json()
    assert body["source"].startswith("fallback:popularity")
    assert body["items"][0]["id"] == "p3"


@pytest.mark.parametrize("blob", [b"not an npz", b"", b"PK\x03\x04 a torn zip"])
def test_broken_model_falls_back(trained, api, store, blob):
    TrainedModel.objects.filter(store=store).update(artifact=blob)
    serving_state().clear()
    shutil.rmtree(settings.MODEL_CACHE_DIR, ignore_errors=True)  # artifacts never change in place
    body = api.get("/api/v1/users/u0/recommendations").json()
    assert body["source"].startswith("fallback:")
    assert api.get("/api/v1/products/p0/related").status_code == 200


def test_related_uses_neighbours_and_content(trained, api):
    body = api.get("/api/v1/products/p0/related", limit=3).json()
    assert body["items"][0]["id"] == "p1"
    assert "p0" not in [item["id"] for item in body["items"]]
    # p18 had no events: content similarity answers ("Garden hose" like p16)
    assert ids(api.get("/api/v1/products/p18/related", limit=1)) == ["p16"]


def test_related_of_a_product_added_after_training(trained, api):
    api.put("/api/v1/products/new", {"title": "Brand new", "category_path": ["Beta"]})
    body = api.get("/api/v1/products/new/related", limit=3).json()
    assert "product not in the model" in body["source"]
    assert body["items"] and all(int(i["id"][1:]) >= 10 for i in body["items"])


def test_related_of_a_missing_product_is_404(trained, api):
    assert api.get("/api/v1/products/nope/related").status_code == 404
    assert api.get("/api/v1/products/p0/related", scope="galaxy").json()["code"] == "unsupported_scope"


def test_complementary_finds_the_bundle(trained, api):
    body = api.get("/api/v1/products/p4/complementary", limit=3).json()
    assert body["items"][0]["id"] == "p5"
    assert body["items"][0]["reason"] == "bought together with p4"


def test_trending_and_category_filter(trained, api):
    assert len(ids(api.get("/api/v1/trending", limit=5))) == 5
    beta = ids(api.get("/api/v1/trending", limit=20, category="Beta"))
    assert beta and all(int(i[1:]) >= 10 for i in beta)


def test_filters(trained, api):
    api.patch("/api/v1/products/p7", {"in_stock": False})
    api.post("/api/v1/events", {"user_id": "f", "product_id": "p6", "type": "view"})
    assert "p7" not in ids(api.get("/api/v1/users/f/recommendations", in_stock="true"))
    cheap = ids(api.get("/api/v1/trending", limit=20, max_price="14"))
    assert cheap and all(int(i[1:]) <= 4 for i in cheap)
    assert "p1" not in ids(api.get("/api/v1/products/p0/related", exclude="p1,p2"))
    assert all(int(i[1:]) % 2 == 1 for i in ids(api.get("/api/v1/trending", limit=20, brand="Acme")))


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "1000"}, {"min_price": "-1"}, {"in_stock": "perhaps"}, {"diversity": "2"}],
)
def test_bad_options_are_400(trained, api, query):
    response = api.get("/api/v1/trending", **query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"


def test_inactive_products_are_never_recommended(trained, api):
    api.delete("/api/v1/products/p1")
    assert "p1" not in ids(api.get("/api/v1/products/p0/related", limit=20))
    assert "p1" not in ids(api.get("/api/v1/trending", limit=20))
    api.post("/api/v1/events", {"user_id": "g", "product_id": "p0", "type": "view"})
    assert "p1" not in ids(api.get("/api/v1/users/g/recommendations", limit=20))


def test_diversity_cap_and_mmr(trained, api):
    capped = api.get("/api/v1/trending", limit=5, max_per_category=1).json()["items"]
    assert len(capped) == 2  # one per category: Alpha and Beta
    mmr = ids(api.get("/api/v1/trending", limit=5, diversity="0.9"))
    assert len(mmr) == 5 and len(set(mmr)) == 5


def test_pins_and_boosts_from_store_settings(trained, api):
    api.patch("/api/v1/store", {"pins": {"trending": [{"id": "p19", "position": 0}]}})
    body = api.get("/api/v1/trending", limit=3).json()
    assert body["items"][0] == {
        "id": "p19",
        "score": body["items"][0]["score"],
        "reason": "pinned by the merchant",
    }
    api.patch("/api/v1/store", {"pins": {}, "boosts": {"product": {"p15": 1000.0}}})
    assert ids(api.get("/api/v1/trending", limit=1)) == ["p15"]


def test_rank_orders_the_given_products(trained, api):
    api.post("/api/v1/events", {"user_id": "r", "product_id": "p8", "type": "view"})
    response = api.post("/api/v1/users/r/rank", {"product_ids": ["p13", "p9", "ghost"]})
    body = response.json()
    assert [item["id"] for item in body["items"]] == ["p9", "p13"]
    assert body["unknown_ids"] == ["ghost"]
    assert api.post("/api/v1/users/r/rank", {"product_ids": "p1"}).status_code == 400


def test_versions_activate_and_roll_back(trained, api, store, tenant):
    second = train(store)
    assert second.model.version == 2
    assert api.get("/api/v1/users/u0/recommendations").json()["source"].startswith("store-model:v2")
    reader = tenant.client_with_scopes("read", "write")
    assert reader.post("/api/v1/models/1/activate").status_code == 403
    response = api.post("/api/v1/models/1/activate")
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert api.get("/api/v1/users/u0/recommendations").json()["source"].startswith("store-model:v1 ")
    assert [m["is_active"] for m in api.get("/api/v1/models").json()["items"]] == [False, True]
    assert api.post("/api/v1/models/9/activate").status_code == 404


def test_a_clearly_worse_version_is_kept_but_not_activated(trained, store):
    # the active version claims a figure no new version can reach (the planted data is near perfect)
    TrainedModel.objects.filter(store=store).update(metrics={"ndcg@10": 1.2, "users": 1000})
    run = train(store)
    assert run.status == "succeeded"
    assert "kept but not activated" in run.message, (run.message, run.metrics)
    assert TrainedModel.objects.get(store=store, is_active=True).version == 1


def test_schedule_enqueues_due_stores_only(trained, store, other_store, django_capture_on_commit_callbacks):
    from recommendations.services import scheduled_training_enqueue

    TrainingRun.objects.filter(store=store).update(created_at=datetime.now(tz=UTC) - timedelta(days=2))
    with django_capture_on_commit_callbacks(execute=False):
        assert scheduled_training_enqueue() == 1  # the other store has no events
    assert TrainingRun.objects.filter(store=store, status="queued", trigger="schedule").count() == 1
    with django_capture_on_commit_callbacks(execute=False):
        assert scheduled_training_enqueue() == 0  # just queued


def test_training_run_create_service_is_store_scoped(store, other_store, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        training_run_create(store=store)
        training_run_create(store=other_store)  # one open run per store, not per system
    assert TrainingRun.objects.count() == 2


def test_a_training_run_may_keep_its_version_as_a_candidate(trained, api, django_capture_on_commit_callbacks):
    for bad in (
        {"activate": "no"},
        {"global_share": 2},
        {"global_share": True},
        {"global_share": None},
        {"epochs": 3},
        [1],
    ):
        response = api.post("/api/v1/training-runs", bad)
        assert response.status_code == 400, bad
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post("/api/v1/training-runs", {"activate": False, "global_share": 0.25})
    assert response.status_code == 202
    assert response.json()["options"] == {"activate": False, "global_share": 0.25}
    training_run_execute(run_id=response.json()["id"])
    run = api.get(f"/api/v1/training-runs/{response.json()['id']}").json()
    assert run["status"] == "succeeded" and run["model_version"] == 2 and run["model_active"] is False
    assert "candidate" in run["message"]
    versions = {row["version"]: row["is_active"] for row in api.get("/api/v1/models").json()["items"]}
    assert versions == {1: True, 2: False}  # the first stays active; the candidate is kept


def test_a_candidate_is_replayed_on_recent_events_against_the_active_version(
    trained, api, store, tenant, django_capture_on_commit_callbacks
):
    # the replay's answer to a shopper's whole history is the for-user answer serving gives them
    serving_state().clear()
    model = serving_state().loaded(store, None).model
    assert model is not None
    rows = user_history(store=store, user_id="u3", limit=200)
    history = History.from_entries([profile_entry(r.id, r.product_id, r.type, r.session_id, r.timestamp)
                                    for r in rows])  # fmt: skip
    served = ids(api.get("/api/v1/users/u3/recommendations", limit=10))
    replayed = top_for_user(model, store_settings_get(store=store), history, 10)
    external = dict(Product.objects.filter(store=store).values_list("id", "external_id"))
    assert [external[pid] for pid in replayed.tolist()] == served

    with django_capture_on_commit_callbacks(execute=False):
        run = api.post("/api/v1/training-runs", {"activate": False}).json()
    training_run_execute(run_id=run["id"])
    reader = tenant.client_with_scopes("read", "write")
    assert reader.post("/api/v1/models/2/replay", {"days": 30}).status_code == 403
    assert api.post("/api/v1/models/2/replay", {"days": 0}).status_code == 400
    assert api.post("/api/v1/models/9/replay").status_code == 404
    with django_capture_on_commit_callbacks(execute=False) as sent:
        queued = api.post("/api/v1/models/2/replay", {"days": 30, "max_events": 100})
    assert queued.status_code == 202 and queued.json()["replay"]["status"] == "queued"
    assert len(sent) == 1  # the task goes once the request commits
    assert api.post("/api/v1/models/2/replay", {"days": 30}).json()["code"] == "replay_in_progress"
    candidate = TrainedModel.objects.get(store=store, version=2)
    result = replay_execute(model_id=candidate.pk)
    assert result is not None and replay_execute(model_id=candidate.pk) is None  # delivered twice: once
    replay = {row["version"]: row for row in api.get("/api/v1/models").json()["items"]}[2]["replay"]
    assert replay["status"] == "succeeded", replay
    assert replay["candidate"]["version"] == 2 and replay["active"]["version"] == 1
    # 120 shoppers' views after their first (540 targets in the window), sampled down to 100
    assert replay["events_in_window"] > 100 and replay["events"] == 100
    for side in ("candidate", "active"):
        figures = replay[side]
        assert 0 < figures["hit@10"] <= 1 and 0 < figures["ndcg@10"] <= figures["hit@10"]
        assert figures["seen_in_training"] == 1.0  # both were trained on the whole window
    # the same events and data: the same figures for both versions
    assert replay["candidate"]["hit@10"] == replay["active"]["hit@10"]
