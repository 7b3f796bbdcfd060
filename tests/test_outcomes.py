"""Attribution and business figures: clicks, add-to-carts and purchases citing an answer are credited to
its surface, variant, model version and the item's position; purchases without an id of an item shown
lately are view-through; the daily figures add up impressions and both, once; GET /api/v1/analytics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outcomes.models import Attribution, DailyMetric
from outcomes.services import impressions_drain, outcomes_rollup
from tests.conftest import product

CATALOG = [product(f"p{i}", price=10 + i) for i in range(8)]


@pytest.fixture
def shop(api):
    api.post("/api/v1/products/bulk", CATALOG)
    # views, so that trending has an order: p0 most viewed, then p1, ...
    views = [
        {"user_id": f"v{n}", "product_id": f"p{i}", "type": "view"} for i in range(8) for n in range(8 - i)
    ]
    assert api.post("/api/v1/events", views).json()["rejected"] == 0
    return api


def _event(kind: str, item: str, rid: str | None = None, user: str = "buyer", **fields) -> dict:
    body = {"user_id": user, "product_id": item, "type": kind, **fields}
    if rid is not None:
        body["recommendation_id"] = rid
    return body


def _today() -> str:
    return datetime.now(tz=UTC).date().isoformat()


def test_events_citing_an_answer_are_credited_once_with_position_and_revenue(shop):
    answer = shop.get("/api/v1/trending", limit=3).json()
    rid, shown = answer["recommendation_id"], [item["id"] for item in answer["items"]]
    assert len(shown) == 3
    assert impressions_drain() == 1
    events = [
        _event("click", shown[1], rid),
        _event("add_to_cart", shown[1], rid),
        _event("purchase", shown[1], rid, quantity=2, price=7.5),  # the event's price: 15.00
        _event("purchase", shown[2], rid),  # the catalog's price
        _event("click", "p7" if "p7" not in shown else "p6", rid),  # not in that answer: not credited
        _event("click", shown[0], "not-an-answer"),  # no such answer: not credited
        _event("view", shown[0], rid),  # a view is not an outcome
    ]
    assert shop.post("/api/v1/events", events).json()["accepted"] == len(events)
    assert outcomes_rollup(lag_seconds=0) == 4
    assert outcomes_rollup(lag_seconds=0) == 0  # once
    credited = Attribution.objects.order_by("event_id")
    assert [(a.kind, a.type, a.position, a.surface, a.source) for a in credited] == [
        ("direct", 2, 1, "trending", answer["source"]),
        ("direct", 3, 1, "trending", answer["source"]),
        ("direct", 6, 1, "trending", answer["source"]),
        ("direct", 6, 2, "trending", answer["source"]),
    ]
    catalog_price = 10 + int(shown[2][1:])
    body = shop.get("/api/v1/analytics").json()
    assert len(body["series"]) == 1
    day = body["series"][0]
    assert (day["date"], day["surface"], day["variant"]) == (_today(), "trending", "")
    assert (day["impressions"], day["clicks"], day["add_to_carts"], day["purchases"]) == (1, 1, 1, 2)
    assert (day["ctr"], day["conversion_rate"]) == (1.0, 2.0)
    assert day["revenue"] == 15.0 + catalog_price
    assert day["revenue_per_mille"] == (15.0 + catalog_price) * 1000
    assert body["totals"]["revenue"] == day["revenue"] and body["totals"]["impressions"] == 1


def test_impressions_are_counted_per_surface_and_day_once(shop):
    rids = [shop.get("/api/v1/trending", limit=n).json()["recommendation_id"] for n in (1, 2)]
    shop.get("/api/v1/users/someone/recommendations", limit=2)
    assert impressions_drain() == 3
    assert impressions_drain() == 0
    figures = {row.surface: row.impressions for row in DailyMetric.objects.all()}
    assert figures == {"trending": 2, "for_user": 1}
    body = shop.get("/api/v1/analytics", surface="trending").json()
    assert [day["impressions"] for day in body["series"]] == [2]
    assert body["totals"]["ctr"] == 0.0 and body["totals"]["clicks"] == 0
    assert rids[0] != rids[1]


def test_a_purchase_without_an_id_of_an_item_shown_lately_is_view_through(shop):
    shown = [i["id"] for i in shop.get("/api/v1/users/phone-anon/recommendations", limit=3).json()["items"]]
    assert shown
    impressions_drain()
    # the anonymous session turns out to be a known shopper: their purchases count for it too
    assert shop.post("/api/v1/users/shopper/aliases", {"alias_id": "phone-anon"}).status_code == 201
    not_shown = next(p["id"] for p in CATALOG if p["id"] not in shown)
    before = (datetime.now(tz=UTC) - timedelta(hours=1)).isoformat()  # bought before it was shown
    events = [
        _event("purchase", shown[0], user="shopper", quantity=3),
        _event("purchase", not_shown, user="shopper"),
        _event("purchase", shown[1], user="shopper", timestamp=before),
        _event("purchase", shown[1], user="stranger"),  # somebody else: not shown to them
    ]
    assert shop.post("/api/v1/events", events).json()["accepted"] == 4
    assert outcomes_rollup(lag_seconds=0) == 1
    credited = Attribution.objects.get()
    assert (credited.kind, credited.user_id, credited.product_id, credited.position) == (
        "view_through", "shopper", shown[0], 0
    )  # fmt: skip
    day = shop.get("/api/v1/analytics", surface="for_user").json()["series"][0]
    assert (day["purchases"], day["revenue"]) == (0, 0.0)  # direct figures stay apart
    assert day["view_through_purchases"] == 1
    assert day["view_through_revenue"] == 3 * (10 + int(shown[0][1:]))


def test_the_attribution_window_is_a_store_setting(shop):
    shown = [i["id"] for i in shop.get("/api/v1/users/w/recommendations", limit=2).json()["items"]]
    impressions_drain()
    assert shop.patch("/api/v1/store", {"settings": {"attribution_window_hours": 1}}).status_code == 200
    assert shop.get("/api/v1/store").json()["settings"]["attribution_window_hours"] == 1
    later = (datetime.now(tz=UTC) + timedelta(hours=2)).isoformat()  # out of the hour
    shop.post("/api/v1/events", [_event("purchase", shown[0], user="w", timestamp=later)])
    assert outcomes_rollup(lag_seconds=0) == 0
    assert shop.patch("/api/v1/store", {"settings": {"attribution_window_hours": 3}}).status_code == 200
    shop.post("/api/v1/events", [_event("purchase", shown[0], user="w", timestamp=later)])
    assert outcomes_rollup(lag_seconds=0) == 1  # (the first one was read already: once is once)
    assert shop.patch("/api/v1/store", {"settings": {"attribution_window_hours": 0}}).status_code == 400


def test_events_received_within_the_lag_wait_for_the_next_run(shop):
    answer = shop.get("/api/v1/trending", limit=2).json()
    impressions_drain()
    shop.post("/api/v1/events", [_event("click", answer["items"][0]["id"], answer["recommendation_id"])])
    assert outcomes_rollup(lag_seconds=30) == 0  # received a moment ago: not read yet
    assert outcomes_rollup(now=datetime.now(tz=UTC) + timedelta(seconds=31), lag_seconds=30) == 1


def test_events_wait_while_the_answer_they_cite_is_not_stored(shop):
    answer = shop.get("/api/v1/trending", limit=2).json()  # its impression is still in Redis
    shop.post("/api/v1/events", [_event("click", answer["items"][0]["id"], answer["recommendation_id"])])
    shop.get("/api/v1/trending", limit=1)
    impressions_drain()
    older = shop.get("/api/v1/trending", limit=3).json()  # waiting in Redis from here on
    shop.post("/api/v1/events", [_event("click", older["items"][0]["id"], older["recommendation_id"])])
    assert outcomes_rollup(lag_seconds=0) == 1  # the first; the second waits for its answer
    impressions_drain()
    assert outcomes_rollup(lag_seconds=0) == 1


@pytest.mark.parametrize(
    "query",
    [{"start": "yesterday"}, {"end": "2026-13-01"}, {"start": ""}, {"surface": "homepage"}, {"surface": ""}],
)  # fmt: skip
def test_analytics_parameters_are_checked(api, query):
    response = api.get("/api/v1/analytics", **query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"


def test_analytics_is_empty_before_anything_was_shown(api):
    body = api.get("/api/v1/analytics", start="2026-01-01", end="2026-01-31").json()
    assert body["series"] == [] and body["start"] == "2026-01-01" and body["end"] == "2026-01-31"
    assert body["totals"]["impressions"] == 0 and body["totals"]["ctr"] is None
    assert api.get("/api/v1/analytics", start="2026-05-02", end="2026-05-01").json()["series"] == []
    assert api.get("/api/v1/analytics", end="0001-01-27").json()["start"] == "0001-01-01"


def test_impression_events_count_answers_shown_and_never_reach_training_or_profiles(shop, store):
    from events.models import Event, ShownItem

    answers = [shop.get("/api/v1/trending", limit=3, user_id=f"w{n}").json() for n in range(3)]
    assert impressions_drain() == 3
    events_before = Event.objects.count()
    first, second, _ = answers
    reports = [
        # the first answer shown: two of its items reported, one of them twice (an event_id resent)
        _event("impression", first["items"][0]["id"], first["recommendation_id"], user="w0", event_id="i1"),
        _event("impression", first["items"][1]["id"], first["recommendation_id"], user="w0", event_id="i2"),
        _event("impression", first["items"][1]["id"], first["recommendation_id"], user="w0", event_id="i2"),
        _event("impression", second["items"][0]["id"], second["recommendation_id"], user="w1"),
        _event("impression", "p0", "no-such-answer", user="w1"),  # stored; matches no answer
        _event("impression", "p0", user="w1"),  # an impression names the answer it was part of
    ]
    body = shop.post("/api/v1/events", reports).json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (4, 1, 1)
    assert body["errors"][0]["code"] == "recommendation_id_required" and body["errors"][0]["index"] == 5
    assert shop.post("/api/v1/events", reports[0]).json()["duplicate"] == 1  # resent alone: idempotent
    # kept apart: no event row, so no training, trending or profile reads them
    assert Event.objects.count() == events_before and ShownItem.objects.count() == 4
    assert shop.get("/api/v1/users/w0/recently-viewed").json()["items"] == []
    click = _event("click", first["items"][0]["id"], first["recommendation_id"], user="w0")
    assert shop.post("/api/v1/events", click).json()["accepted"] == 1
    impressions_drain()  # (the recently-viewed answer's: the rollup waits for answers not stored yet)
    outcomes_rollup(lag_seconds=0)
    outcomes_rollup(lag_seconds=0)  # (a second run counts nothing twice)
    day = DailyMetric.objects.get(surface="trending")
    assert (day.impressions, day.shown, day.clicks) == (3, 2, 1)
    totals = shop.get("/api/v1/analytics", surface="trending").json()["totals"]
    assert (totals["shown"], totals["shown_ctr"]) == (2, 0.5)
    # the shopper's export lists their impression events; erasing them deletes those too
    exported = shop.get("/api/v1/users/w0/data").json()["events"]
    assert [e["type"] for e in exported].count("impression") == 2
    assert shop.delete("/api/v1/users/w0").status_code == 200
    assert ShownItem.objects.filter(user_id="w0").count() == 0
