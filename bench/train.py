"""Training time of one store on the worker's code path: load events from PostgreSQL, tune on a hold-out,
fit, content embeddings, store the version.

    python bench/train.py [--events 1000000] [--products 50000] [--users 60000] [--no-ranker]

Events are generated (shoppers browsing clusters of items in runs, some purchases in sessions) and sent
through the ingestion service (validation and COPY), into the `recsys_bench` database.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("RECSYS_DATABASE_NAME", "recsys_bench")
os.environ.setdefault("LOG_LEVEL", "WARNING")


CHUNK_RUNS = 100_000  # runs of events generated and ingested at a time (10M events never in memory at once)


def generated_events(events: int, products: int, users: int, seed: int = 0) -> list[dict]:
    return [event for chunk in generated_chunks(events, products, users, seed) for event in chunk]


def generated_chunks(events: int, products: int, users: int, seed: int = 0) -> Iterator[list[dict]]:
    rng = np.random.default_rng(seed)
    clusters = 200
    cluster_of_user = rng.integers(0, clusters, size=users)
    runs = events // 5
    user = rng.integers(0, users, size=runs)
    # each run: 5 events in one cluster, the user's own cluster most of the time
    cluster = np.where(rng.random(runs) < 0.8, cluster_of_user[user], rng.integers(0, clusters, size=runs))
    per_cluster = products // clusters
    offsets = np.minimum(rng.zipf(1.6, size=(runs, 5)) - 1, per_cluster - 1)
    items = cluster[:, None] * per_cluster + offsets
    kinds = rng.choice(np.array(["view", "add_to_cart", "purchase"]), size=(runs, 5), p=[0.8, 0.12, 0.08])
    start = datetime.now(tz=UTC) - timedelta(days=60)
    run_start = rng.uniform(0, 59 * 86400, size=runs)
    for first in range(0, runs, CHUNK_RUNS):
        out = []
        for r in range(first, min(runs, first + CHUNK_RUNS)):
            for step in range(5):
                out.append(
                    {
                        "user_id": f"U{user[r]}",
                        "session_id": f"S{r}",
                        "product_id": f"P{items[r, step]}",
                        "type": str(kinds[r, step]),
                        "timestamp": (start + timedelta(seconds=float(run_start[r] + 60 * step))).isoformat(),
                    }
                )
        yield out


def lines_events(events: int, products: int, users: int, seed: int = 0) -> list[dict]:
    """Shoppers loyal to one line (a category of the catalog's 200) choosing its products by their
    popularity in it, a few views each, spread over 60 days: co-occurrence stays sparse and the line and
    popularity tell the next item, which is where the ranking stage beats the first stage."""
    rng = np.random.default_rng(seed)
    lines = 200
    per_line = products // lines
    weights = 1.0 / np.arange(1, per_line + 1) ** 1.2
    weights /= weights.sum()
    per_user = max(events // users, 2)
    start = datetime.now(tz=UTC) - timedelta(days=60)
    out = []
    for user in range(users):
        line = int(rng.integers(lines))
        chosen = rng.choice(per_line, size=per_user, replace=False, p=weights)
        first = rng.uniform(0, 50 * 86400)
        for step, item in enumerate(chosen.tolist()):
            at = start + timedelta(seconds=first + step * 8 * 3600)
            out.append({"user_id": f"U{user}", "product_id": f"P{line * per_line + item}", "type": "view",
                        "timestamp": at.isoformat()})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument(
        "--pattern",
        choices=["clusters", "lines"],
        default="clusters",
        help="clusters: runs of browsing in clusters of items, some purchases (the first stage's ground); "
        "lines: shoppers loyal to a line, choosing by popularity in it (where the ranking stage serves)",
    )
    parser.add_argument(
        "--no-ranker",
        dest="ranker",
        action="store_false",
        help="train the first stage only (no ranking stage)",
    )
    parser.add_argument(
        "--store",
        help="train this existing store of the database again (its slug, or 'latest' for the newest "
        "train-bench store) instead of generating one",
    )
    args = parser.parse_args()

    from bench_env import django_setup

    django_setup()
    from django.core.management import call_command

    from catalog.services import product_bulk_upsert
    from events.services import event_ingest
    from tenants.services import store_create

    call_command("migrate", verbosity=0)
    if args.store:
        from tenants.models import Store

        found = (
            Store.objects.filter(slug__startswith="train-bench-").order_by("-id").first()
            if args.store == "latest"
            else Store.objects.filter(slug=args.store).first()
        )
        if found is None:
            sys.exit(f"no store {args.store!r} in this database")
        train(found, args.ranker)
        return
    store, _ = store_create(slug=f"train-bench-{int(time.time())}")
    words = ["serum", "shampoo", "lipstick", "brush", "soap", "cream", "mask", "oil", "gel", "spray"]
    catalog = [
        {"id": f"P{i}", "title": f"{words[i % 10]} {words[(i // 10) % 10]} number {i}",
         "category_path": [f"C{i // (args.products // 200)}"], "brand": f"B{i % 50}", "price": 5 + i % 90}
        for i in range(args.products)
    ]  # fmt: skip
    for start in range(0, len(catalog), 10_000):
        product_bulk_upsert(store=store, rows=catalog[start : start + 10_000])
    started = time.perf_counter()
    chunks = (
        iter([lines_events(args.events, args.products, args.users)])
        if args.pattern == "lines"
        else generated_chunks(args.events, args.products, args.users)
    )
    stored = 0
    for events in chunks:
        for start in range(0, len(events), 10_000):
            stored += event_ingest(store=store, payload=events[start : start + 10_000]).accepted
        print(f"  {stored:,} events generated and stored", flush=True)
    print(f"generated and ingested {stored:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    del events, chunks
    train(store, args.ranker)


def train(store: Any, ranker: bool) -> None:
    """One training run of the store as the worker runs it, with its figures."""
    from recommendations.models import TrainingRun
    from recommendations.services import training_run_execute

    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    options = {} if ranker else {"ranker": False}
    run = TrainingRun.objects.create(store=store, trigger="bench", options=options)
    started = time.perf_counter()
    training_run_execute(run_id=run.id)
    seconds = time.perf_counter() - started
    run.refresh_from_db()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stage = "with the ranking stage" if ranker else "first stage only"
    print(f"training ({stage}): {seconds:.1f} s end to end ({run.status}: {run.message})")
    print(f"  peak memory of this process: {peak_mb:,.0f} MB (before training: {before_mb:,.0f} MB)")
    print(f"  by phase: {run.metrics.get('seconds_by_phase')}")
    quality = {key: run.metrics.get(key) for key in ("recall@10", "ndcg@10", "hit@10", "coverage", "users")}
    print(f"  hold-out ({run.metrics.get('protocol')}): {quality}")
    print(f"  tuned: {run.parameters}")
    print(f"  ranking stage: {run.metrics.get('ranker')}")


if __name__ == "__main__":
    main()
