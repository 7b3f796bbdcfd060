"""The WSGI fast path (core/fast_path.py, with the handlers of recommendations/serving/wsgi.py and
events/wsgi.py): answers and ingestion served before Django, exactly as Django
would serve them, and everything else handed to Django. Invalidation, revoked keys and store isolation
through this path are in tests/test_realtime.py, which runs every test through it too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tenants.authentication import recent_keys
from tenants.models import ApiKey
from tests.conftest import ApiClient
from tests.test_recommendations import trained  # noqa: F401 - the fixture

RELATED = "/api/v1/products/p0/related"


@pytest.fixture
def django_calls(monkeypatch):
    """The requests that reached Django behind the fast path."""
    from config import wsgi

    calls = []
    inner = wsgi.application.application

    def recording(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    monkeypatch.setattr(wsgi.application, "application", recording)
    return calls


@pytest.fixture
def wsgi_api(tenant):
    ApiClient.through_wsgi = True
    yield ApiClient(tenant.raw_key)
    ApiClient.through_wsgi = False


def test_a_hit_never_enters_django_and_looks_as_django_would_answer_it(
    trained,  # noqa: F811
    api,
    wsgi_api,
    django_calls,
):
    first = wsgi_api.get(RELATED, limit=3)
    assert first.status_code == 200 and first.headers["X-Answer-Cache"] == "miss"
    assert django_calls == []  # computed by the fast path
    with CaptureQueriesContext(connection) as queries:
        fast = wsgi_api.get(RELATED, limit=3)
    assert django_calls == [] and len(queries.captured_queries) == 0
    # the same answer, served by Django from the same cache entry (the test client skips the fast path)
    slow = api.get(RELATED, limit=3)
    assert fast.headers["X-Answer-Cache"] == slow.headers["X-Answer-Cache"] == "hit"
    varying = {"X-Request-ID", "RateLimit-Remaining", "RateLimit-Reset"}  # per request
    assert {k: v for k, v in fast.headers.items() if k not in varying} == {
        k: v for k, v in slow.headers.items() if k not in varying
    }
    # each took a token (a full bucket would show its whole size; it refills between them, so the two
    # remainders need not differ)
    for answer in (fast, slow):
        assert int(answer.headers["RateLimit-Remaining"]) < int(answer.headers["RateLimit-Limit"])
    fast_body, slow_body = fast.json(), slow.json()
    assert fast_body.pop("recommendation_id") != slow_body.pop("recommendation_id")
    assert fast_body == slow_body and fast_body["items"]


def test_the_fast_path_keeps_the_request_id_and_counts_the_request(trained, wsgi_api, django_calls):  # noqa: F811
    from prometheus_client import REGISTRY

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    served = {"surface": "product-related", "method": "GET", "status": "2xx"}
    before = count("recsys_request_seconds_count", **served)
    misses = count("recsys_answer_cache_total", surface="product-related", outcome="miss")
    hits = count("recsys_answer_cache_total", surface="product-related", outcome="hit")
    wsgi_api.get(RELATED, limit=2)
    response = wsgi_api.get(RELATED, limit=2, meta={"HTTP_X_REQUEST_ID": "req-42"})
    assert response.headers["X-Answer-Cache"] == "hit" and len(django_calls) == 0
    assert response.headers["X-Request-ID"] == "req-42"
    assert count("recsys_request_seconds_count", **served) == before + 2
    assert count("recsys_answer_cache_total", surface="product-related", outcome="miss") == misses + 1
    assert count("recsys_answer_cache_total", surface="product-related", outcome="hit") == hits + 1
    odd = wsgi_api.get(RELATED, limit=2, meta={"HTTP_X_REQUEST_ID": "not a safe id\n"})
    assert odd.headers["X-Request-ID"] != "not a safe id\n" and len(odd.headers["X-Request-ID"]) == 32


def test_a_key_whose_use_is_due_to_be_recorded_goes_through_django(trained, wsgi_api, django_calls):  # noqa: F811
    wsgi_api.get(RELATED, limit=2)
    long_ago = timezone.now() - timedelta(hours=1)
    ApiKey.objects.update(last_used_at=long_ago)
    for key, _ in recent_keys.entries.values():
        key.last_used_at = long_ago
    response = wsgi_api.get(RELATED, limit=2)
    # served from the cache by the view, and the use recorded
    assert response.headers["X-Answer-Cache"] == "hit" and len(django_calls) == 1
    assert ApiKey.objects.filter(last_used_at__gt=long_ago).exists()
    wsgi_api.get(RELATED, limit=2)
    assert len(django_calls) == 1


def test_everything_unusual_is_answered_by_django(trained, tenant, wsgi_api, django_calls, settings):  # noqa: F811
    wsgi_api.get(RELATED, limit=2)
    calls = len(django_calls)
    # a host that is not allowed: Django's 400, not the cached answer
    assert wsgi_api.get(RELATED, limit=2, meta={"HTTP_HOST": "evil.example"}).status_code == 400
    # no key, an unknown key: Django's 401
    assert ApiClient(None).get(RELATED, limit=2).status_code == 401
    assert ApiClient("rk_unknown").get(RELATED, limit=2).status_code == 401
    # other writes and paths
    assert wsgi_api.post("/api/v1/users/u/aliases", {"alias_id": "u-app"}).status_code == 201
    assert wsgi_api.get("/api/v1/store").status_code == 200
    assert wsgi_api.get("/api/v1/nothing-here").status_code == 404
    assert len(django_calls) == calls + 6
    # with redirects to HTTPS on, the fast path steps aside and Django's security middleware decides
    settings.SECURE_SSL_REDIRECT = True
    wsgi_api.get(RELATED, limit=2)
    assert len(django_calls) == calls + 7


def test_a_redis_that_lost_its_scripts_loads_the_lookup_again(trained, wsgi_api):  # noqa: F811
    from core import answer_cache

    assert wsgi_api.get(RELATED, limit=4).headers["X-Answer-Cache"] == "miss"
    answer_cache._redis().script_flush()  # as after a restart of the cache
    assert wsgi_api.get(RELATED, limit=4).headers["X-Answer-Cache"] == "hit"


@pytest.mark.django_db(
    transaction=True
)  # real commits: a storefront's single events are appended to profiles
def test_a_computed_answer_makes_no_sql_once_the_store_is_loaded(trained, wsgi_api, api, django_calls):  # noqa: F811
    wsgi_api.get("/api/v1/users/u0/recommendations", limit=3)  # loads the model and the catalog
    api.post("/api/v1/events", {"user_id": "u0", "product_id": "p6", "type": "view"})
    wsgi_api.get("/api/v1/users/u0/recommendations", limit=3)  # the profile is kept in Redis
    api.post("/api/v1/events", {"user_id": "u0", "product_id": "p10", "type": "view"})
    with CaptureQueriesContext(connection) as queries:
        for_user = wsgi_api.get("/api/v1/users/u0/recommendations", limit=3)
        related = wsgi_api.get("/api/v1/products/p2/related", limit=4, in_stock="true")
        complementary = wsgi_api.get("/api/v1/products/p4/complementary", limit=2)
        trending = wsgi_api.get("/api/v1/trending", limit=5, max_per_category=2)
    assert [r.headers["X-Answer-Cache"] for r in (for_user, related, complementary, trending)] == ["miss"] * 4
    assert queries.captured_queries == [] and django_calls == []
    assert for_user.json()["items"][0]["id"] == "p11"  # the event of a moment ago counts
    # and each is what Django's own path answers (the test client does not take the fast path)
    for response, path, query in (
        (related, "/api/v1/products/p2/related", {"limit": 4, "in_stock": "true"}),
        (complementary, "/api/v1/products/p4/complementary", {"limit": 2}),
    ):
        assert response.json()["items"] == api.get(path, **query).json()["items"]


def test_the_fast_path_knows_every_middleware_it_stands_in_for(settings):
    """A middleware added to the settings (CORS, throttling) must be weighed for the fast path, which
    answers before any of them runs: add it to FAST_PATH_MIDDLEWARE once the fast path does its part."""
    from core.fast_path import FAST_PATH_MIDDLEWARE

    assert tuple(settings.MIDDLEWARE) == FAST_PATH_MIDDLEWARE


def test_an_event_post_never_enters_django_and_answers_as_django_would(
    trained,  # noqa: F811
    api,
    wsgi_api,
    django_calls,
    store,
):
    from events.models import Event

    before = Event.objects.filter(store=store).count()
    fast = wsgi_api.post(
        "/api/v1/events", [{"user_id": "f", "product_id": "p0", "type": "view", "event_id": "x1"}]
    )
    assert fast.status_code == 200 and django_calls == []
    slow = api.post(
        "/api/v1/events", [{"user_id": "f", "product_id": "p2", "type": "view", "event_id": "x2"}]
    )
    assert fast.json() == slow.json() == {"accepted": 1, "duplicate": 0, "rejected": 0, "errors": []}
    varying = {"X-Request-ID", "RateLimit-Remaining", "RateLimit-Reset"}  # per request
    assert {k: v for k, v in fast.headers.items() if k not in varying} == {
        k: v for k, v in slow.headers.items() if k not in varying
    }
    # each took a token (a full bucket would show its whole size; it refills between them, so the two
    # remainders need not differ)
    for answer in (fast, slow):
        assert int(answer.headers["RateLimit-Remaining"]) < int(answer.headers["RateLimit-Limit"])
    # a resend is a duplicate, a bad row among good ones is answered per row, all on the fast path
    mixed = wsgi_api.post("/api/v1/events", [
        {"user_id": "f", "product_id": "p0", "type": "view", "event_id": "x1"},
        {"user_id": "f", "product_id": "nope", "type": "view"},
    ]).json()  # fmt: skip
    assert (mixed["duplicate"], mixed["rejected"], mixed["errors"][0]["code"]) == (1, 1, "unknown_product")
    assert django_calls == [] and Event.objects.filter(store=store).count() == before + 2
    # the event is in the shopper's very next answer
    assert wsgi_api.get("/api/v1/users/f/recommendations", limit=1).json()["items"][0]["id"] == "p3"


def test_an_event_post_that_stores_nothing_is_answered_by_django(
    trained,  # noqa: F811
    tenant,
    wsgi_api,
    django_calls,
    store,
):
    from events.models import Event

    before = Event.objects.filter(store=store).count()
    # every row rejected: Django's 400 with each row's error
    rejected = wsgi_api.post("/api/v1/events", [{"user_id": "f", "product_id": "nope", "type": "view"}])
    assert rejected.status_code == 400 and rejected.json()["code"] == "unknown_product"
    # not JSON, an empty batch, a key that may not write
    assert wsgi_api.post("/api/v1/events", raw=b"{not json").status_code == 400
    assert wsgi_api.post("/api/v1/events", []).json()["code"] == "empty_batch"
    reader = ApiClient(tenant.client_with_scopes("read").raw_key)  # through the production app too
    assert (
        reader.post("/api/v1/events", {"user_id": "f", "product_id": "p0", "type": "view"}).status_code == 403
    )
    assert len(django_calls) == 4 and Event.objects.filter(store=store).count() == before


def test_the_fast_path_manages_database_connections_as_django_does(trained, wsgi_api, django_calls):  # noqa: F811
    """Django closes connections past CONN_MAX_AGE and health-checks reused ones through the request
    signals; the fast path sends them too around work that queries (a computed answer that loads
    something, an ingest), the start just before the first query, or its threads would keep a broken
    connection forever. An answer from the cache, or computed from what Redis and memory hold, queries
    nothing and sends neither."""
    from django.core.signals import request_finished, request_started

    seen: list[str] = []

    def started(**kwargs):
        seen.append("started")

    def finished(**kwargs):
        seen.append("finished")

    def recorded(execute, sql, params, many, context):
        if seen[-1:] != ["query"]:
            seen.append("query")
        return execute(sql, params, many, context)

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        with connection.execute_wrapper(recorded):
            wsgi_api.get(RELATED, limit=2)  # computed: the model and the catalog loaded
            assert seen == ["started", "query", "finished"]
            wsgi_api.get(RELATED, limit=2)  # cached
            wsgi_api.get(RELATED, limit=3)  # computed from memory
            assert seen == ["started", "query", "finished"]
            wsgi_api.post("/api/v1/events", {"user_id": "s", "product_id": "p0", "type": "view"})
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
    assert django_calls == [] and seen == ["started", "query", "finished"] * 2
