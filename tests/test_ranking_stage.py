"""The ranking stage (eBay's learning to rank): learned per store at training, guarded on the store's
validation split, serving for-user and rank; the features serving builds for a shopper equal those
training builds from the same events; variants can turn it off.

The planted store: twenty lines of 300 products each, every shopper loyal to one line and choosing its
products by their popularity in the line. Four views per shopper leave co-occurrence sparse, so the first
stage's candidates mix the shopper's line with what is popular anywhere; the line (a tag the ranker
reads) and popularity decide the next item, which only the ranker can weigh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from catalog.models import Product
from recommendations.artifacts import artifact_load
from recommendations.engine.ranker import FEATURES, FeatureSource, candidate_features, item_stats
from recommendations.engine.recommender import SequentialItemKNN
from recommendations.engine.two_stage import candidate_lists, neighbour_candidates
from recommendations.models import GlobalModel, TrainedModel, TrainingRun
from recommendations.selectors import trained_model_active
from recommendations.services import _load, training_options_clean, training_run_execute
from recommendations.serving import for_user as for_user_module
from recommendations.serving.state import serving_state
from tenants.models import StoreSettings
from tests.conftest import ApiClient, make_tenant, product
from tests.test_recommendations import train

LINES, PER_LINE, SHOPPERS, VIEWS = 20, 300, 2500, 4


def _catalog(prefix: str = "l", word: str = "Line") -> list[dict]:
    return [
        product(
            f"{prefix}{line}-{i}",
            title=f"{word} {line} item {i}",
            category_path=[f"{word} {line}"],
            price=5 + (7 * i + line) % 40,
        )
        for line in range(LINES)
        for i in range(PER_LINE)
    ]


def _events(shoppers: int = SHOPPERS, prefix: str = "l", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, PER_LINE + 1) ** 1.2
    weights /= weights.sum()
    start = datetime.now(tz=UTC) - timedelta(days=12)
    events = []
    for shopper in range(shoppers):
        line = int(rng.integers(LINES))
        chosen = rng.choice(PER_LINE, size=VIEWS, replace=False, p=weights)
        first = start + timedelta(days=float(rng.uniform(0, 9)))
        for step, item in enumerate(chosen.tolist()):
            at = (first + timedelta(hours=8 * step)).isoformat()
            events.append(
                {
                    "user_id": f"s{shopper}",
                    "product_id": f"{prefix}{line}-{item}",
                    "type": "view",
                    "timestamp": at,
                }
            )
    return events


@pytest.fixture
def ranked_store(api: ApiClient, store):  # noqa: ANN001, ANN201
    serving_state().clear()
    catalog = _catalog()
    for begin in range(0, len(catalog), 2000):
        assert api.post("/api/v1/products/bulk", catalog[begin : begin + 2000]).status_code in (200, 201)
    assert api.post("/api/v1/events", _events()).json()["rejected"] == 0
    run = train(store)
    assert run.status == "succeeded", run.message
    return run


def test_the_ranker_serves_where_it_beats_the_first_stage_and_source_says_so(
    ranked_store, api, store, admin_client
):
    figures = ranked_store.metrics["ranker"]
    assert figures["used"] is True, figures
    assert figures["two_stage"]["ndcg@10"] > figures["first_stage"]["ndcg@10"]
    assert figures["lessons"] >= 300 and figures["trees"] >= 1
    page = admin_client.get("/admin/recommendations/trainedmodel/").content.decode()
    assert "serves: its own (" in page  # the operator sees it serve, and its figures
    answer = api.get("/api/v1/users/s3/recommendations", limit=10).json()
    assert answer["source"] == "ranked:store-model:v1"
    scores = [item["score"] for item in answer["items"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True) and scores[-1] > 0
    seen = {event["product_id"] for event in _events() if event["user_id"] == "s3"}
    assert len(seen) == VIEWS and not seen & {item["id"] for item in answer["items"]}
    # each reason names the evidence: a product viewed, or the line the shopper browses
    line = sorted(seen)[0].split("-")[0][1:]
    for item in answer["items"]:
        assert item["reason"].startswith("because you showed interest in l") or item["reason"] == (
            f"popular in Line {line}, which you browse"
        ), item
    # a new shopper's one view of a product no shopper viewed before (no neighbours to name): the ranker
    # puts its line's popular products first, and says the line is why
    untouched = {event["product_id"] for event in _events()}
    tail = next(f"l3-{i}" for i in range(PER_LINE - 1, 0, -1) if f"l3-{i}" not in untouched)
    api.post("/api/v1/events", {"user_id": "newcomer", "product_id": tail, "type": "view"})
    fresh = api.get("/api/v1/users/newcomer/recommendations", limit=5).json()
    assert fresh["source"] == "ranked:store-model:v1"
    assert [item["reason"] for item in fresh["items"]] == ["popular in Line 3, which you browse"] * 5
    assert all(item["id"].startswith("l3-") for item in fresh["items"])
    # rank orders the given products with it too
    given = [item["id"] for item in answer["items"]][::-1] + ["l0-299", "missing"]
    ranked = api.post("/api/v1/users/s3/rank", {"product_ids": given}).json()
    assert ranked["source"] == "ranked:store-model:v1" and ranked["unknown_ids"] == ["missing"]
    assert sorted(item["id"] for item in ranked["items"]) == sorted(given[:-1])
    # a version trained without it serves the first stage, and says nothing of a ranker
    assert api.post("/api/v1/training-runs", {"ranker": "yes"}).json()["code"] == "invalid"
    run = TrainingRun.objects.create(store=store, options=training_options_clean({"ranker": False}))
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == "succeeded" and "ranker" not in run.metrics, run.message
    assert api.get("/api/v1/users/s3/recommendations").json()["source"] == "store-model:v2"


def test_features_served_equal_features_trained_for_the_same_shopper(ranked_store, api, store, monkeypatch):
    """The one feature function, fed online from the real-time profile and the loaded version, and offline
    from the events training reads and the same version's arrays, gives the same candidates and matrix;
    the served order is the ranker's order of them."""
    served: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    real = for_user_module.candidate_features

    def spy(source, sequence, candidates, stage, session=0):  # noqa: ANN001, ANN202
        features = real(source, sequence, candidates, stage, session)
        served.append((np.array(candidates), np.array(stage), features))
        return features

    monkeypatch.setattr(for_user_module, "candidate_features", spy)
    trained_on = _load(store, StoreSettings.objects.get(store=store)).interactions
    # mid-session, with something in the cart: the first stage alone would count the session twice and
    # pull in the cart's complements; under the ranker, the stage scores are the model's own, as offline
    mine = [event for event in _events() if event["user_id"] == "s11"]
    line = mine[0]["product_id"].split("-")[0]
    now = datetime.now(tz=UTC)
    for step, (item, kind) in enumerate(((f"{line}-40", "view"), (f"{line}-41", "add_to_cart"))):
        at = (now - timedelta(minutes=5 - step)).isoformat()
        event = {"user_id": "s11", "product_id": item, "type": kind, "session_id": "visit-1", "timestamp": at}
        assert api.post("/api/v1/events", event).status_code in (200, 201, 202)
    answer = api.get("/api/v1/users/s11/recommendations", limit=10).json()
    assert answer["source"].startswith("ranked:") and len(served) == 1
    online_candidates, online_stage, online = served[0]

    version = TrainedModel.objects.get(store=store, version=1)
    arrays = artifact_load(bytes(version.artifact))
    parameters = version.parameters
    first_stage = SequentialItemKNN(
        history_decay=parameters["history_decay"],
        repeat_weight=0.0,  # serving leaves repeats out: the store does not include purchases
        popularity_weight=parameters["popularity_weight"],
    )
    first_stage.neighbours_ = arrays["neighbours"]
    first_stage.popularity_ = np.asarray(arrays["popularity"])
    data = _load(store, StoreSettings.objects.get(store=store))
    assert np.array_equal(data.product_ids.ids, arrays["product_ids"])
    source = FeatureSource(
        arrays["similar"], arrays["transitions"], arrays["popularity"], arrays["counts"], arrays["tags"],
        arrays["arrivals"], arrays["prices"], arrays["stats"],
    )  # fmt: skip
    # the batch features are what training's own function gave for the events it read (not since)
    np.testing.assert_array_equal(arrays["stats"], item_stats(trained_on))
    assert arrays["stats"][:, 0].any() and arrays["stats"][:, 2].any()
    user = data.user_ids.positions(np.array(["s11"], dtype=object).astype(str))
    offline = candidate_lists(first_stage, data.interactions, user, source, exclude_seen=True)
    assert np.array_equal(offline.candidates[0], online_candidates)
    np.testing.assert_allclose(offline.features[0], online, rtol=1e-5, atol=1e-6)
    # the two events of visit-1 are the shopper's current session, in the profile as in the events
    assert set(online[:, FEATURES.index("session_length")].tolist()) == {2.0}
    # the answer is the ranker's order of those candidates
    row = trained_model_active(store=store)
    assert row is not None
    loaded = serving_state().residency.get(row)
    assert loaded is not None and loaded.ranker is not None
    ranker = loaded.ranker
    order = np.argsort(-ranker.predict(offline.features[0][:, : loaded.ranker_width]), kind="stable")
    expected = data.product_ids.ids[offline.candidates[0][order][:10]].tolist()
    names = dict(Product.objects.filter(store=store, id__in=expected).values_list("id", "external_id"))
    assert [item["id"] for item in answer["items"]] == [names[pid] for pid in expected]


