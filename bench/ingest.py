"""Ingest throughput through the HTTP API: products/s and events/s.

Runs the production server (config/web.py, the same command as `make run`) on a free port against its own
database (`recsys_bench` on the embedded PostgreSQL, or DATABASE_URL), makes a store, then posts batches
of 1,000 from four concurrent clients, and events one a POST (a storefront's page views) with the CPU
each costs the web server and PostgreSQL. Bodies are serialised before the clock starts, so the figures
are the server's.

    python bench/ingest.py [--products 50000] [--events 500000] [--singles 5000] [--clients 4] [--workers N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_env import BENCH_LIMITS  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def wait_healthy(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not become healthy")


def post_all(
    port: int, key: str, path: str, bodies: list[bytes], clients: int
) -> tuple[float, list[float], list]:
    """Post every body once, `clients` at a time; answers (seconds, per-request latencies, responses)."""
    latencies: list[float] = []
    answers: list = []
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            started = time.perf_counter()
            conn.request("POST", path, body=bodies[index], headers=headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {payload[:300]!r}")
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                latencies.append(elapsed)
                answers.append(orjson.loads(payload))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, answers


def make_products(count: int, rng: np.random.Generator) -> list[dict]:
    categories = [["Home", "Kitchen"], ["Home", "Bath"], ["Beauty", "Skin"], ["Sports", "Running"], ["Toys"]]
    return [
        {
            "id": f"P{i:08d}",
            "title": f"Product number {i} in a realistic length title",
            "description": "A description of a few words that a merchant would send for this item. " * 3,
            "category_path": categories[i % len(categories)],
            "brand": f"Brand {i % 97}",
            "price": round(float(rng.lognormal(3, 0.7)), 2),
            "currency": "USD",
            "in_stock": bool(i % 13),
            "attributes": {"colour": ["red", "blue", "green"][i % 3], "size": i % 5},
            "image_url": f"https://img.example.com/{i}.jpg",
        }
        for i in range(count)
    ]


def make_events(
    count: int, products: int, rng: np.random.Generator, with_ids: bool, id_prefix: str = "E"
) -> list[dict]:
    now = datetime.now(tz=UTC)
    items = rng.zipf(1.3, size=count) % products
    users = rng.integers(0, max(1, count // 20), size=count)
    kinds = rng.choice(["view", "add_to_cart", "purchase"], size=count, p=[0.85, 0.1, 0.05])
    offsets = rng.uniform(0, 30 * 86400, size=count)
    events = []
    for i in range(count):
        event = {
            "user_id": f"U{users[i]}",
            "session_id": f"S{users[i]}-{int(offsets[i] // 3600)}",
            "product_id": f"P{items[i]:08d}",
            "type": str(kinds[i]),
            "channel": "web",
            "timestamp": (now - timedelta(seconds=float(offsets[i]))).isoformat(),
        }
        if with_ids:
            event["event_id"] = f"{id_prefix}{i}"
        events.append(event)
    return events


def wait_for_autovacuum(env: dict[str, str], limit: float = 120.0) -> float:
    """Seconds waited until no autovacuum worker runs (the product upserts leave dead rows whose vacuum,
    HNSW index included, would otherwise be counted against the single POSTs)."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        busy = manage("shell", "-c", "from django.db import connection; c = connection.cursor(); "
                      "c.execute(\"SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                      "'autovacuum worker'\"); print(c.fetchone()[0])", env=env).strip()  # fmt: skip
        if busy.endswith("0"):
            break
        time.sleep(1.0)
    return time.perf_counter() - began


