"""Many small stores in one deployment: computed and cached answers with traffic spread over all of them.

    python bench/stores.py [--stores 1000] [--products 300] [--events 3000] [--seconds 10]

Builds (once; reused on later runs) `--stores` stores in the `recsys_bench_stores` database, each with
its own catalog, shoppers whose tastes follow hidden clusters, and one trained model, with progress.
Then starts the production server (config/web.py) with its real worker count and drives it with wrk (C,
on the same two cores): every request picks a store at random (its own API key) and asks for a shopper's
for-user answer or a product's related products, either distinct (computed: a parameter of its own) or
repeated (cached). Prints requests/s, p50/p95/p99, the web workers' memory (RSS and PSS: memory-mapped
models are shared between workers, so PSS is each worker's fair share) and how many models and catalogs the
workers loaded during the measured run (after one warm-up pass over all stores: none, while they fit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import wrk
from bench_env import BENCH_LIMITS, clear_impressions

for _name, _value in BENCH_LIMITS.items():  # this process stores events through the services too
    os.environ.setdefault(_name, _value)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("RECSYS_DATABASE_NAME", "recsys_bench_stores")
os.environ.setdefault("LOG_LEVEL", "WARNING")
OUT = ROOT / "bench" / "out"
PREFIX = "small-"


def store_events(products: int, events: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    clusters = 15
    users = max(events // 10, 1)
    cluster_of_user = rng.integers(0, clusters, size=users)
    per_cluster = products // clusters
    runs = events // 5
    user = rng.integers(0, users, size=runs)
    cluster = np.where(rng.random(runs) < 0.8, cluster_of_user[user], rng.integers(0, clusters, size=runs))
    items = cluster[:, None] * per_cluster + np.minimum(rng.zipf(1.6, size=(runs, 5)) - 1, per_cluster - 1)
    kinds = rng.choice(np.array(["view", "add_to_cart", "purchase"]), size=(runs, 5), p=[0.8, 0.12, 0.08])
    start = datetime.now(tz=UTC) - timedelta(days=30)
    at = rng.uniform(0, 29 * 86400, size=runs)
    return [
        {"user_id": f"U{user[r]}", "session_id": f"S{r}", "product_id": f"P{items[r, step]}",
         "type": str(kinds[r, step]),
         "timestamp": (start + timedelta(seconds=float(at[r] + 60 * step))).isoformat()}
        for r in range(runs) for step in range(5)
    ]  # fmt: skip


def prepare(stores: int, products: int, events: int, retrain: bool = False) -> list[tuple[str, int]]:
    """(an API key, its shoppers) per store; stores are built and trained on the first run only."""
    from bench_env import django_setup

    django_setup()
    from django.core.management import call_command

    from catalog.services import product_bulk_upsert
    from events.services import event_ingest
    from recommendations.models import TrainedModel, TrainingRun
    from recommendations.services import training_run_execute
    from tenants.models import ApiKey, Store
    from tenants.services import api_key_issue, store_create

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    out = []
    for index in range(stores):
        slug = f"{PREFIX}{index}"
        store = Store.objects.filter(slug=slug).first()
        if store is None:
            store, _ = store_create(slug=slug)
            product_bulk_upsert(store=store, rows=[
                {"id": f"P{i}", "title": f"item {i} of {slug}", "category_path": [f"C{i % 15}"],
                 "brand": f"B{i % 7}", "price": 5 + i % 50} for i in range(products)
            ])  # fmt: skip
            event_ingest(store=store, payload=store_events(products, events, seed=index))
        if retrain or not TrainedModel.objects.filter(store=store, is_active=True).exists():
            run = TrainingRun.objects.create(store=store, trigger="bench")
            training_run_execute(run_id=run.id)
        # keys are stored hashed: each run issues its own (and drops the last run's)
        ApiKey.objects.filter(store=store, name="bench-stores").delete()
        out.append((api_key_issue(store=store, name="bench-stores").raw_key, max(events // 10, 1)))
        if (index + 1) % 50 == 0 or index + 1 == stores:
            print(f"  {index + 1}/{stores} stores ready ({time.perf_counter() - began:.0f} s)", flush=True)
    return out


# each line is "<api key> <path>": a store's key, then what to ask it
SCRIPT = r"""
local counter = 0
function start(args)
  distinct = args[3] == "1"
  counter = (index * 7919) % #lines
