"""The operator console: lists open, a new key is shown once, keys are revoked, models rolled back."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from outcomes.services import impressions_drain, outcomes_rollup
from recommendations.models import TrainedModel
from recommendations.replay import replay_execute
from tenants.models import ApiKey


@pytest.fixture
def operator(db):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tenants/store/",
        "/admin/tenants/apikey/",
        "/admin/catalog/product/",
        "/admin/events/event/",
        "/admin/recommendations/trainingrun/",
        "/admin/recommendations/trainedmodel/",
        "/admin/outcomes/impression/",
        "/admin/outcomes/experiment/",
    ],
)
def test_lists_open(operator, tenant, path):
    assert operator.get(path).status_code == 200


def test_adding_a_key_shows_it_once_and_stores_a_hash(operator, store):
    response = operator.post(
        "/admin/tenants/apikey/add/", {"store": store.id, "name": "ops", "scopes": "read"}, follow=True
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "shown this once" in str(m)]
    assert len(shown) == 1
    raw_key = shown[0].rsplit(" ", 1)[-1]
    key = ApiKey.objects.get(store=store, name="ops")
    assert key.scopes == ["read"]
    assert raw_key.startswith(f"rk_{key.prefix}_") and raw_key not in key.hashed_secret


def test_revoke_action(operator, tenant):
    key = ApiKey.objects.get(store=tenant.store)
    operator.post("/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [key.id]})
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert tenant.api.get("/api/v1/store").status_code == 401


def test_rollback_action(operator, store):
    old = TrainedModel.objects.create(store=store, version=1, artifact=b"")
    TrainedModel.objects.create(store=store, version=2, artifact=b"", is_active=True)
    operator.post(
        "/admin/recommendations/trainedmodel/", {"action": "activate", "_selected_action": [old.id]}
    )
    assert TrainedModel.objects.get(store=store, is_active=True).version == 1


def test_store_dashboard_charts_runs_and_train_now(operator, api, store, django_capture_on_commit_callbacks):
    from tests.test_recommendations import CATALOG, planted_events, train

    api.post("/api/v1/products/bulk", CATALOG)
    api.post("/api/v1/events", planted_events(30))
    train(store)
    # an answer shown and clicked today: the business charts have a point, the version a marker
    answer = api.get("/api/v1/users/u1/recommendations", limit=3).json()
    click = {"user_id": "u1", "product_id": answer["items"][0]["id"], "type": "click"}
    api.post("/api/v1/events", {**click, "recommendation_id": answer["recommendation_id"]})
    impressions_drain()
    outcomes_rollup(lag_seconds=0)
    page = operator.get(f"/admin/tenants/store/{store.id}/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" width=') == 5
    assert "events per day" in html and "NDCG@10" in html
    assert "click-through rate per day and surface" in html and "attributed revenue per day" in html
    assert "for_user" in html and 'stroke-dasharray="3,3"' in html  # the series, and v1's marker
    assert "succeeded" in html and "v1" in html
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = operator.post(f"/admin/tenants/store/{store.id}/train/")
    assert response.status_code == 302 and len(queued) == 1
    assert "cdn" not in html.lower()
    # a replay queued from the versions' list, its figures shown beside the version
    version = TrainedModel.objects.get(store=store, version=1)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        operator.post(
            "/admin/recommendations/trainedmodel/", {"action": "replay", "_selected_action": [version.id]}
        )
    assert len(queued) == 1
    replay_execute(model_id=version.pk)
    html = operator.get(f"/admin/tenants/store/{store.id}/dashboard/").content.decode()
    version.refresh_from_db()
    assert (
        f"{version.replay['candidate']['ndcg@10']:.4f} on {version.replay['events']} events of 7 days" in html
    )


def test_toggle_network_sharing_action(operator, store, api):
    operator.post(
        "/admin/tenants/store/", {"action": "toggle_network_sharing", "_selected_action": [store.id]}
    )
    assert api.get("/api/v1/store").json()["settings"]["share_network"] is True


def test_experiments_show_their_results_and_are_stopped_and_promoted_from_the_admin(operator, api):
    from outcomes.models import Experiment

    body = {"name": "pop", "surface": "for_user", "variants": [
        {"name": "control", "traffic": 0.5, "config": {"strategy": "popularity"}},
        {"name": "model", "traffic": 0.5}]}  # fmt: skip
    experiment_id = api.post("/api/v1/experiments", body).json()["id"]
    page = operator.get(f"/admin/outcomes/experiment/{experiment_id}/change/")
    assert page.status_code == 200
    assert b"CTR [95%]" in page.content and b"no difference in CTR is significant yet" in page.content
    url = "/admin/outcomes/experiment/"
    response = operator.post(
        url, {"action": "promote_winner", "_selected_action": [experiment_id]}, follow=True
    )
    assert "nothing promoted" in " ".join(str(m) for m in response.context["messages"])
    operator.post(url, {"action": "stop", "_selected_action": [experiment_id]})
    assert Experiment.objects.get(pk=experiment_id).status == "stopped"
    assert api.get(f"/api/v1/experiments/{experiment_id}").json()["status"] == "stopped"
