"""Fixtures at hand in every test: `store` and `other_store` with API clients bound to their keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, RequestFactory
from django.utils.datastructures import CaseInsensitiveMapping

from tenants.models import Store
from tenants.services import api_key_issue, store_create


class WsgiResponse:
    """What the production WSGI application answered, shaped like a test client's response."""

    def __init__(self, status: str, headers: list[tuple[str, str]], content: bytes):
        self.status_code = int(status.split()[0])
        self.headers = CaseInsensitiveMapping(dict(headers))
        self.content = content

    def json(self) -> Any:
        return orjson.loads(self.content)


class WsgiClient:
    """Requests through `config.wsgi.application`, the one the web server serves: the fast path for cached
    answers, then Django with every middleware."""

    def __init__(self) -> None:
        self.factory = RequestFactory()

    def _call(self, request: Any) -> WsgiResponse:
        from config.wsgi import application

        answered: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answered.update(status=status, headers=headers)

        # as Django's test client does: the test's transaction is not a connection to close
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            chunks = application(request.environ, start_response)
            content = b"".join(chunks)
            if hasattr(chunks, "close"):
                chunks.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return WsgiResponse(answered["status"], answered["headers"], content)

    def __getattr__(self, method: str) -> Any:
        make = getattr(self.factory, method)
        return lambda *args, **kwargs: self._call(make(*args, **kwargs))


class ApiClient:
    """A Django test client that speaks JSON and carries a bearer key. With `through_wsgi` set (on the
    class, for a test), requests go through the production WSGI application instead."""

    through_wsgi = False

    def __init__(self, raw_key: str | None):
        self.raw_key = raw_key
        self.client = WsgiClient() if self.through_wsgi else Client()

    def _headers(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.raw_key}"} if self.raw_key else {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        meta: dict[str, str] | None = None,
        **query: Any,
    ) -> Any:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        call = getattr(self.client, method.lower())
        extra = {**self._headers(), **(meta or {})}
        if method.upper() in {"GET", "DELETE"} and data is None:
            return call(path, query or None, **extra)
        return call(path, data=data or b"", content_type="application/json", **extra)

    def get(self, path: str, meta: dict[str, str] | None = None, **query: Any) -> Any:
        """`meta`: extra WSGI environ entries, e.g. {"HTTP_X_REQUEST_ID": "r1"} for a header."""
        return self.request("GET", path, meta=meta, **query)

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        return self.request("POST", path, body, raw)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


@dataclass
class Tenant:
    store: Store
    raw_key: str
    api: ApiClient

    def client_with_scopes(self, *scopes: str) -> ApiClient:
        issued = api_key_issue(store=self.store, name="scoped", scopes=list(scopes))
        return ApiClient(issued.raw_key)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts (a web server, a worker): the test settings, on the test
    database and broker."""
    import os

    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "RECSYS_DATABASE_NAME": settings.DATABASES["default"]["NAME"],
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "RECSYS_DATABASE_ROLE": "app",  # as in production: bound by row-level security
        **extra,
    }


def make_tenant(slug: str) -> Tenant:
    store, issued = store_create(slug=slug, name=slug.title())
    return Tenant(store=store, raw_key=issued.raw_key, api=ApiClient(issued.raw_key))


@pytest.fixture(autouse=True)
def empty_impressions_stream() -> Any:
    """Each test starts with no impressions waiting in Redis (earlier tests' answers append to it)."""
    from core import answer_cache

    answer_cache.impressions_clear()
    yield


@pytest.fixture(autouse=True)
def all_stores_scope() -> Any:
    """A test's own setup and checks see every store, as an operator's command does (core/tenancy.py);
    the requests it makes are scoped to their key's store, and test_tenancy.py leaves this scope."""
    from core import tenancy

    token = tenancy.enter(tenancy.ALL)
    yield
    tenancy.leave(token)


@pytest.fixture(autouse=True)
def system_actor() -> None:
    """Services called by a test act as the system (a request of an earlier test named its key)."""
    from core.observability import actor_var

    actor_var.set("system")


@pytest.fixture(autouse=True)
def serving_memory(tmp_path: Any) -> Any:
    """Each test starts with nothing loaded and its own model file cache: model ids repeat across test
    databases."""
    from django.test import override_settings

    from recommendations.serving.state import serving_state

    serving_state().clear()
    with override_settings(MODEL_CACHE_DIR=str(tmp_path / "models")):
        yield
    serving_state().clear()


@pytest.fixture
def tenant(db: Any) -> Tenant:
    return make_tenant("shop-a")


@pytest.fixture
def other_tenant(db: Any) -> Tenant:
    return make_tenant("shop-b")


@pytest.fixture
def store(tenant: Tenant) -> Store:
    return tenant.store


@pytest.fixture
def other_store(other_tenant: Tenant) -> Store:
    return other_tenant.store


@pytest.fixture
def api(tenant: Tenant) -> ApiClient:
    return tenant.api


@pytest.fixture
def other_api(other_tenant: Tenant) -> ApiClient:
    return other_tenant.api


def product(external_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": external_id, "title": f"Product {external_id}", **fields}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """Stop the embedded services this test run started (not ones it found running), so that nothing
    outlives `make test`."""
    from django.db import connections

    from config import embedded

    connections.close_all()
    if embedded.started_here["broker"]:
        embedded.stop_broker()
    if embedded.started_here["postgres"]:
        embedded.stop_postgres()
