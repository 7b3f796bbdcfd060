"""The shopper simulator at bench size, through the whole system: an A/B test of the store model against
the popularity control, and the business figures checked against what the shoppers did.

    python bench/simulate.py [--shoppers 3000] [--products 400] [--categories 8] [--visits 4000] [--looks 8]
                             [--click-match 0.15] [--click-other 0.01] [--aa]

Runs the production server (config/web.py), a Celery worker and beat (the drain every 5 s, the rollup every
10 s, as in production, with the rollup's lag at 2 s instead of 30) on the embedded services, in its own
database (`recsys_simulate`, made anew each run). Shoppers with hidden tastes (operations/simulator.py)
make a history through the API, the worker trains the store's model, then the experiment runs: each visit
a view, the shopper's answer, and clicks and purchases by the simulator's known model. The experiment is
looked at `--looks` times while it runs (its always-valid p-value may be read at every look). At the end
it prints, per variant, what the simulator counted beside what the API reports, the CTR the simulator's
model expects beside the measured one, the lift and the verdict; and writes
bench/out/simulate-experiment.png (CTR with its interval and the p-value at every look). The load
generator is one Python client on the same 2 cores as the server, the worker and PostgreSQL.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_env import BENCH_LIMITS, django_setup  # noqa: E402
from ingest import free_port, wait_healthy  # noqa: E402

DATABASE = "recsys_simulate"
OUT = ROOT / "bench" / "out"


class HttpResponse:
    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


class HttpClient:
    """Keep-alive HTTP with the store's key, shaped like the tests' client."""

    def __init__(self, port: int, key: str):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def _send(self, method: str, path: str, body: bytes | None) -> HttpResponse:
        for attempt in range(3):
            try:
                self.connection.request(method, path, body=body, headers=self.headers)
                response = self.connection.getresponse()
                return HttpResponse(response.status, response.read())
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, **query: Any) -> HttpResponse:
        return self._send("GET", f"{path}?{urlencode(query)}" if query else path, None)

    def post(self, path: str, body: Any = None) -> HttpResponse:
        return self._send("POST", path, json.dumps(body).encode() if body is not None else b"")


def _fresh_database() -> None:
    """The bench's database, made anew (owned by the owner role, as config/embedded.py makes them)."""
    import psycopg

    from config import embedded

    info = embedded.ensure_postgres(DATABASE)
    with psycopg.connect(host=info["HOST"], port=info["PORT"], user="postgres", dbname="postgres",
                         autocommit=True) as conn:  # fmt: skip
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    embedded.ensure_postgres(DATABASE)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shoppers", type=int, default=3000)
    parser.add_argument("--products", type=int, default=400)
    parser.add_argument("--categories", type=int, default=8)
    parser.add_argument("--visits", type=int, default=4000)
    parser.add_argument(
        "--looks", type=int, default=8, help="times the experiment is looked at while it runs"
    )
    parser.add_argument(
        "--click-match", type=float, default=0.15, help="P(click), an item of the shopper's taste"
    )
    parser.add_argument("--aa", action="store_true", help="an A/A test: both variants the store model")
    parser.add_argument("--click-other", type=float, default=0.01, help="P(click), any other item")
    args = parser.parse_args()

    from operations.simulator import A_A, EXPERIMENT, World, run_visits, setup_store, totals

    _fresh_database()
    os.environ["RECSYS_DATABASE_NAME"] = DATABASE
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    django_setup()
    from django.conf import settings

    from tenants.services import store_create

    _, issued = store_create(slug="simulated", name="Simulated shop")
    env = {**os.environ, **BENCH_LIMITS, "OUTCOMES_ROLLUP_LAG_SECONDS": "2", "LOG_LEVEL": "WARNING",
           "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}  # fmt: skip
    env.pop("RECSYS_DATABASE_ROLE", None)
    from config import web

    port = free_port()
    queues = ",".join(settings.CELERY_TASK_QUEUES_USED)
    schedule = OUT / "simulate-celerybeat-schedule"
    OUT.mkdir(parents=True, exist_ok=True)
    processes = [
        subprocess.Popen(web.command(bind=f"127.0.0.1:{port}"), cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues,
                          "--concurrency", "1", "--loglevel", "WARNING"], cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "beat", "--schedule", str(schedule),
                          "--loglevel", "WARNING"], cwd=ROOT, env=env),
    ]  # fmt: skip
    try:
        wait_healthy(port)
        client = HttpClient(port, issued.raw_key)
        world = World(categories=args.categories, products=args.products, shoppers=args.shoppers,
                      click_match=args.click_match, click_other=args.click_other)  # fmt: skip
        started = time.monotonic()
        setup_store(client, world)
        print(f"history: {len(world.history())} events of {args.shoppers} shoppers, "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        run_id = client.post("/api/v1/training-runs").json()["id"]
        while (run := client.get(f"/api/v1/training-runs/{run_id}").json())["status"] not in {
            "succeeded",
            "failed",
        }:
            time.sleep(1)
        print(f"model: {run['status']}, NDCG@10 {run['metrics'].get('ndcg@10')}", flush=True)
        design = A_A if args.aa else EXPERIMENT
        control, treatment = (variant["name"] for variant in design["variants"])
        experiment = client.post("/api/v1/experiments", design).json()
        looks: list[dict[str, Any]] = []
        counted: dict[str, Any] = {}
        per_look = max(1, args.visits // args.looks)
        started = time.monotonic()
        for look in range(args.looks):
            run_visits(client, world, per_look, counted=counted)
            # the figures so far credited, then a look at the experiment as a merchant would
            _caught_up(client, totals(counted))
            body = client.get(f"/api/v1/experiments/{experiment['id']}").json()
            model = next(r for r in body["results"] if r["variant"] == treatment)
            looks.append({"visits": (look + 1) * per_look, "p_value": model["p_value"],
                          "results": body["results"], "verdict": body["verdict"]["decision"]})  # fmt: skip
            print(f"look {look + 1}: {(look + 1) * per_look} visits, {treatment} p={model['p_value']}, "
                  f"{body['verdict']['decision']} ({time.monotonic() - started:.0f} s)",
                  flush=True)  # fmt: skip
        expected = totals(counted)
        reported = _caught_up(client, expected)
        body = client.get(f"/api/v1/experiments/{experiment['id']}").json()
        _report(args, counted, expected, reported, body, looks, control, treatment)
        _plot(looks)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _caught_up(client: HttpClient, expected: dict[str, Any], seconds: float = 120) -> dict[str, Any]:
    """The analytics' totals once they equal the simulator's counts (the drain and the rollup have run),
    or as they are after `seconds`."""
    today = datetime.now(tz=UTC).date()
    window = {"start": (today - timedelta(days=1)).isoformat(), "end": today.isoformat()}
    deadline = time.monotonic() + seconds
    while True:
        found = client.get("/api/v1/analytics", **window).json()["totals"]
        reported = {name: found[name] for name in expected}
        if reported == expected or time.monotonic() > deadline:
            return reported
        time.sleep(1)


def _report(
    args: Any,
    counted: dict,
    expected: dict,
    reported: dict,
    body: dict,
    looks: list,
    control: str,
    treatment: str,
) -> None:
    print(f"\n{args.shoppers} shoppers with hidden tastes, {args.products} products in "
          f"{args.categories} categories, {sum(c.impressions for c in counted.values())} visits")  # fmt: skip
    print(f"{'variant':<12} {'':>10} {'impressions':>11} {'clicks':>7} {'purchases':>9} {'revenue':>10} "
          f"{'CTR':>7} {'expected CTR':>12} {'95% interval':>17} {'lift':>7} {'p':>8}")  # fmt: skip
    results = {row["variant"]: row for row in body["results"]}
    for name, figures in counted.items():
        row = results[name]
        interval = "[{:.3f}, {:.3f}]".format(*row["ctr_interval"]) if row["ctr_interval"] else "-"
        lift = f"{row['lift_vs_control']:+.1%}" if row["lift_vs_control"] is not None else "control"
        print(f"{name:<12} {'simulated':>10} {figures.impressions:>11} {figures.clicks:>7} "
              f"{figures.purchases:>9} {figures.revenue:>10.2f} {figures.ctr:>7.3f} "
              f"{figures.expected_ctr:>12.3f}")  # fmt: skip
        print(f"{'':<12} {'reported':>10} {row['impressions']:>11} {row['clicks']:>7} {row['purchases']:>9} "
              f"{row['revenue']:>10.2f} {row['ctr']:>7.3f} {'':>12} {interval:>17} {lift:>7} "
              f"{row['p_value'] if row['p_value'] is not None else '-':>8}")  # fmt: skip
    true_lift = counted[treatment].expected_ctr / counted[control].expected_ctr - 1
    print(f"true lift (the simulator's model, on the answers shown): {true_lift:+.1%}; measured "
          f"{results[treatment]['lift_vs_control']:+.1%}")  # fmt: skip
    print(f"verdict: {body['verdict']['decision']} ({body['verdict']['message']})")
    first = next((look["visits"] for look in looks if look["verdict"] == "variant_wins"), None)
    print(f"significant from the look at {first} visits on" if first else "never significant")
    print(f"analytics totals  reported {reported}\n                  counted  {expected}  "
          f"{'EQUAL' if reported == expected else 'DIFFERENT'}")  # fmt: skip


def _plot(looks: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    visits = [look["visits"] for look in looks]
    for name in [row["variant"] for row in looks[0]["results"]]:
        rows = [next(r for r in look["results"] if r["variant"] == name) for look in looks]
        ctr = [r["ctr"] or 0 for r in rows]
        low = [(r["ctr_interval"] or [0, 0])[0] for r in rows]
        high = [(r["ctr_interval"] or [0, 0])[1] for r in rows]
        left.plot(visits, ctr, marker="o", label=name)
        left.fill_between(visits, low, high, alpha=0.2)
    left.set(xlabel="visits", ylabel="CTR (95% interval)", title="CTR per variant at each look")
    left.legend()
    right.plot(visits, [max(look["p_value"], 1e-12) for look in looks], marker="o")  # (0 drawn at 1e-12)
    right.axhline(0.05, color="grey", linestyle="--")
    right.set(xlabel="visits", ylabel="always-valid p (against the control)", yscale="log",
              title="the p-value at each look")  # fmt: skip
    figure.tight_layout()
    figure.savefig(OUT / "simulate-experiment.png", dpi=110)
    print(f"wrote {OUT / 'simulate-experiment.png'}")


if __name__ == "__main__":
    main()
