"""Real-time personalisation: aliases merge histories, recently viewed, buy again, the current session and
the cart steer the answer, and a recommendation request makes a small, bounded number of queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events.models import UserAlias
from tests.conftest import ApiClient
from tests.test_recommendations import ids, trained  # noqa: F401 - the fixture


@pytest.fixture(autouse=True, params=["test client", "production wsgi"])
def served_by(request):
    """Every test here runs twice: through Django's test client, and through the WSGI application
    the web server serves, whose fast path answers cached GETs before Django."""
    ApiClient.through_wsgi = request.param == "production wsgi"
    yield request.param
    ApiClient.through_wsgi = False


def test_alias_merges_histories(trained, api, store):  # noqa: F811
    api.post("/api/v1/events", {"user_id": "anon-1", "product_id": "p6", "type": "view", "channel": "app"})
    assert api.get("/api/v1/users/alice/recommendations").json()["source"].startswith("trending")
    # when the anonymous session logs in as alice
    response = api.post("/api/v1/users/alice/aliases", {"alias_id": "anon-1"})
    assert response.status_code == 201
    assert response.json() == {"user_id": "alice", "alias_id": "anon-1", "created": True}
    # then alice's answers use what she did anonymously, and so do the alias's
    assert ids(api.get("/api/v1/users/alice/recommendations", limit=1)) == ["p7"]
    assert ids(api.get("/api/v1/users/anon-1/recommendations", limit=1)) == ["p7"]
    assert ids(api.get("/api/v1/users/alice/recently-viewed")) == ["p6"]
    # an in-store purchase on her loyalty card joins too, and events sent later under an alias count
    api.post("/api/v1/users/alice/aliases", {"alias_id": "card-9"})
    api.post(
        "/api/v1/events", {"user_id": "card-9", "product_id": "p10", "type": "view", "channel": "in_store"}
    )
    assert ids(api.get("/api/v1/users/alice/recommendations", limit=1)) == ["p11"]


def test_alias_linking_is_idempotent_and_guarded(trained, api, store):  # noqa: F811
    assert api.post("/api/v1/users/alice/aliases", {"alias_id": "anon-1"}).status_code == 201
    again = api.post("/api/v1/users/alice/aliases", {"alias_id": "anon-1"})
    assert again.status_code == 200 and again.json()["created"] is False
    taken = api.post("/api/v1/users/bob/aliases", {"alias_id": "anon-1"})
    assert taken.status_code == 409 and taken.json()["code"] == "alias_taken"
    # linking to an alias links to its user; an alias with aliases brings them along
    assert api.post("/api/v1/users/anon-1/aliases", {"alias_id": "anon-2"}).json()["user_id"] == "alice"
    api.post("/api/v1/users/carol-device/aliases", {"alias_id": "carol-tab"})
    api.post("/api/v1/users/carol/aliases", {"alias_id": "carol-device"})
    assert dict(UserAlias.objects.filter(store=store).values_list("alias_id", "user_id")) == {
        "anon-1": "alice", "anon-2": "alice", "carol-device": "carol", "carol-tab": "carol",
    }  # fmt: skip
    itself = api.post("/api/v1/users/alice/aliases", {"alias_id": "alice"})  # one shopper with itself
    assert itself.status_code == 200 and itself.json() == {
        "user_id": "alice",
        "alias_id": "alice",
        "created": False,
    }
    assert api.post("/api/v1/users/anon-1/aliases", {"alias_id": "alice"}).json()["code"] == "alias_is_user"
    assert api.post("/api/v1/users/alice/aliases", {"alias_id": ""}).status_code == 400
    assert api.post("/api/v1/users/alice/aliases", {"alias_id": "anon-1", "x": 1}).status_code == 200
    # a profile rebuilt from SQL resolves the ids inside its own statement: the same ids, for users,
    # aliases (whose user has other aliases) and shoppers with none
    from events.selectors import user_identities, user_identities_in_sql

    for shopper in ("alice", "anon-1", "anon-2", "carol", "carol-tab", "carol-device", "dave", ""):
        assert user_identities_in_sql(store=store, user_id=shopper) == sorted(
            user_identities(store=store, user_id=shopper)
        ), shopper


def test_recently_viewed_is_distinct_latest_first_and_active_only(trained, api):  # noqa: F811
    now = datetime.now(tz=UTC)
    viewed = [("p1", 50), ("p2", 40), ("p1", 30), ("p3", 20)]
    api.post("/api/v1/events", [
        {"user_id": "v", "product_id": p, "type": "view", "timestamp": str(now - timedelta(minutes=m))}
        for p, m in viewed
    ])  # fmt: skip
    api.post("/api/v1/events", {"user_id": "v", "product_id": "p9", "type": "purchase"})
    assert ids(api.get("/api/v1/users/v/recently-viewed")) == ["p3", "p1", "p2"]
    assert api.get("/api/v1/users/v/recently-viewed").headers["X-Answer-Cache"] == "hit"
    api.delete("/api/v1/products/p1")  # a catalog change, and the shopper's next view, are seen at once
    assert ids(api.get("/api/v1/users/v/recently-viewed")) == ["p3", "p2"]
    api.post("/api/v1/events", {"user_id": "v", "product_id": "p7", "type": "view"})
    assert ids(api.get("/api/v1/users/v/recently-viewed")) == ["p7", "p3", "p2"]
    assert ids(api.get("/api/v1/users/v/recently-viewed", limit=1)) == ["p7"]
    assert api.get("/api/v1/users/v/recently-viewed", limit=0).status_code == 400


def test_buy_again_lists_items_due_on_their_cycle(trained, api):  # noqa: F811
    now = datetime.now(tz=UTC)
    purchases = [("p3", 30), ("p3", 20), ("p3", 10), ("p4", 10), ("p4", 1), ("p5", 5)]
    api.post("/api/v1/events", [
        {"user_id": "b", "product_id": p, "type": "purchase", "timestamp": str(now - timedelta(days=d))}
        for p, d in purchases
    ])  # fmt: skip
    body = api.get("/api/v1/users/b/buy-again").json()
    # p3 every 10 days, last 10 days ago: due; p4 every 9 days, last yesterday: not yet; p5 bought once
    assert [item["id"] for item in body["items"]] == ["p3"]
    assert body["items"][0]["reason"] == "you buy it about every 10 days"
    assert body["source"] == "history:buy-again"
    assert api.get("/api/v1/users/b/buy-again").headers["X-Answer-Cache"] == "hit"
    # bought again just now: no longer due, in the very next answer
    api.post("/api/v1/events", {"user_id": "b", "product_id": "p3", "type": "purchase"})
    assert ids(api.get("/api/v1/users/b/buy-again")) == []


def test_the_cart_steers_complements_into_the_answer(trained, api):  # noqa: F811
    api.post("/api/v1/events", {"user_id": "c", "product_id": "p12", "type": "view"})
    before = ids(api.get("/api/v1/users/c/recommendations", limit=3))
    api.post("/api/v1/events", {"user_id": "c", "product_id": "p4", "type": "add_to_cart"})
    after = ids(api.get("/api/v1/users/c/recommendations", limit=3))
    assert "p5" not in before
    assert after[0] == "p5"  # bought together with what is in the cart


def test_the_current_session_weighs_more(trained, api):  # noqa: F811
    now = datetime.now(tz=UTC)
    api.post("/api/v1/events", [
        {"user_id": "s", "product_id": "p0", "type": "view", "session_id": "old",
         "timestamp": (now - timedelta(minutes=3)).isoformat()},
        {"user_id": "s", "product_id": "p10", "type": "view", "session_id": "old",
         "timestamp": (now - timedelta(minutes=2)).isoformat()},
        {"user_id": "s", "product_id": "p0", "type": "view", "session_id": "new",
         "timestamp": (now - timedelta(minutes=1)).isoformat()},
    ])  # fmt: skip
    assert ids(api.get("/api/v1/users/s/recommendations", limit=1)) == ["p1"]


def test_a_recommendation_request_makes_a_bounded_number_of_queries(trained, api):  # noqa: F811
    api.post("/api/v1/events", [{"user_id": "q", "product_id": f"p{i}", "type": "view"} for i in range(8)])
    api.post("/api/v1/events", {"user_id": "q", "product_id": "p9", "type": "purchase"})
    api.get("/api/v1/users/q/recommendations")  # the model is loaded into this process once
    for path in [
        "/api/v1/users/q/recommendations?limit=20",
        "/api/v1/users/q/recommendations?limit=5&category=Beta&max_per_category=1",
        "/api/v1/products/p0/related",
        "/api/v1/products/p4/complementary",
        "/api/v1/trending?limit=50",
    ]:
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        # key (with store and settings), active model, history or product, (content search,) candidates
        assert len(queries.captured_queries) <= 6, (path, [q["sql"][:80] for q in queries.captured_queries])


def test_shopper_independent_answers_are_cached_and_invalidated(
    trained,  # noqa: F811
    api,
    store,
    django_capture_on_commit_callbacks,  # noqa: F811
):
    first = api.get("/api/v1/trending", limit=5).json()
    with CaptureQueriesContext(connection) as queries:
        second = api.get("/api/v1/trending", limit=5).json()
    # served from the cache: no SQL at all (the key is remembered); a new recommendation id
    assert len(queries.captured_queries) == 0
    assert second["items"] == first["items"] and second["recommendation_id"] != first["recommendation_id"]
    # a catalog write invalidates it
    leader = first["items"][0]["id"]
    with django_capture_on_commit_callbacks(execute=True):
        api.delete(f"/api/v1/products/{leader}")
    assert leader not in ids(api.get("/api/v1/trending", limit=5))
    # so does activating another version
    from recommendations.services import trained_model_activate
    from tests.test_recommendations import train

    with django_capture_on_commit_callbacks(execute=True):
        train(store)
        trained_model_activate(store=store, version=1)
    with django_capture_on_commit_callbacks(execute=True):
        trained_model_activate(store=store, version=2)
    assert api.get("/api/v1/trending", limit=5).json()["source"] == "trending:store-model:v2"


def test_a_cache_that_is_down_only_costs_speed(trained, api, settings):  # noqa: F811
    from core import answer_cache

    settings.ANSWER_CACHE_URL = "redis://127.0.0.1:1/0"
    answer_cache._client = None
    try:
        assert api.get("/api/v1/products/p0/related", limit=1).json()["items"][0]["id"] == "p1"
    finally:
        answer_cache._client = None


def test_for_user_answers_are_cached_until_the_shopper_acts(trained, api):  # noqa: F811
    api.post("/api/v1/events", {"user_id": "c", "product_id": "p0", "type": "view"})
    response = api.get("/api/v1/users/c/recommendations", limit=3)
    first = response.json()
    assert response.headers["X-Answer-Cache"] == "miss"
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/users/c/recommendations", limit=3)
    again = response.json()
    assert response.headers["X-Answer-Cache"] == "hit"
    assert len(queries.captured_queries) == 0 and again["items"] == first["items"]
    assert first["items"][0]["id"] == "p1"
    # another shopper's event leaves it cached; this shopper's next event is in the very next answer
    api.post("/api/v1/events", {"user_id": "someone-else", "product_id": "p2", "type": "view"})
    with CaptureQueriesContext(connection) as queries:
        api.get("/api/v1/users/c/recommendations", limit=3)
    assert len(queries.captured_queries) == 0
    api.post("/api/v1/events", {"user_id": "c", "product_id": "p2", "type": "view"})
    assert ids(api.get("/api/v1/users/c/recommendations", limit=1)) == ["p3"]
    # an event under an alias makes every id of the profile fresh
    api.post("/api/v1/users/c/aliases", {"alias_id": "c-app"})
    assert ids(api.get("/api/v1/users/c-app/recommendations", limit=1)) == ["p3"]
    api.post("/api/v1/events", {"user_id": "c-app", "product_id": "p12", "type": "view"})
    assert ids(api.get("/api/v1/users/c/recommendations", limit=1)) == ["p13"]


def test_a_cached_answer_is_never_served_to_a_key_that_lost_its_right(trained, api, tenant):  # noqa: F811
    from tenants.models import ApiKey
    from tenants.services import api_key_issue, api_key_revoke

    reader = ApiClient(api_key_issue(store=tenant.store, name="reader", scopes=["read"]).raw_key)
    writer = ApiClient(api_key_issue(store=tenant.store, name="writer", scopes=["write"]).raw_key)
    for _ in range(2):
        assert reader.get("/api/v1/trending", limit=5).status_code == 200
        assert writer.get("/api/v1/trending", limit=5).status_code == 403  # cached or not
    api_key_revoke(store=tenant.store, api_key=ApiKey.objects.get(name="reader"))
    assert reader.get("/api/v1/trending", limit=5).status_code == 401
    # a store's settings changed elsewhere (the admin) reach cached answers too
    assert api.get("/api/v1/trending", limit=3).status_code == 200
    settings = tenant.store.settings
    settings.pins = {"*": [{"id": "p19", "position": 0}]}
    settings.save()
    assert ids(api.get("/api/v1/trending", limit=3))[0] == "p19"


def test_cached_answers_stay_in_their_store(trained, api, other_api):  # noqa: F811
    other_api.post("/api/v1/products/bulk", [{"id": "p0", "title": "Other shop's p0"}])
    mine = api.get("/api/v1/products/p0/related", limit=3).json()
    assert api.get("/api/v1/products/p0/related", limit=3).json()["items"] == mine["items"]
    theirs = other_api.get("/api/v1/products/p0/related", limit=3).json()
    assert theirs["items"] != mine["items"] and "store-model" not in theirs["source"]


def test_an_answer_lives_while_it_is_read_and_buy_again_ages_with_the_clock(trained, api, store):  # noqa: F811
    import hashlib

    from core import answer_cache

    client = answer_cache._redis()
    namespace = answer_cache._namespace(store)

    def answer_key(path: str) -> bytes:
        digest = hashlib.sha1(f"{path}?".encode(), usedforsecurity=False).hexdigest()
        (key,) = client.keys(f"{namespace}:*:{digest}")
        return key

    api.post("/api/v1/events", {"user_id": "t", "product_id": "p3", "type": "purchase"})
    for path in ("/api/v1/users/t/recommendations", "/api/v1/users/t/buy-again"):
        assert api.get(path).headers["X-Answer-Cache"] == "miss"
        client.expire(answer_key(path), 5)
    shopper = answer_cache._shopper_key(store, "t")
    client.expire(shopper, 5)
    assert api.get("/api/v1/users/t/recommendations").headers["X-Answer-Cache"] == "hit"
    assert api.get("/api/v1/users/t/buy-again").headers["X-Answer-Cache"] == "hit"
    # read again: it lives on, and so does the shopper's generation; buy-again keeps its clock
    assert client.ttl(answer_key("/api/v1/users/t/recommendations")) > 250
    assert client.ttl(shopper) > 80_000
    assert client.ttl(answer_key("/api/v1/users/t/buy-again")) <= 5