def test_an_experiment_can_turn_the_ranker_off_for_its_variant(ranked_store, api, store):
    body = {
        "name": "ranker or not",
        "surface": "for_user",
        "variants": [
            {"name": "first-stage", "traffic": 0.5, "config": {"ranker": False}},
            {"name": "ranked", "traffic": 0.5, "config": {}},
        ],
    }
    assert api.post("/api/v1/experiments", body).status_code == 201
    sources = {}
    for n in range(30):
        answer = api.get(f"/api/v1/users/s{n}/recommendations", limit=5).json()
        sources[answer["variant"]] = answer["source"]
    assert sources == {
        "first-stage": "store-model:v1 (ranking stage off in this variant)",
        "ranked": "ranked:store-model:v1",
    }
    trending = {**body, "surface": "trending", "name": "no ranker on trending"}
    refused = api.post("/api/v1/experiments", trending)
    assert refused.status_code == 400, refused.json()
    assert "for_user, rank, related and complementary" in refused.json()["message"]
    # related: where training judged the stage better there, a variant can serve the matrix's order
    version = TrainedModel.objects.get(store=store, version=1)
    version.parameters["ranker_related"] = True
    version.save(update_fields=["parameters"])
    serving_state().clear()
    related = {**body, "surface": "related", "name": "ranker or not on related"}
    assert api.post("/api/v1/experiments", related).status_code == 201
    sources = {}
    for n in range(30):
        answer = api.get("/api/v1/products/l3-0/related", limit=5, user_id=f"s{n}").json()
        sources[answer["variant"]] = answer["source"]
    assert sources == {
        "first-stage": "store-model:v1 (ranking stage off in this variant)",
        "ranked": "ranked:store-model:v1",
    }


