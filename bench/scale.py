"""Scale-out figures: many stores, events partitioned by month, training by store size, the global model
in process against Spark (local mode).

    python bench/scale.py [--stores 1000] [--events 50000000] [--months 12] [--steps 4]
                          [--skip-global] [--spark-master local[*]] [--json FILE]

Events are generated per store (store sizes spread like a marketplace: a few large stores, many small ones;
shoppers browsing their store's catalog by popularity, some add-to-carts and purchases) and stored through
the ingestion service (validation, then COPY), in `--steps` steps of later and later months, so that the
partitions grow as a deployment's do. After each step it prints the ingest rate, the partitions, and the
latency of the queries that read them: a shopper's latest events (the profile's rebuild) and a store's last
30 days (a training window), both for a sample of stores.

Then it trains the first stage of a small, a median and the largest store, each in a process of its own,
with its wall time and peak memory; and the global model over every store (all of them share, here), in
process and on Spark, with the peak memory of each process tree (the JVM's included).

Into `recsys_bench` (the embedded PostgreSQL, or DATABASE_URL). On this machine (2 cores, shared) the run
is sized down; the printed rows say what was run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("RECSYS_DATABASE_NAME", "recsys_bench")
os.environ.setdefault("LOG_LEVEL", "WARNING")

BATCH = 10_000


def store_sizes(stores: int, events: int, seed: int) -> np.ndarray:
    """Events per store: Zipf-like (the largest store holds a few percent of all), at least 200 each."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, stores + 1) ** 0.9
    rng.shuffle(weights)
    sizes = np.maximum(200, np.floor(weights / weights.sum() * events)).astype(np.int64)
    return sizes


