"""A/B experiments: variants assigned by a hash of (experiment, shopper), the same across aliases; answers
name their variant; results with intervals, lift and an always-valid verdict; stop and promote."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from core import experiments
from outcomes.experiments import msprt_p_value, wilson
from outcomes.models import Attribution, Experiment, Impression
from outcomes.services import impressions_drain, outcomes_rollup
from tests.conftest import ApiClient
from tests.test_recommendations import train, trained  # noqa: F401 - the fixture

A_B = {
    "name": "model against popularity",
    "surface": "for_user",
    "variants": [
        {"name": "control", "traffic": 0.5, "config": {"strategy": "popularity"}},
        {"name": "model", "traffic": 0.5, "config": {"strategy": "model"}},
    ],
}


A, B = {"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5}


def _start(api: ApiClient, body: dict = A_B) -> dict:
    response = api.post("/api/v1/experiments", body)
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"surface": "recently_viewed"}, "unsupported_surface"),
        ({"surface": "trending"}, "invalid_experiment"),  # (trending is popularity already)
        ({"variants": [A, {**B, "config": {"model_version": 99}}]}, "unknown_model_version"),
        ({"variants": [A, {**B, "config": {"model_version": "1"}}]}, "invalid_experiment"),
        ({"variants": [A, {**B, "config": {"strategy": "popularity", "model_version": 1}}]},
         "invalid_experiment"),
        ({"variants": [{"name": "a", "traffic": 1.0}]}, "invalid_experiment"),
        ({"variants": [{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.4}]}, "invalid_experiment"),
        ({"variants": [{"name": "a", "traffic": 0.5}, {"name": "a", "traffic": 0.5}]}, "invalid_experiment"),
        ({"variants": [A, {**B, "config": {"by": 1}}]}, "invalid_experiment"),
        ({"variants": [A, {**B, "config": {"strategy": 1}}]}, "invalid_experiment"),
        ({"name": ""}, "invalid_experiment"),
        ({"owner": "me"}, "unknown_field"),
    ],
)  # fmt: skip
def test_an_experiment_that_cannot_run_is_refused(api, change, code):
    response = api.post("/api/v1/experiments", {**A_B, **change})
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_one_experiment_runs_per_surface(api):
    first = _start(api)
    assert first["status"] == "running" and first["variants"][0]["name"] == "control"
    again = api.post("/api/v1/experiments", A_B)
    assert again.status_code == 409
    assert again.json()["code"] == "experiment_running"
    assert again.json()["details"]["experiment_id"] == first["id"]
    assert [e["id"] for e in api.get("/api/v1/experiments").json()] == [first["id"]]
    assert api.get("/api/v1/experiments/999999").status_code == 404


def test_shoppers_are_split_by_their_share_and_keep_their_variant_across_aliases(trained, api):  # noqa: F811
    experiment = _start(api)
    variants = {}
    for n in range(120):
        answer = api.get(f"/api/v1/users/u{n}/recommendations", limit=3).json()
        assert answer["experiment"] == experiment["id"]
        variants[f"u{n}"] = answer["variant"]
        if answer["variant"] == "control":
            assert "popularity" in answer["source"]
        else:
            assert answer["source"].startswith("store-model")
    shares = sum(v == "control" for v in variants.values())
    assert 40 <= shares <= 80  # half of 120, give or take 3.7 standard deviations
    # the same shopper again, and the same shopper through an alias: the same variant
    assert api.get("/api/v1/users/u7/recommendations", limit=2).json()["variant"] == variants["u7"]
    assert api.post("/api/v1/users/u7/aliases", {"alias_id": "u7-phone"}).status_code == 201
    assert api.get("/api/v1/users/u7-phone/recommendations", limit=2).json()["variant"] == variants["u7"]
    plan = experiments.plan_for(trained.store_id, "for_user")
    assert plan is not None and experiments.assign(plan, "u7").name == variants["u7"]


def test_results_count_each_variant_with_intervals_and_lift(trained, api):  # noqa: F811
    experiment = _start(api)
    clicked = {}
    for n in range(40):
        answer = api.get(f"/api/v1/users/s{n}/recommendations", limit=3).json()
        if n % 2:  # every other shopper clicks the first item shown
            click = {"user_id": f"s{n}", "product_id": answer["items"][0]["id"], "type": "click"}
            api.post("/api/v1/events", {**click, "recommendation_id": answer["recommendation_id"]})
            clicked[answer["variant"]] = clicked.get(answer["variant"], 0) + 1
    impressions_drain()
    outcomes_rollup(lag_seconds=0)
    body = api.get(f"/api/v1/experiments/{experiment['id']}").json()
    results = {r["variant"]: r for r in body["results"]}
    assert sum(r["impressions"] for r in results.values()) == 40
    assert sum(r["users"] for r in results.values()) == 40
    for name, row in results.items():
        assert row["clicks"] == clicked.get(name, 0)
        assert row["ctr"] == row["clicks"] / row["impressions"]
        low, high = row["ctr_interval"]
        assert low <= row["ctr"] <= high
    assert results["control"]["control"] and results["control"]["lift_vs_control"] is None
    control_ctr = results["control"]["ctr"]
    assert results["model"]["lift_vs_control"] == pytest.approx(results["model"]["ctr"] / control_ctr - 1)
    assert body["verdict"]["decision"] == "undecided"  # 40 shoppers tell nothing


def test_a_clear_difference_is_significant_and_the_least_p_value_is_kept(api, store):
    experiment = Experiment.objects.create(
        store=store, name="x", surface="for_user", variants=A_B["variants"]
    )
    now = datetime.now(tz=UTC)
    for variant, clicks in (("control", 100), ("model", 220)):  # CTR 5% against 11%, 2,000 each
        Impression.objects.bulk_create(
            Impression(recommendation_id=f"{variant}-{n}", store=store, surface="for_user",
                       user_id=f"{variant}{n}", variant=variant, items=["p"], served_at=now,
                       experiment_id=experiment.pk)
            for n in range(2000)
        )  # fmt: skip
        Attribution.objects.bulk_create(
            Attribution(event_id=hash((variant, n)) % 2**62, store=store, kind="direct", type=2,
                        recommendation_id=f"{variant}-{n}", surface="for_user", variant=variant, position=0,
                        user_id=f"{variant}{n}", product_id="p", date=now.date())
            for n in range(clicks)
        )  # fmt: skip
    body = api.get(f"/api/v1/experiments/{experiment.pk}").json()
    model = next(r for r in body["results"] if r["variant"] == "model")
    assert model["significant"] and model["p_value"] < 0.05
    assert model["lift_vs_control"] == pytest.approx(1.2)
    assert body["verdict"] == {
        "decision": "variant_wins",
        "variant": "model",
        "message": body["verdict"]["message"],
    }
    experiment.refresh_from_db()
    kept = experiment.p_values["model"]
    # the difference fades (clicks erased with their shoppers): the p-value shown stays the least seen
    Attribution.objects.filter(recommendation_id__in=[f"model-{n}" for n in range(100, 220)]).delete()
    again = api.get(f"/api/v1/experiments/{experiment.pk}").json()
    assert next(r for r in again["results"] if r["variant"] == "model")["p_value"] == round(kept, 6)


def test_stop_and_promote(trained, api, tenant):  # noqa: F811
    experiment = _start(api)
    reader = tenant.client_with_scopes("read", "write")
    assert reader.post(f"/api/v1/experiments/{experiment['id']}/stop").status_code == 403
    stopped = api.post(f"/api/v1/experiments/{experiment['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert api.post(f"/api/v1/experiments/{experiment['id']}/stop").json()["code"] == "experiment_not_running"
    answer = api.get("/api/v1/users/u1/recommendations").json()
    assert "variant" not in answer and answer["source"].startswith("store-model")  # back to the default
    assert api.post(f"/api/v1/experiments/{experiment['id']}/promote", {"variant": "nope"}).status_code == 400
    promoted = api.post(f"/api/v1/experiments/{experiment['id']}/promote", {"variant": "control"})
    assert promoted.status_code == 200
    assert (promoted.json()["status"], promoted.json()["winner"]) == ("promoted", "control")
    answer = api.get("/api/v1/users/u1/recommendations").json()
    assert "variant" not in answer and "popularity" in answer["source"]  # the winner is the default now
    assert (
        api.post(f"/api/v1/experiments/{experiment['id']}/promote", {"variant": "model"}).status_code == 409
    )
    # and a new experiment may run on the surface again
    assert api.post("/api/v1/experiments", A_B).status_code == 201


def test_interval_and_sequential_test_figures():
    assert wilson(0, 0) is None
    low, high = wilson(50, 1000)  # type: ignore[misc]
    assert low == pytest.approx(0.0381, abs=1e-4) and high == pytest.approx(0.0653, abs=1e-4)
    # no difference: no evidence, however much data; a real one: more evidence with more data
    assert msprt_p_value(50, 1000, 50, 1000) == 1.0
    small, large = msprt_p_value(60, 1000, 50, 1000), msprt_p_value(600, 10000, 500, 10000)
    assert large < small <= 1.0
    assert math.isclose(msprt_p_value(0, 0, 5, 10), 1.0)


def test_a_variant_may_test_a_diversity_setting(trained, api):  # noqa: F811
    body = {
        "name": "one per category",
        "surface": "for_user",
        "variants": [
            {"name": "control", "traffic": 0.5, "config": {"strategy": "model"}},
            {"name": "diverse", "traffic": 0.5, "config": {"max_per_category": 1.0, "diversity": 0.5}},
        ],
    }
    experiment = _start(api, body)
    assert experiment["variants"][1]["config"] == {
        "strategy": "model",
        "diversity": 0.5,
        "max_per_category": 1,
    }
    seen = {"control": 0, "diverse": 0}
    for n in range(40):
        answer = api.get(f"/api/v1/users/u{n}/recommendations", limit=6).json()
        seen[answer["variant"]] += 1
        if answer["variant"] == "diverse":
            categories = ["Alpha" if int(item["id"][1:]) < 10 else "Beta" for item in answer["items"]]
            assert len(categories) == len(set(categories))  # one item of each category at most
    assert seen["control"] and seen["diverse"]
    bad = {
        **body,
        "variants": [body["variants"][0], {"name": "x", "traffic": 0.5, "config": {"diversity": 2}}],
    }
    assert api.post("/api/v1/experiments", bad).status_code == 400  # (checked before the running one)


def test_product_surfaces_and_trending_split_the_shoppers_named_in_the_query(trained, api):  # noqa: F811
    experiment = _start(api, {**A_B, "surface": "related"})
    variants = {}
    for n in range(30):
        answer = api.get("/api/v1/products/p1/related", user_id=f"q{n}", limit=4).json()
        assert answer["experiment"] == experiment["id"]
        variants[f"q{n}"] = answer["variant"]
        if answer["variant"] == "control":
            assert "popularity control" in answer["source"]
        else:
            assert answer["source"].startswith("store-model")
    assert set(variants.values()) == {"control", "model"}
    # the same shopper keeps their variant (a cached answer too), across aliases as well
    for _ in range(2):
        again = api.get("/api/v1/products/p1/related", user_id="q3", limit=4).json()
        assert again["variant"] == variants["q3"]
    assert api.post("/api/v1/users/q3/aliases", {"alias_id": "q3-app"}).status_code == 201
    assert api.get("/api/v1/products/p1/related", user_id="q3-app").json()["variant"] == variants["q3"]
    # no shopper named: no variant, the surface's default
    plain = api.get("/api/v1/products/p1/related", limit=4).json()
    assert "variant" not in plain and plain["source"].startswith("store-model")
    assert api.get("/api/v1/products/p1/related", user_id="x" * 257).status_code == 400
    # the impressions name the shopper, so results count them per variant
    impressions_drain()
    rows = Impression.objects.filter(experiment_id=experiment["id"])
    assert {row.user_id for row in rows} >= set(variants)
    assert {row.user_id: row.variant for row in rows if row.user_id in variants} == variants
    results = api.get(f"/api/v1/experiments/{experiment['id']}").json()["results"]
    assert sum(r["users"] for r in results) == len(variants) + 1  # (q3-app is q3's alias: its own id)

    # complementary and rank take part too; trending tests the model version or diversity, not strategy
    complementary = _start(api, {**A_B, "surface": "complementary"})
    for n in range(10):
        answer = api.get("/api/v1/products/p1/complementary", user_id=f"q{n}").json()
        assert answer["experiment"] == complementary["id"]
        assert ("popularity control" in answer["source"]) == (answer["variant"] == "control")
    ranked = _start(api, {**A_B, "surface": "rank"})
    for n in range(10):
        answer = api.post(f"/api/v1/users/q{n}/rank", {"product_ids": ["p1", "p2", "p3"]}).json()
        assert answer["experiment"] == ranked["id"]
        assert ("popularity" in answer["source"]) == (answer["variant"] == "control")


def test_a_variant_may_serve_another_version_of_the_model(trained, api, store):  # noqa: F811
    second = train(store)
    assert second.status == "succeeded"
    versions = {row["version"]: row["is_active"] for row in api.get("/api/v1/models").json()["items"]}
    active = next(version for version, is_active in versions.items() if is_active)
    other = next(version for version in versions if version != active)
    body = {
        "name": "candidate against active",
        "surface": "trending",
        "variants": [
            {"name": "active", "traffic": 0.5, "config": {}},
            {"name": "candidate", "traffic": 0.5, "config": {"model_version": other}},
        ],
    }
    experiment = _start(api, body)
    assert experiment["variants"][1]["config"] == {"strategy": "model", "model_version": other}
    seen = set()
    for n in range(30):
        answer = api.get("/api/v1/trending", user_id=f"t{n}").json()
        version = active if answer["variant"] == "active" else other
        assert f"store-model:v{version}" in answer["source"]
        seen.add(answer["variant"])
    assert seen == {"active", "candidate"}