end
function request()
  counter = counter + 1
  local key, path = lines[(counter % #lines) + 1]:match("^(%S+) (%S+)$")
  if distinct then path = path .. "&n=" .. salt .. "-" .. counter end
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. key})
end
"""


def drive(port: int, lines: list[str], clients: int, seconds: float, distinct: bool) -> dict:
    script = SCRIPT.replace('args[3] == "1"', "true" if distinct else "false")
    totals = wrk.run(script, lines, port=port, threads=2, connections=clients, seconds=seconds,
                     salt=str(time.time_ns()))  # fmt: skip
    return {"rps": round(totals.requests / totals.seconds), "p50_ms": totals.p50_ms, "p95_ms": totals.p95_ms,
            "p99_ms": totals.p99_ms, "errors": totals.errors, "requests": totals.requests}  # fmt: skip


def workers_memory(root_pid: int) -> list[tuple[int, float, float]]:
    """(pid, RSS MiB, PSS MiB) of each process under the server."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == root_pid:
                children.append(int(entry.name))
    out = []
    for pid in [root_pid, *children]:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        values = {
            m.group(1): int(m.group(2)) / 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", rollup, re.M)
        }
        out.append((pid, values.get("Rss", 0.0), values.get("Pss", 0.0)))
    return out


def metric(port: int, name: str) -> dict[str, float]:
    """A metric of the server's /metrics by its `kind` label (summed over the web processes)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: S310
    found = {"model": 0.0, "catalog": 0.0}
    for kind, value in re.findall(rf'^{name}\{{kind="(\w+)"\}} ([\d.e+]+)', text, re.M):
        found[kind] = float(value)
    return found


def loads(port: int) -> dict[str, float]:
    return metric(port, "recsys_serving_loads_total")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--retrain", action="store_true", help="train a new version of every store first")
    args = parser.parse_args()
    print(f"preparing {args.stores} stores of {args.products} products and {args.events} events", flush=True)
    stores = prepare(args.stores, args.products, args.events, args.retrain)

    from ingest import free_port, wait_healthy

    from config import web

    port = free_port()
    metrics = Path(tempfile.mkdtemp(prefix="recsys-metrics-"))
    env = {**os.environ, **BENCH_LIMITS, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    workers = args.workers or web.default_workers()
    command = web.command(bind=f"127.0.0.1:{port}", workers=workers, threads=args.threads)
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    rng = np.random.default_rng(5)
    rows = []
    try:
        wait_healthy(port)
        clear_impressions()
        # per store: two of its shoppers and two of its products, asked in a random order of stores
        lines = []
        for key, users in stores:
            for user in rng.choice(users, size=2, replace=False):
                lines.append(f"{key} /api/v1/users/U{int(user)}/recommendations?limit=10")
            for item in rng.choice(args.products, size=2, replace=False):
                lines.append(f"{key} /api/v1/products/P{int(item)}/related?limit=10")
        lines = [lines[i] for i in rng.permutation(len(lines))]
        # one pass over every line, so each worker has loaded what it serves and each shopper's profile is
        # in Redis (as on a live deployment); it also caches these answers for the cached run
        drive(port, lines, clients=args.clients, seconds=max(5.0, len(lines) / 300), distinct=False)
        drive(port, lines, clients=args.clients, seconds=max(5.0, len(lines) / 300), distinct=True)
        threads = args.threads or web.BLOCKING_THREADS
        print(f"machine: {os.cpu_count()} cores; granian {workers} workers x {threads} threads; "
              f"{len(stores)} stores; wrk with {args.clients} connections on the same cores",
              flush=True)  # fmt: skip
        print(
            f"{'traffic':<22} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>7} "
            f"{'model loads':>12} {'catalog loads':>14}"
        )
        for name, distinct in (("spread, computed", True), ("spread, cached", False)):  # noqa: B007
            before = loads(port)
            row = drive(port, lines, args.clients, args.seconds, distinct)
            after = loads(port)
            row.update(traffic=name, model_loads=after["model"] - before["model"],
                       catalog_loads=after["catalog"] - before["catalog"])  # fmt: skip
            rows.append(row)
            print(f"{name:<22} {row['rps']:>7} {row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} "
                  f"{row['p99_ms']:>7.2f} {row['errors']:>7} {row['model_loads']:>12.0f} "
                  f"{row['catalog_loads']:>14.0f}", flush=True)  # fmt: skip
        held = metric(port, "recsys_serving_bytes")
        print(f"held by the {workers} web workers together: models {held['model'] / 2**20:.0f} MiB, "
              f"catalogs {held['catalog'] / 2**20:.0f} MiB", flush=True)  # fmt: skip
        memory = workers_memory(server.pid)
        for pid, rss, pss in memory:
            print(f"process {pid}: RSS {rss:.0f} MiB, PSS {pss:.0f} MiB")
        rows.append({"memory": [{"pid": pid, "rss_mib": rss, "pss_mib": pss} for pid, rss, pss in memory]})
    finally:
        server.terminate()
        server.wait(timeout=20)
        clear_impressions()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "stores.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
