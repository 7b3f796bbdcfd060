"""Limits (OWASP API4): a token bucket per API key in Redis with RateLimit-* headers and 429s, through
Django and through the WSGI fast path alike; bodies refused by size before they are parsed; quotas on
products and on events a day; the web processes' statement timeout."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError
from django.test import TestCase
from psycopg.errors import QueryCanceled

from catalog.models import Product
from core.errors import api_exception_handler
from events.models import Event
from tenants.models import Store
from tests.conftest import ApiClient, product, subprocess_env
from tests.test_recommendations import trained  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent


def _limit(store: Store, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(store, name, value)
    with TestCase.captureOnCommitCallbacks(execute=True):
        store.save()  # bumps the keys generation once committed: every process sees the new limits


def _event(index: int) -> dict[str, Any]:
    return {"event_id": f"e{index}", "user_id": "u1", "product_id": "p1", "type": "view"}


@pytest.fixture(params=["django", "wsgi"])
def client(request, tenant):
    ApiClient.through_wsgi = request.param == "wsgi"
    yield ApiClient(tenant.raw_key)
    ApiClient.through_wsgi = False


def test_a_key_over_its_rate_gets_429_with_retry_after(client, store):
    client.post("/api/v1/products/bulk", [product("p1")])
    _limit(store, rate_limit_per_second=1, rate_limit_burst=3)
    answers = [client.get("/api/v1/trending") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["RateLimit-Limit"] == "3" for a in answers)
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "1"
    assert int(refused.headers["RateLimit-Reset"]) >= 1
    time.sleep(1.05)  # a token a second
    assert client.get("/api/v1/trending").status_code == 200


def test_event_posts_share_the_key_s_bucket(client, store):
    client.post("/api/v1/products/bulk", [product("p1")])
    _limit(store, rate_limit_per_second=1, rate_limit_burst=2)
    answers = [client.post("/api/v1/events", _event(i)) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit-Remaining"] == "1"
    assert Event.objects.filter(store=store).count() == 2  # the refused one was not stored


def test_a_computed_answer_on_the_fast_path_is_limited_too(trained, tenant, store):  # noqa: F811
    ApiClient.through_wsgi = True
    try:
        client = ApiClient(tenant.raw_key)
        _limit(store, rate_limit_per_second=1, rate_limit_burst=2)
        codes = [client.get("/api/v1/products/p0/related", limit=i + 1).status_code for i in range(3)]
    finally:
        ApiClient.through_wsgi = False
    assert codes == [200, 200, 429]


def test_each_key_has_its_own_bucket(tenant, store):
    _limit(store, rate_limit_per_second=1, rate_limit_burst=1)
    other = tenant.client_with_scopes("read")
    assert tenant.api.get("/api/v1/trending").status_code == 200
    assert tenant.api.get("/api/v1/trending").status_code == 429
    assert other.get("/api/v1/trending").status_code == 200


def test_a_rate_of_zero_means_no_limit(api, store):
    _limit(store, rate_limit_per_second=0)
    answers = [api.get("/api/v1/trending") for _ in range(30)]
    assert {a.status_code for a in answers} == {200}
    assert "RateLimit-Limit" not in answers[0].headers
    assert api.get("/api/v1/store").json()["limits"]["rate_limit_per_second"] == 0


def test_without_redis_the_api_answers_unlimited(api, store, settings):
    _limit(store, rate_limit_per_second=1, rate_limit_burst=1)
    settings.ANSWER_CACHE_URL = ""
    assert {api.get("/api/v1/trending").status_code for _ in range(5)} == {200}


def test_the_store_shows_its_limits_and_its_keys_cannot_change_them(api, store):
    _limit(store, rate_limit_per_second=50, rate_limit_burst=None, max_products=10)
    limits = api.get("/api/v1/store").json()["limits"]
    assert limits == {
        "rate_limit_per_second": 50,
        "rate_limit_burst": django_settings.RATE_LIMIT_BURST,
        "max_products": 10,
        "max_events_per_day": django_settings.MAX_EVENTS_PER_DAY,
    }
    refused = api.patch("/api/v1/store", {"rate_limit_per_second": 0})
    assert refused.status_code == 400 and refused.json()["code"] == "unknown_field"


def test_a_body_too_large_is_refused_before_it_is_read(client, store, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = [product(f"p{i}", description="x" * 100) for i in range(20)]
    refused = client.post("/api/v1/products/bulk", big)
    assert refused.status_code == 413
    assert refused.json()["code"] == "body_too_large"
    events = client.post("/api/v1/events", [_event(i) for i in range(40)])
    assert events.status_code == 413
    assert not Product.objects.filter(store=store).exists()


def test_the_daily_event_quota_refuses_a_batch_that_would_pass_it(client, store):
    client.post("/api/v1/products/bulk", [product("p1")])
    _limit(store, max_events_per_day=5)
    assert client.post("/api/v1/events", [_event(i) for i in range(3)]).status_code == 200
    refused = client.post("/api/v1/events", [_event(i) for i in range(3, 6)])
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "quota_exceeded"
    assert body["details"]["limit"] == 5 and body["details"]["used"] == 3
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400
    assert Event.objects.filter(store=store).count() == 3
    assert client.post("/api/v1/events", [_event(i) for i in range(3, 5)]).status_code == 200
    assert Event.objects.filter(store=store).count() == 5


def test_the_product_quota_refuses_new_products_but_not_updates(api, store):
    _limit(store, max_products=2)
    assert api.post("/api/v1/products/bulk", [product("a"), product("b")]).status_code == 200
    refused = api.post("/api/v1/products/bulk", [product("a", price=3), product("c")])
    assert refused.status_code == 403
    assert refused.json()["code"] == "quota_exceeded"
    assert refused.json()["details"] == {"quota": "max_products", "limit": 2, "used": 2, "new": 1}
    assert api.get("/api/v1/products/a").json()["price"] is None  # refused whole
    assert api.post("/api/v1/products/bulk", [product("a", price=3)]).status_code == 200
    assert api.put("/api/v1/products/d", {"title": "D"}).status_code == 403


def test_a_cancelled_query_is_a_503():
    error = OperationalError("canceling statement due to statement timeout")
    error.__cause__ = QueryCanceled("canceling statement due to statement timeout")
    response = api_exception_handler(error, {})
    assert response is not None and response.status_code == 503
    assert response.data["code"] == "query_timeout"


def test_the_web_statement_timeout_cancels_a_long_query(db):
    env = subprocess_env(REQUEST_STATEMENT_TIMEOUT_MS="100")
    script = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "try:\n"
        "    connection.cursor().execute('SELECT pg_sleep(2)')\n"
        "    print('finished')\n"
        "except Exception as error:\n"
        "    print(type(error.__cause__).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "QueryCanceled", done.stderr[-2000:]


def test_refusals_are_counted_by_limit(api, store):
    from prometheus_client import REGISTRY

    def refused(limit: str) -> float:
        return REGISTRY.get_sample_value("recsys_refused_by_limit_total", {"limit": limit}) or 0.0

    before = refused("rate_limited"), refused("max_products")
    _limit(store, rate_limit_per_second=1, rate_limit_burst=1, max_products=1)
    api.post("/api/v1/products/bulk", [product("a"), product("b")])  # the key's one token: a quota refusal
    api.get("/api/v1/trending")  # no token left
    assert (refused("rate_limited"), refused("max_products")) == (before[0] + 1, before[1] + 1)