def test_a_small_sharing_store_is_ranked_by_the_network_s_ranker_when_it_helps(db, admin_client):
    """The network's ranker learns from the lesson samples of the stores that share (no product or shopper
    in them); a sharing store with too little history for its own judges it by the same guard. A store
    that does not share keeps no sample and gets none."""
    big = make_tenant("rank-big")
    big.api.patch("/api/v1/store", {"share_network": True})
    for begin in range(0, LINES * PER_LINE, 2000):
        big.api.post("/api/v1/products/bulk", _catalog()[begin : begin + 2000])
    assert big.api.post("/api/v1/events", _events()).json()["rejected"] == 0
    assert train(big.store).status == "succeeded"
    assert TrainedModel.objects.get(store=big.store).ranker_lessons  # a sample of its lessons, kept
    out = StringIO()
    call_command("train_global", stdout=out)
    network = GlobalModel.objects.get(is_active=True)
    assert network.ranker and network.metrics["ranker"]["stores"] == 1, network.metrics
    assert network.metrics["ranker"]["lessons"] >= 300
    page = admin_client.get("/admin/recommendations/globalmodel/").content.decode()
    assert "lessons of 1 stores" in page

    small_rows = _catalog("m", "Range")  # other titles: no product matched across the two stores
    small_events = _events(shoppers=150, prefix="m", seed=1)
    answers = {}
    for slug, share in (("rank-small", True), ("rank-alone", False)):
        small = make_tenant(slug)
        small.api.patch("/api/v1/store", {"share_network": share})
        for begin in range(0, len(small_rows), 2000):
            small.api.post("/api/v1/products/bulk", small_rows[begin : begin + 2000])
        assert small.api.post("/api/v1/events", small_events).json()["rejected"] == 0
        run = train(small.store)
        assert run.status == "succeeded", run.message
        assert run.metrics["ranker"]["lessons"] < 300  # too few to learn its own
        answers[slug] = (run, small.api.get("/api/v1/users/s5/recommendations", limit=5).json())
    run, answer = answers["rank-small"]
    assert run.metrics["ranker"]["from"] == "network" and run.metrics["ranker"]["used"] is True, run.metrics
    assert answer["source"] == f"ranked:store-model:v1 (ranker of global-model:v{network.version})"
    run, answer = answers["rank-alone"]
    assert "from" not in run.metrics["ranker"]
    assert answer["source"] == "store-model:v1 (no ranking stage: too little history to learn one)"
    assert TrainedModel.objects.get(store=run.store).ranker_lessons is None


