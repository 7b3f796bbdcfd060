"""A real Celery worker with a real broker (Redis on 127.0.0.1:6379 where one answers, otherwise the
embedded one) runs a training run requested through the API, end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from recommendations.serving.state import serving_state
from tenants.models import Store
from tests.conftest import make_tenant, subprocess_env
from tests.test_recommendations import CATALOG, planted_events

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker(transactional_db):
    from config.celery import app

    with app.connection_for_write() as connection:  # drop stale messages of earlier test runs
        for queue in settings.CELERY_TASK_QUEUES_USED:
            connection.default_channel.queue_purge(queue)
    env = subprocess_env(OUTCOMES_ROLLUP_LAG_SECONDS="1")  # (30 s in production)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--loglevel", "INFO",
         "-Q", ",".join(settings.CELERY_TASK_QUEUES_USED), "--without-heartbeat", "--without-gossip",
         "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_a_training_run_requested_through_the_api_runs_on_the_worker(worker):
    # given a store with a catalog and events
    tenant = make_tenant("worker-shop")
    api = tenant.api
    api.post("/api/v1/products/bulk", CATALOG)
    api.post("/api/v1/events", planted_events())
    serving_state().clear()
    # when it asks for training
    response = api.post("/api/v1/training-runs")
    assert response.status_code == 202
    run_id = response.json()["id"]
    # then the worker picks it up and finishes it
    deadline = time.monotonic() + 90
    body = {}
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/training-runs/{run_id}").json()
        if body["status"] in {"succeeded", "failed"}:
            break
        time.sleep(0.5)
    if body.get("status") != "succeeded":
        worker.terminate()
        pytest.fail(f"run did not succeed: {body}\n{worker.stdout.read()[-3000:]}")
    assert body["progress"] == 1.0
    assert body["model_version"] == 1
    assert body["metrics"]["ndcg@10"] > 0
    # and the store is served by its own model
    answer = api.get("/api/v1/products/p0/related", limit=1).json()
    assert answer["source"] == "store-model:v1"
    assert answer["items"][0]["id"] == "p1"


@pytest.mark.slow
def test_a_store_deleted_through_the_api_is_erased_by_the_worker(worker):
    from tests.test_privacy import rows_of_store

    tenant = make_tenant("erased-shop")
    api = tenant.api
    api.post("/api/v1/products/bulk", CATALOG)
    api.post("/api/v1/events", planted_events(users=10))
    assert rows_of_store(tenant.store.id)
    assert api.delete("/api/v1/store").status_code == 202
    assert api.get("/api/v1/trending").status_code == 401
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Store.objects.filter(pk=tenant.store.id).exists():
        time.sleep(0.5)
    if Store.objects.filter(pk=tenant.store.id).exists():
        worker.terminate()
        pytest.fail(f"the store was not erased\n{worker.stdout.read()[-3000:]}")
    assert rows_of_store(tenant.store.id) == {}


@pytest.mark.slow
def test_answers_served_become_impressions_through_the_worker(worker):
    from outcomes.models import Impression
    from outcomes.tasks import impressions_drain_task

    tenant = make_tenant("impressed-shop")
    tenant.api.post("/api/v1/products/bulk", CATALOG)
    served = {tenant.api.get("/api/v1/trending", limit=n).json()["recommendation_id"] for n in (1, 2, 3)}
    impressions_drain_task.delay()  # what beat sends every 5 seconds
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Impression.objects.filter(store=tenant.store).count() < 3:
        time.sleep(0.5)
    assert (
        set(Impression.objects.filter(store=tenant.store).values_list("recommendation_id", flat=True))
        == served
    )


@pytest.mark.slow
def test_a_click_on_an_answer_shows_in_analytics_through_the_worker(worker):
    from outcomes.tasks import impressions_drain_task, outcomes_rollup_task

    tenant = make_tenant("analytics-shop")
    api = tenant.api
    api.post("/api/v1/products/bulk", CATALOG)
    api.post("/api/v1/events", planted_events(users=10))
    answer = api.get("/api/v1/trending", limit=3).json()
    click = {"user_id": "u", "type": "click", "product_id": answer["items"][2]["id"]}
    api.post("/api/v1/events", {**click, "recommendation_id": answer["recommendation_id"]})
    deadline = time.monotonic() + 60
    totals: dict = {}
    while time.monotonic() < deadline:
        impressions_drain_task.delay()  # what beat sends every 5 and 10 seconds
        outcomes_rollup_task.delay()
        totals = api.get("/api/v1/analytics").json()["totals"]
        if totals["clicks"]:
            break
        time.sleep(1)
    if not totals.get("clicks"):
        worker.terminate()
        pytest.fail(f"the click was not credited: {totals}\n{worker.stdout.read()[-3000:]}")
    assert (totals["impressions"], totals["clicks"], totals["ctr"]) == (1, 1, 1.0)
    from outcomes.models import Attribution

    assert Attribution.objects.get(store=tenant.store).position == 2


@pytest.mark.slow
def test_events_past_retention_are_archived_by_the_worker(worker):
    from datetime import UTC, datetime

    from events.models import Event, EventArchive
    from events.tasks import events_maintain_task

    tenant = make_tenant("archiving-shop")
    api = tenant.api
    api.post("/api/v1/products/bulk", CATALOG)
    old = datetime(2015, 6, 1, tzinfo=UTC).isoformat()
    sent = api.post("/api/v1/events", [{"user_id": f"u{i}", "product_id": "p1", "type": "view",
                                        "timestamp": old} for i in range(5)]).json()  # fmt: skip
    assert sent["accepted"] == 5
    assert api.patch("/api/v1/store", {"settings": {"retention_days": 365}}).status_code == 200
    events_maintain_task.delay()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not EventArchive.objects.filter(store=tenant.store).exists():
        time.sleep(0.5)
    if not EventArchive.objects.filter(store=tenant.store).exists():
        worker.terminate()
        pytest.fail(f"nothing was archived\n{worker.stdout.read()[-3000:]}")
    archived = EventArchive.objects.get(store=tenant.store)
    assert archived.rows == 5 and Path(archived.path).exists()
    assert archived.path.startswith(settings.EVENT_ARCHIVE_URL)
    assert not Event.objects.filter(store=tenant.store).exists()
