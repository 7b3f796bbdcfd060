"""Fixtures at hand in every test: `store` and `other_store` with API clients bound to their keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.test import Client

from tenants.models import Store
from tenants.services import api_key_issue, store_create


class ApiClient:
    """A Django test client that speaks JSON and carries a bearer key."""

    def __init__(self, raw_key: str | None):
        self.raw_key = raw_key
        self.client = Client()

    def _headers(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.raw_key}"} if self.raw_key else {}

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, **query: Any
    ) -> Any:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        call = getattr(self.client, method.lower())
        if method.upper() in {"GET", "DELETE"} and data is None:
            return call(path, query or None, **self._headers())
        return call(path, data=data or b"", content_type="application/json", **self._headers())

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, **query)

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


def make_tenant(slug: str) -> Tenant:
    store, issued = store_create(slug=slug, name=slug.title())
    return Tenant(store=store, raw_key=issued.raw_key, api=ApiClient(issued.raw_key))


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