def catalog_size(events: int) -> int:
    return int(min(50_000, max(100, events // 40)))


def store_events(
    size: int, products: int, rng: np.random.Generator, start: datetime, seconds: float
) -> list[dict]:
    users = max(10, size // 12)
    popularity = 1.0 / np.arange(1, products + 1) ** 1.1
    popularity /= popularity.sum()
    items = rng.choice(products, size=size, p=popularity)
    who = rng.integers(0, users, size=size)
    kinds = rng.choice(np.array(["view", "add_to_cart", "purchase"]), size=size, p=[0.85, 0.1, 0.05])
    offsets = np.sort(rng.uniform(0, seconds, size=size))
    return [
        {"user_id": f"U{who[i]}", "product_id": f"P{items[i]}", "type": str(kinds[i]),
         "session_id": f"S{who[i]}-{int(offsets[i] // 3600)}",
         "timestamp": (start + timedelta(seconds=float(offsets[i]))).isoformat()}
        for i in range(size)
    ]  # fmt: skip


def percentiles(samples: list[float]) -> str:
    values = np.array(samples) * 1000
    return f"p50 {np.percentile(values, 50):6.2f} ms  p95 {np.percentile(values, 95):6.2f} ms"


def query_latencies(stores: list, rng: np.random.Generator, samples: int) -> dict[str, list[float]]:
    from django.db import connection

    from core import tenancy
    from events.selectors import user_history

    history, window = [], []
    since = datetime.now(tz=UTC) - timedelta(days=30)
    for _ in range(samples):
        store, size = stores[int(rng.integers(len(stores)))]
        with tenancy.store_scope(store.id):
            user = f"U{int(rng.integers(0, max(10, size // 12)))}"
            began = time.perf_counter()
            user_history(store=store, user_id=user, limit=200)
            history.append(time.perf_counter() - began)
    for store, _ in stores[: max(1, samples // 20)]:
        with tenancy.store_scope(store.id), connection.cursor() as cursor:
            began = time.perf_counter()
            cursor.execute(
                "SELECT user_id, product_id, type, date_part('epoch', timestamp), session_id "
                "FROM events_event WHERE store_id = %s AND timestamp >= %s",
                [store.id, since],
            )
            cursor.fetchall()
            window.append(time.perf_counter() - began)
    return {"history": history, "window": window}


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    from bench_env import process_stats, process_tree

    total = 0
    for current in process_tree(pid, process_stats()):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def measured(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run a command; its wall seconds, the peak resident memory of its process tree, its output."""
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return time.perf_counter() - began, peak[0], output


def train_one(store_id: int) -> None:
    """(child process) The first stage of one store: its load, fit and storing, with no ranking stage."""
    from bench_env import django_setup

    django_setup()
    from recommendations.models import TrainingRun
    from recommendations.services import training_run_execute

    run = TrainingRun.objects.create(store_id=store_id, trigger="bench", options={"ranker": False})
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    print(json.dumps({"status": run.status, "events": run.metrics.get("events"),
                      "phases": run.metrics.get("seconds_by_phase")}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--samples", type=int, default=400, help="queries timed after each step")
    parser.add_argument("--skip-global", action="store_true")
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--train-store", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_store is not None:
        train_one(args.train_store)
        return

    from bench_env import django_setup

    django_setup()
    from django.core.management import call_command
    from django.db import connection

    from catalog.services import product_bulk_upsert
    from events import partitions
    from events.services import event_ingest
    from tenants.models import StoreSettings
    from tenants.services import store_create

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(args.seed)
    sizes = store_sizes(args.stores, args.events, args.seed)
    tag = int(time.time())
    figures: dict = {"stores": args.stores, "events": int(sizes.sum()), "months": args.months, "steps": []}
    print(f"scale bench: {args.stores:,} stores, {int(sizes.sum()):,} events over {args.months} months, "
          f"{args.steps} steps; largest store {int(sizes.max()):,} events, median {int(np.median(sizes)):,}",
          flush=True)  # fmt: skip

    began = time.perf_counter()
    stores = []
    words = ["serum", "shampoo", "lipstick", "brush", "soap", "cream", "mask", "oil", "gel", "spray"]
    for index, size in enumerate(sizes.tolist()):
        store, _ = store_create(slug=f"scale-{tag}-{index}")
        products = catalog_size(size)
        rows = [{"id": f"P{i}", "title": f"{words[i % 10]} {words[(i // 10) % 10]} {i}",
                 "category_path": [f"C{i % 20}"], "brand": f"B{i % 30}", "price": 5 + i % 90}
                for i in range(products)]  # fmt: skip
        for start in range(0, products, BATCH):
            product_bulk_upsert(store=store, rows=rows[start : start + BATCH])
        stores.append((store, size))
    StoreSettings.objects.filter(store__in=[store for store, _ in stores]).update(share_network=True)
    print(f"catalogs: {sum(catalog_size(s) for s in sizes.tolist()):,} products in "
          f"{time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip

    now = datetime.now(tz=UTC)
    first = partitions.month_start(now - timedelta(days=30 * args.months))
    step_seconds = (now - first).total_seconds() / args.steps
    total_rows = 0
    for step in range(args.steps):
        start = first + timedelta(seconds=step * step_seconds)
        began, rows = time.perf_counter(), 0
        for store, size in stores:
            share = size // args.steps + (size % args.steps if step == args.steps - 1 else 0)
            events = store_events(share, catalog_size(size), rng, start, step_seconds)
            for offset in range(0, len(events), BATCH):
                result = event_ingest(
                    store=store, payload=events[offset : offset + BATCH], quota_reserved=True
                )
                rows += result.accepted
        seconds = time.perf_counter() - began
        total_rows += rows
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size('events_event') + coalesce(sum("
                           "pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                           "WHERE inhparent = 'events_event'::regclass")  # fmt: skip
            size_bytes = int(cursor.fetchone()[0])
        latencies = query_latencies(stores, rng, args.samples)
        parts = len(partitions.partitions())
        history, window = latencies["history"], latencies["window"]
        row = {
            "step": step + 1,
            "rows": total_rows,
            "partitions": parts,
            "ingest_rows_per_s": round(rows / seconds),
            "bytes_per_event": round(size_bytes / max(total_rows, 1)),
            "history_p50_ms": round(float(np.percentile(history, 50)) * 1000, 2),
            "history_p95_ms": round(float(np.percentile(history, 95)) * 1000, 2),
            "window_p50_ms": round(float(np.percentile(window, 50)) * 1000, 2),
        }
        figures["steps"].append(row)
        print(f"step {step + 1}: {total_rows:>12,} events, {parts:3d} partitions, "
              f"ingest {rows / seconds:8,.0f} events/s, {size_bytes / max(total_rows, 1):5.0f} B/event; "
              f"a shopper's latest events {percentiles(history)}; last 30 days {percentiles(window)}",
              flush=True)  # fmt: skip

    env = {**os.environ, "RECSYS_DATABASE_ROLE": "app"}
    order = np.argsort(sizes)
    picks = {"small": order[len(order) // 10], "median": order[len(order) // 2], "largest": order[-1]}
    figures["training"] = {}
    for name, index in picks.items():
        store, size = stores[int(index)]
        seconds, peak, output = measured(
            [sys.executable, "bench/scale.py", "--train-store", str(store.id)], env
        )
        result = json.loads(output.strip().splitlines()[-1])
        figures["training"][name] = {"events": size, "seconds": round(seconds, 1), "peak_mb": peak // 2**20,
                                     "status": result["status"]}  # fmt: skip
        print(
            f"training, {name} store ({size:,} events): {seconds:6.1f} s, peak {peak / 2**20:7.0f} MB "
            f"(first stage; {result['status']}; process start and Django setup included)",
            flush=True,
        )

    if not args.skip_global:
        figures["global"] = {}
        for engine, extra in (("in-process", []), ("spark", ["--master", args.spark_master])):
            command = [sys.executable, "manage.py", "train_global", "--engine", engine, *extra]
            seconds, peak, output = measured(command, env)
            figures["global"][engine] = {"seconds": round(seconds, 1), "peak_mb": peak // 2**20}
            print(f"global model, {engine:10s}: {seconds:6.1f} s, peak {peak / 2**20:7.0f} MB (the process "
                  f"tree, JVM included) — {output.strip().splitlines()[-1]}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
