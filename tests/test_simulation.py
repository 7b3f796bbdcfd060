"""The shopper simulator (operations/simulator.py), small, end to end with a real worker: its experiment of
the store model against popularity reaches the right verdict, and the analytics and the experiment's
results equal what the simulator counted."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from operations.simulator import EXPERIMENT, World, run_visits, setup_store, totals
from tenants.models import Store
from tests.conftest import make_tenant
from tests.test_worker import worker  # noqa: F401 - the fixture


def _until(check, seconds: float, what: str, worker_process) -> object:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    worker_process.terminate()
    pytest.fail(f"{what}\n{worker_process.stdout.read()[-3000:]}")


@pytest.mark.slow
def test_the_simulated_experiment_finds_the_true_lift_and_the_figures_equal_the_counts(worker):  # noqa: F811
    from outcomes.tasks import impressions_drain_task, outcomes_rollup_task

    tenant = make_tenant("simulated-shop")
    Store.objects.filter(pk=tenant.store.pk).update(rate_limit_per_second=0)  # (the operator's: no limit)
    api = tenant.api
    world = World(categories=4, products=40, shoppers=150, history_views=8)
    setup_store(api, world)
    run_id = api.post("/api/v1/training-runs").json()["id"]
    _until(lambda: api.get(f"/api/v1/training-runs/{run_id}").json()["status"] == "succeeded", 120,
           "the model was not trained", worker)  # fmt: skip
    experiment = api.post("/api/v1/experiments", EXPERIMENT).json()
    counted = run_visits(api, world, 300)
    assert set(counted) == {"popularity", "model"}
    # the simulator's own model: the store's model shows shoppers more of their taste
    assert counted["model"].expected_ctr > 1.5 * counted["popularity"].expected_ctr
    expected = totals(counted)
    today = datetime.now(tz=UTC).date()
    window = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}

    def reported() -> dict | None:
        impressions_drain_task.delay()  # what beat sends every 5 and 10 seconds
        outcomes_rollup_task.delay()
        found = api.get("/api/v1/analytics", **window).json()["totals"]
        figures = {name: found[name] for name in ("impressions", "clicks", "purchases", "revenue")}
        return figures if figures == expected else None

    _until(reported, 90, f"the analytics did not reach the simulator's counts {expected}", worker)
    body = api.get(f"/api/v1/experiments/{experiment['id']}").json()
    results = {row["variant"]: row for row in body["results"]}
    for name, figures in counted.items():
        row = results[name]
        assert (row["impressions"], row["clicks"], row["purchases"]) == (
            figures.impressions, figures.clicks, figures.purchases
        )  # fmt: skip
        assert row["users"] == len(figures.shoppers)
        assert row["revenue"] == round(figures.revenue, 2)
    assert body["verdict"]["decision"] == "variant_wins" and body["verdict"]["variant"] == "model"
    assert results["model"]["lift_vs_control"] > 0
