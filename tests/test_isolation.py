"""One store never sees or changes another's data. Every URL routed to StoreScopedAPIView must have a
case here (the first test fails otherwise); each case creates data under store A with a sentinel and
calls as store B."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from catalog.models import Product
from events.models import Event, UserAlias
from outcomes.models import DailyMetric, Experiment
from recommendations.models import TrainedModel, TrainingRun
from tenants.authentication import StoreScopedAPIView
from tenants.models import ApiKey, StoreSettings
from tests.conftest import ApiClient, product

SENTINEL = "SENTINEL-7f3a"


@pytest.fixture(autouse=True, params=["test client", "production wsgi"])
def served_by(request):
    """Every case runs through Django's test client and through the WSGI application the web server
    serves, whose fast path answers cached GETs before Django."""
    ApiClient.through_wsgi = request.param == "production wsgi"
    yield request.param
    ApiClient.through_wsgi = False


def scoped_routes() -> set[str]:
    found: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "view_class", None)
                if view_class and issubclass(view_class, StoreScopedAPIView):
                    found.add(prefix + str(pattern.pattern))

    walk(get_resolver().url_patterns, "")
    return found


# route -> calls made by the other store: (method, path, body, expected status)
CASES: dict[str, list[tuple[str, str, Any, int]]] = {
    "api/v1/store": [
        ("GET", "/api/v1/store", None, 200),
        ("PATCH", "/api/v1/store", {"name": "x"}, 200),
        ("DELETE", "/api/v1/store", None, 202),  # deletes the caller's own store only
    ],
    "api/v1/keys": [("GET", "/api/v1/keys", None, 200), ("POST", "/api/v1/keys", {"name": "mine"}, 201)],
    "api/v1/keys/<str:prefix>": [("DELETE", "/api/v1/keys/{key_prefix}", None, 404)],
    "api/v1/keys/<str:prefix>/rotate": [("POST", "/api/v1/keys/{key_prefix}/rotate", None, 404)],
    "api/v1/users/<str:user_id>": [("DELETE", f"/api/v1/users/{SENTINEL}", None, 200)],
    "api/v1/users/<str:user_id>/data": [("GET", f"/api/v1/users/{SENTINEL}/data", None, 200)],
    "api/v1/products": [("GET", "/api/v1/products", None, 200)],
    "api/v1/products/bulk": [("POST", "/api/v1/products/bulk", [{"id": "victim", "price": 0}], 400)],
    "api/v1/products/<str:product_id>": [
        ("GET", "/api/v1/products/victim", None, 404),
        ("PATCH", "/api/v1/products/victim", {"title": "pwned"}, 404),
        ("DELETE", "/api/v1/products/victim", None, 404),
    ],
    "api/v1/events": [
        ("POST", "/api/v1/events", {"user_id": "u", "product_id": "victim", "type": "view"}, 400)
    ],
    "api/v1/products/<str:product_id>/related": [("GET", "/api/v1/products/victim/related", None, 404)],
    "api/v1/products/<str:product_id>/complementary": [
        ("GET", "/api/v1/products/victim/complementary", None, 404)
    ],
    "api/v1/products/<str:product_id>/complete-the-look": [
        ("GET", "/api/v1/products/victim/complete-the-look", None, 404)
    ],
    "api/v1/users/<str:user_id>/recommendations": [
        ("GET", f"/api/v1/users/{SENTINEL}/recommendations", None, 200)
    ],
    "api/v1/users/<str:user_id>/rank": [
        ("POST", f"/api/v1/users/{SENTINEL}/rank", {"product_ids": ["victim"]}, 200)
    ],
    "api/v1/trending": [("GET", "/api/v1/trending", None, 200)],
    "api/v1/analytics": [("GET", "/api/v1/analytics", None, 200)],
    "api/v1/experiments": [
        ("GET", "/api/v1/experiments", None, 200),
        (
            "POST",
            "/api/v1/experiments",
            {
                "name": "theirs",
                "surface": "for_user",
                "variants": [{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5}],
            },
            201,
        ),
    ],
    "api/v1/experiments/<int:experiment_id>": [("GET", "/api/v1/experiments/{experiment_id}", None, 404)],
    "api/v1/experiments/<int:experiment_id>/stop": [
        ("POST", "/api/v1/experiments/{experiment_id}/stop", None, 404)
    ],
    "api/v1/experiments/<int:experiment_id>/promote": [
        ("POST", "/api/v1/experiments/{experiment_id}/promote", {"variant": "a"}, 404)
    ],
    "api/v1/users/<str:user_id>/recently-viewed": [
        ("GET", f"/api/v1/users/{SENTINEL}/recently-viewed", None, 200)
    ],
    "api/v1/users/<str:user_id>/buy-again": [("GET", f"/api/v1/users/{SENTINEL}/buy-again", None, 200)],
    "api/v1/users/<str:user_id>/aliases": [
        ("POST", "/api/v1/users/their-user/aliases", {"alias_id": "their-card"}, 201)
    ],
    "api/v1/training-runs": [("POST", "/api/v1/training-runs", None, 202)],
    "api/v1/training-runs/<int:run_id>": [("GET", "/api/v1/training-runs/{run_id}", None, 404)],
    "api/v1/models": [("GET", "/api/v1/models", None, 200)],
    "api/v1/models/<int:version>/activate": [
        ("POST", "/api/v1/models/1/activate", None, 404),
        ("POST", "/api/v1/models/2/activate", None, 404),
    ],
    "api/v1/models/<int:version>/replay": [
        ("POST", "/api/v1/models/1/replay", None, 404),
        ("POST", "/api/v1/models/2/replay", {"days": 3}, 404),
    ],
}


def test_every_scoped_route_has_an_isolation_case():
    assert scoped_routes() == set(CASES)


@pytest.fixture
def victim(api, store):
    api.patch("/api/v1/store", {"name": SENTINEL, "share_network": False})
    api.post(
        "/api/v1/products/bulk",
        [product("victim", title=SENTINEL, brand=SENTINEL, category_path=[SENTINEL], price=1)],
    )
    api.post("/api/v1/events", {"user_id": SENTINEL, "product_id": "victim", "type": "purchase"})
    TrainedModel.objects.create(
        store=store, version=1, is_active=True, metrics={"note": SENTINEL}, artifact=b""
    )
    TrainedModel.objects.create(store=store, version=2, metrics={"note": SENTINEL}, artifact=b"")
    TrainingRun.objects.create(store=store, status="succeeded", message=SENTINEL)
    UserAlias.objects.create(store=store, alias_id="their-card", user_id=SENTINEL)
    Experiment.objects.create(
        store=store, name=SENTINEL, surface="for_user",
        variants=[{"name": "a", "traffic": 0.5, "config": {}}, {"name": "b", "traffic": 0.5, "config": {}}],
    )  # fmt: skip
    DailyMetric.objects.create(
        store=store,
        date=datetime.now(tz=UTC).date(),
        surface="for_user",
        variant=SENTINEL[:64],
        impressions=7,
    )
    return store


def snapshot(store) -> tuple:
    store.refresh_from_db()
    item = Product.objects.get(store=store, external_id="victim")
    settings = StoreSettings.objects.get(store=store)
    return (
        item.title,
        item.price,
        item.is_active,
        item.updated_at,
        store.name,
        settings.share_network,
        Event.objects.filter(store=store).count(),
        list(
            TrainedModel.objects.filter(store=store).order_by("version").values_list("version", "is_active")
        ),
        list(TrainingRun.objects.filter(store=store).values_list("id", "status")),
        list(UserAlias.objects.filter(store=store).values_list("alias_id", "user_id")),
        list(ApiKey.objects.filter(store=store).values_list("prefix", "revoked_at", "expires_at")),
        list(Experiment.objects.filter(store=store).values_list("id", "status", "winner")),
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), [case for cases in CASES.values() for case in cases]
)
def test_other_store_cannot_see_or_change(victim, api, other_api, method, path, body, expected):
    path = path.format(
        run_id=TrainingRun.objects.get(store=victim).id,
        key_prefix=ApiKey.objects.filter(store=victim).first().prefix,  # type: ignore[union-attr]
        experiment_id=Experiment.objects.get(store=victim).pk,
    )
    if method == "GET":
        api.request(method, path)  # the victim asks first: its answer may now be in the answer cache
    before = snapshot(victim)
    response = other_api.request(method, path, body)
    assert response.status_code == expected
    content = response.content.decode()
    if path == f"/api/v1/users/{SENTINEL}" or path.endswith("/data"):
        # erasure and export name the ids asked about, and nothing of the victim's
        answer = response.json()
        assert answer.pop("user_id") == SENTINEL and answer.pop("identities") == [SENTINEL]
        assert answer.get("events", []) == [] and answer.get("aliases", []) == []
        assert set(answer.get("deleted", {}).values()) <= {0}
        content = str(answer)
    assert SENTINEL not in content
    if method == "GET" and (
        path in {"/api/v1/products", "/api/v1/models", "/api/v1/trending"}
        or (path.startswith("/api/v1/users/") and not path.endswith("/data"))
    ):
        assert response.json()["items"] == []
    if path == "/api/v1/analytics":
        assert response.json()["series"] == [] and response.json()["totals"]["impressions"] == 0
    assert snapshot(victim) == before


def test_other_stores_product_with_same_id_is_its_own(victim, other_api, api):
    # the other store may use the same external id; it makes a separate product
    response = other_api.post("/api/v1/products/bulk", [product("victim", title="theirs")])
    assert response.json()["created"] == 1
    assert api.get("/api/v1/products/victim").json()["title"] == SENTINEL
    assert other_api.get("/api/v1/products/victim").json()["title"] == "theirs"