def _bought_in_baskets(events: list[dict]) -> list[dict]:
    """The events, each shopper's last three views made purchases in one basket (a session)."""
    out, by_shopper = [], {}
    for event in events:
        by_shopper.setdefault(event["user_id"], []).append(event)
    for shopper, own in by_shopper.items():
        for step, event in enumerate(own):
            if step >= len(own) - 3:
                event = {**event, "type": "purchase", "session_id": f"order-{shopper}"}
            out.append(event)
    return out


@pytest.mark.parametrize(("surface", "path", "reason"), [
    ("related", "related", "shoppers who viewed l3-0 also viewed this"),
    ("complementary", "complementary", "bought together with l3-0"),
])  # fmt: skip
def test_related_and_complementary_answers_are_ranked_where_training_judged_the_ranker_better(
    surface, path, reason, api, store
):
    """Training judges the ranker on related and complementary items too (the product alone as the
    history, against the shoppers' next items); a version it judged better on a surface orders that
    surface's answers with it, and one it did not keeps the matrix's order."""
    serving_state().clear()
    catalog = _catalog()
    for begin in range(0, len(catalog), 2000):
        assert api.post("/api/v1/products/bulk", catalog[begin : begin + 2000]).status_code in (200, 201)
    assert api.post("/api/v1/events", _bought_in_baskets(_events())).json()["rejected"] == 0
    run = train(store)
    assert run.status == "succeeded" and run.metrics["ranker"]["used"], run.message
    judged = run.metrics["ranker"][surface]
    assert set(judged) == {"first_stage", "two_stage", "users", "used"} and judged["users"] > 100
    version = TrainedModel.objects.get(store=store, version=1)
    assert version.parameters[f"ranker_{surface}"] is judged["used"]
    names = dict(Product.objects.filter(store=store).values_list("id", "external_id"))
    for used, limit in ((True, 5), (False, 4)):  # (a limit of its own: not the other's cached answer)
        version.parameters[f"ranker_{surface}"] = used
        version.save(update_fields=["parameters"])
        serving_state().clear()
        answer = api.get(f"/api/v1/products/l3-0/{path}", limit=limit).json()
        row = trained_model_active(store=store)
        assert row is not None
        loaded = serving_state().residency.get(row)
        assert loaded is not None and loaded.ranker is not None and loaded.features is not None
        anchor = int(loaded.products.positions(np.array([names_to_id(store, "l3-0")]))[0])
        matrix = loaded.similar if surface == "related" else loaded.together
        top, stage = neighbour_candidates(matrix, anchor)
        assert top.size > limit
        if used:
            assert answer["source"] == "ranked:store-model:v1"
            features = candidate_features(loaded.features, np.array([anchor]), top, stage)
            top = top[np.argsort(-loaded.ranker.predict(features[:, : loaded.ranker_width]), kind="stable")]
        else:
            assert answer["source"] == "store-model:v1"
        expected = [names[pid] for pid in loaded.products.ids[top[:limit]]]
        assert [item["id"] for item in answer["items"]] == expected
        assert {item["reason"] for item in answer["items"]} == {reason}
        scores = [item["score"] for item in answer["items"]]
        assert scores == sorted(scores, reverse=True)


def names_to_id(store, external_id: str) -> int:  # noqa: ANN001
    return int(Product.objects.get(store=store, external_id=external_id).id)