def report(name: str, rows: int, seconds: float, latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    figures = {
        "what": name,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "batch_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "batch_p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 1),
    }
    print(
        f"{name:<34} {rows:>9,} rows  {seconds:7.2f} s  {figures['rows_per_s']:>9,} rows/s  "
        f"batch p50 {figures['batch_p50_ms']:6.1f} ms  p95 {figures['batch_p95_ms']:6.1f} ms",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=5000, help="events posted one a request")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="default: as in production")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    env = {
        **os.environ,
        **BENCH_LIMITS,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "LOG_LEVEL": "WARNING",
    }
    env.setdefault("RECSYS_DATABASE_NAME", "recsys_bench")
    manage("migrate", "--verbosity", "0", env=env)
    slug = f"bench-{int(time.time())}"
    key = json.loads(manage("create_store", slug, "--json", env=env).strip().splitlines()[-1])["api_key"]
    port = free_port()
    from config import web

    args.workers = args.workers or web.default_workers()
    server = subprocess.Popen(web.command(bind=f"127.0.0.1:{port}", workers=args.workers), cwd=ROOT, env=env)
    try:
        wait_healthy(port)
        rng = np.random.default_rng(0)
        print(f"machine: {os.cpu_count()} cores; web workers {args.workers}; clients {args.clients}; "
              f"batch {args.batch}", flush=True)  # fmt: skip
        products = make_products(args.products, rng)
        bodies = [orjson.dumps(products[i : i + args.batch]) for i in range(0, len(products), args.batch)]
        results = []
        seconds, latencies, answers = post_all(port, key, "/api/v1/products/bulk", bodies, args.clients)
        assert sum(a["created"] for a in answers) == args.products, "not every product was created"
        results.append(report("products (create)", args.products, seconds, latencies))
        seconds, latencies, answers = post_all(port, key, "/api/v1/products/bulk", bodies, args.clients)
        assert sum(a["updated"] for a in answers) == args.products
        results.append(report("products (update)", args.products, seconds, latencies))

        # a storefront's events: one a request (the server's CPU per POST is what each page view costs);
        # before the large batches, whose aftermath (autovacuum, checkpoints) would weigh on these
        from serve import cpu_seconds, database_seconds

        waited = wait_for_autovacuum(env)
        print(f"  (waited {waited:.0f} s for autovacuum to finish before the single events)", flush=True)
        singles = make_events(args.singles, args.products, rng, with_ids=True, id_prefix="single-")
        bodies = [orjson.dumps(event) for event in singles]
        server_before, database_before, machine_before = cpu_seconds(server.pid)
        seconds, latencies, answers = post_all(port, key, "/api/v1/events", bodies, args.clients)
        server_after, database_after, machine_after = cpu_seconds(server.pid)
        assert sum(a["accepted"] for a in answers) == args.singles, "not every event was accepted"
        row = report("single events (one a POST)", args.singles, seconds, latencies)
        row["server_cpu_us_per_post"] = round((server_after - server_before) / args.singles * 1e6)
        row["machine_cpu_us_per_post"] = round((machine_after - machine_before) / args.singles * 1e6)
        row["database_cpu_us_per_post"] = round(
            database_seconds(database_before, database_after) / args.singles * 1e6
        )
        print(f"  CPU per POST: web server {row['server_cpu_us_per_post']} µs, PostgreSQL "
              f"{row['database_cpu_us_per_post']} µs, the whole machine (clients and Redis too) "
              f"{row['machine_cpu_us_per_post']} µs", flush=True)  # fmt: skip
        results.append(row)

        for with_ids in (True, False):
            events = make_events(args.events, args.products, rng, with_ids)
            bodies = [orjson.dumps(events[i : i + args.batch]) for i in range(0, len(events), args.batch)]
            del events
            server_before, database_before, machine_before = cpu_seconds(server.pid)
            seconds, latencies, answers = post_all(port, key, "/api/v1/events", bodies, args.clients)
            server_after, database_after, machine_after = cpu_seconds(server.pid)
            assert sum(a["accepted"] for a in answers) == args.events, "not every event was accepted"
            name = "events (with event_id, idempotent)" if with_ids else "events (no event_id)"
            row = report(name, args.events, seconds, latencies)
            # where a batch's CPU goes (the 2 cores are the ceiling): ms a thousand events
            thousands = args.events / 1000
            row["server_cpu_ms_per_1000"] = round((server_after - server_before) / thousands * 1e3, 1)
            row["database_cpu_ms_per_1000"] = round(
                database_seconds(database_before, database_after) / thousands * 1e3, 1
            )
            row["machine_cpu_ms_per_1000"] = round((machine_after - machine_before) / thousands * 1e3, 1)
            print(f"  CPU a thousand events: web server {row['server_cpu_ms_per_1000']} ms, PostgreSQL "
                  f"{row['database_cpu_ms_per_1000']} ms, the whole machine "
                  f"{row['machine_cpu_ms_per_1000']} ms", flush=True)  # fmt: skip
            results.append(row)

        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
