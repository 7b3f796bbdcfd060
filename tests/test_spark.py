"""The global model's counts on Spark (local mode, a real JVM): the same slices as the in-process engine,
from the events in PostgreSQL and the archive alike, aliases resolved and event weights applied."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from events.services import events_maintain
from recommendations.artifacts import artifact_load
from recommendations.models import GlobalModel, NetworkSlice
from tests.conftest import make_tenant, product

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17+ (Debian: openjdk-17-jre)"),
]


@pytest.fixture(autouse=True)
def folders(settings: Any, tmp_path: Any) -> None:
    settings.EVENT_ARCHIVE_URL = str(tmp_path / "archive")
    settings.SPARK_STAGING_URL = str(tmp_path / "spark")
    settings.SPARK_MASTER = "local[2]"


def sharing_store(slug: str, items: list[str], categories: dict[str, str]) -> Any:
    tenant = make_tenant(slug)
    rows = [
        product(item, title=f"{item} thing", brand="Same" if item.endswith("shared") else slug,
                **({"category_path": [categories[item]]} if item in categories else {}))
        for item in items
    ]  # fmt: skip
    assert tenant.api.post("/api/v1/products/bulk", rows).status_code == 200
    assert tenant.api.patch("/api/v1/store", {"share_network": True}).status_code == 200
    return tenant


def shop_events(tenant: Any, items: list[str], rng: np.random.Generator, *, start: datetime) -> None:
    kinds = ["view", "view", "add_to_cart", "purchase", "click"]
    events = [
        {
            "user_id": f"s{rng.integers(0, 25)}",
            "product_id": items[int(rng.integers(0, len(items)))],
            "type": kinds[int(rng.integers(0, len(kinds)))],
            "timestamp": (start + timedelta(hours=i)).isoformat(),
        }
        for i in range(300)
    ]
    assert tenant.api.post("/api/v1/events", events).json()["accepted"] == 300


def train(engine: str) -> dict[int, Any]:
    out = StringIO()
    call_command("train_global", "--engine", engine, stdout=out)
    model = GlobalModel.objects.get(is_active=True)
    assert model.metrics["engine"] == engine
    assert model.metrics["peak_memory_mb"] > 0 and model.metrics["slices"] >= 1
    return {
        row.store_id: artifact_load(bytes(row.artifact))
        for row in NetworkSlice.objects.filter(global_model=model)
    } | {"events": model.metrics["events"], "pairs": model.metrics["network_pairs"]}


def test_spark_and_in_process_give_the_same_slices(db):
    rng = np.random.default_rng(7)
    categories = {"a1": "Shoes", "a2": "Shoes", "a3": "Food", "b1": "Shoes", "b2": "Food", "c1": "Toys"}
    shared = ["x-shared", "y-shared", "z-shared", "w-shared"]  # the same products in every store
    categories |= {"x-shared": "Shoes", "y-shared": "Food"}
    stores = {
        "spark-a": ["a1", "a2", "a3", "a4", *shared],
        "spark-b": ["b1", "b2", "b3", *shared],
        "spark-c": ["c1", "c2", *shared],
        "spark-d": ["d1", *shared],  # each of its shoppers takes one product: mass, and no pair
    }
    tenants = {slug: sharing_store(slug, items, categories) for slug, items in stores.items()}
    recent = datetime.now(tz=UTC) - timedelta(days=20)
    for slug, tenant in tenants.items():
        if slug != "spark-d":
            shop_events(tenant, stores[slug], rng, start=recent)
    lonely = [
        {"user_id": f"d{i}", "product_id": item, "type": "purchase", "timestamp": recent.isoformat()}
        for i, item in enumerate(["d1", "x-shared", "y-shared"])
    ]
    assert tenants["spark-d"].api.post("/api/v1/events", lonely).json()["accepted"] == 3
    # one store's older events are archived (past its retention), another's events carry aliases and
    # its own event weights
    a = tenants["spark-a"]
    shop_events(a, stores["spark-a"], rng, start=datetime(2019, 3, 1, tzinfo=UTC))
    assert a.api.patch("/api/v1/store", {"settings": {"retention_days": 365}}).status_code == 200
    assert events_maintain()["rows_archived"] == 300
    b = tenants["spark-b"]
    assert b.api.post("/api/v1/users/s1/aliases", {"alias_id": "s2"}).status_code in (200, 201)
    assert (
        b.api.patch("/api/v1/store", {"settings": {"event_weights": {"view": 0, "purchase": 5}}}).status_code
        == 200
    )

    in_process = train("in-process")
    spark = train("spark")
    assert spark["events"] == in_process["events"] > 0
    assert spark["pairs"] == in_process["pairs"] > 0
    store_ids = {tenant.store.id for tenant in tenants.values()}
    assert set(in_process) - {"events", "pairs"} == store_ids == set(spark) - {"events", "pairs"}
    for store_id in store_ids:
        ours, theirs = in_process[store_id], spark[store_id]
        assert np.array_equal(ours["product_ids"], theirs["product_ids"])
        assert np.array_equal(ours["matrix"].indptr, theirs["matrix"].indptr)
        assert np.array_equal(ours["matrix"].indices, theirs["matrix"].indices)
        assert np.allclose(ours["matrix"].data, theirs["matrix"].data, rtol=1e-5)
        assert ours["matrix"].nnz > 0
