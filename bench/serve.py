"""Serving latency and throughput through the production server.

    python bench/serve.py [--products 100000] [--events 1000000] [--seconds 8] [--clients 1,8,32]

Builds (once; reused on later runs) a store of 100k products and 1M events in the `recsys_bench`
database, trains it, starts the production web server (config/web.py) with its real worker count, and
drives each surface with 1, 8 and 32 concurrent clients on the same machine: wrk (C) for GETs, lean
keep-alive Python client processes for the storefront steps (a view POSTed, then the answer timed).

- hot surfaces (for-user, related, complementary, trending): a few hundred shoppers and products asked
  about again and again, answered from the cache until something changes;
- "distinct": every request its own (an unused parameter), so every answer is computed; for-user's
  5,000 shoppers are each asked about once before (their profiles then are in Redis, as for shoppers
  browsing the storefront);
- "view+for-user": each step a shopper seen for the first time views a product, then asks for their
  answer (the view made the cached one stale, and their profile is rebuilt from SQL);
- "visit": shoppers view five products in a row, asking after each view (their profile is in Redis
  after the first step); "visit (wrk)" and "view+for-user (wrk)" the same steps from wrk (C), one
  connection a thread, timing the answers alone (the script's own clock): the Python clients cost about
  a millisecond of the shared cores per step, which wrk leaves to the server.

Prints requests/s, p50, p95, p99, the cache's hit share, and the CPU per request of the web server and of
the whole machine, the time from posting an event to seeing it in the next answer, and writes a latency
histogram to bench/out/serve-latency.png. `--server gunicorn` runs the same with gunicorn's gthread
workers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import wrk
from bench_env import BENCH_LIMITS, clear_impressions, process_stats, process_tree, train_and_serve

for _name, _value in BENCH_LIMITS.items():  # this process stores events through the services too
    os.environ.setdefault(_name, _value)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("RECSYS_DATABASE_NAME", "recsys_bench")
os.environ.setdefault("LOG_LEVEL", "WARNING")
OUT = ROOT / "bench" / "out"
SLUG = "serve-bench"


def beauty_store() -> tuple[list[dict], list[dict]]:
    """Amazon Beauty as a store (../shared/data/amazon-beauty): products P<n> with their attributes,
    shoppers U<n> whose reviews are purchases, in each shopper's order, a shopper's reviews spread evenly
    over the last 300 days (the data has no times; a store's time split then holds out about each
    shopper's latest tenth)."""
    from quality import DATA, load_beauty_with_tags

    assert (DATA / "amazon-beauty").exists()
    return beauty_as_store(*load_beauty_with_tags())


def beauty_as_store(data: Any, tags: Any) -> tuple[list[dict], list[dict]]:
    """Products P<n> with their attributes (`tags`: items x attributes), and the purchases of `data` (an
    Interactions of Amazon Beauty, or part of it) as events, a shopper's spread evenly over the last 300
    days in their order."""
    catalog = [
        {"id": f"P{i}", "title": f"beauty product {i}", "category_path": ["Beauty"],
         "attributes": {"a": [str(tag) for tag in tags.indices[tags.indptr[i] : tags.indptr[i + 1]]]}}
        for i in range(data.n_items)
    ]  # fmt: skip
    end = time.time() - 3600
    order = np.lexsort((data.times, data.users))
    users, items = data.users[order], data.items[order]
    bounds = np.searchsorted(users, np.arange(data.n_users + 1))
    events = []
    for user in range(data.n_users):
        mine = items[bounds[user] : bounds[user + 1]]
        for step, item in enumerate(mine.tolist()):
            at = end - 300 * 86400 * (1 - (step + 1) / len(mine))
            events.append({"user_id": f"U{user}", "product_id": f"P{item}", "type": "purchase",
                           "timestamp": datetime.fromtimestamp(at, tz=UTC).isoformat()})  # fmt: skip
    return catalog, events


def prepare(products: int, events: int, retrain: bool, dataset: str = "generated") -> tuple[str, int]:
    """The bench store and a fresh API key; built and trained on the first run only."""
    from bench_env import django_setup

    django_setup()
    from django.core.management import call_command
    from train import generated_events, lines_events

    from catalog.services import product_bulk_upsert
    from events.services import event_ingest
    from tenants.models import Store
    from tenants.services import api_key_issue, store_create

    call_command("migrate", verbosity=0)
    slug = SLUG if dataset == "generated" else f"{SLUG}-{dataset}"
    store = Store.objects.filter(slug=slug).first()
    if store is None and dataset == "beauty":
        store, _ = store_create(slug=slug)
        started = time.perf_counter()
        catalog, generated = beauty_store()
        for start in range(0, len(catalog), 10_000):
            product_bulk_upsert(store=store, rows=catalog[start : start + 10_000])
        for start in range(0, len(generated), 10_000):
            event_ingest(store=store, payload=generated[start : start + 10_000])
        print(f"built the store in {time.perf_counter() - started:.0f} s", flush=True)
    if store is None:
        store, _ = store_create(slug=slug)
        started = time.perf_counter()
        catalog = [
            {"id": f"P{i}", "title": f"product {i} of line {i % 500}", "category_path": [f"C{i // 500}"],
             "brand": f"B{i % 50}", "price": 5 + i % 90, "in_stock": i % 17 != 0}
            for i in range(products)
        ]  # fmt: skip
        for start in range(0, len(catalog), 10_000):
            product_bulk_upsert(store=store, rows=catalog[start : start + 10_000])
        if dataset == "lines":  # shoppers loyal to a line (category), choosing by popularity in it
            generated = lines_events(events, products, users=events // 5)
        else:
            generated = generated_events(events, products, users=events // 15)
        for start in range(0, len(generated), 10_000):
            event_ingest(store=store, payload=generated[start : start + 10_000])
        print(f"built the store in {time.perf_counter() - started:.0f} s", flush=True)
    run = train_and_serve(store, retrain=retrain)
    if run is not None:
        print(f"trained: {run.message}; {run.metrics.get('seconds_by_phase')}; "
              f"ranking stage: {run.metrics.get('ranker')}", flush=True)  # fmt: skip
    key = api_key_issue(store=store, name="bench").raw_key
    return key, store.id


class Connection:
    """A lean keep-alive HTTP/1.1 client (pre-encoded requests, Content-Length bodies): the clients share
    the server's cores, so the less CPU they take, the more the figures measure the server."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None

    def get(self, request: bytes) -> tuple[int, bytes, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        head = head.lower()
        found = _LENGTH.search(head)
        length = int(found.group(1)) if found else 0
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            body += chunk
        if b"connection: close" in head:
            self.close()
        return int(head[9:12]), head, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


_LENGTH = re.compile(rb"content-length: *(\d+)")
DISTINCT = "&distinct"  # paths ending with it get a parameter of their own on every request


def encoded(path: str | tuple[bytes, str], key: str, port: int) -> bytes | tuple[bytes, bytes]:
    """A GET; or, for (an event's JSON, a path), the POST of the event and then the GET."""
    head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
    if isinstance(path, tuple):
        event, path = path
        post = (f"POST /api/v1/events HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                f"Content-Length: {len(event)}\r\n\r\n").encode() + event  # fmt: skip
        return post, f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()
    return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()


def client_loop(
    port: int,
    key: str,
    paths: list,
    seconds: float,
    start_at: float,
    queue,
    index: int = 0,
    in_order: bool = False,  # noqa: ANN001
) -> None:
    """Requests at random from `paths`; `in_order`: one after the other from this client's own offset
    (a shopper's visit is consecutive steps)."""
    conn = Connection(port)
    distinct = bool(paths) and isinstance(paths[0], str) and paths[0].endswith(DISTINCT)
    requests = [encoded(path, key, port) for path in paths]
    nonce = 0
    latencies = []
    errors = 0
    hits = 0
    rng = np.random.default_rng(os.getpid())
    if in_order:
        choices = (np.arange(1_000_000) + index * 7919 * 5) % len(requests)
    else:
        choices = rng.integers(len(requests), size=1_000_000)
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    perf_counter = time.perf_counter
    for choice in choices:
        if time.time() >= deadline:
            break
        request = requests[choice]
        if distinct:  # every request its own: never answered from the cache
            nonce += 1
            request = request.replace(DISTINCT.encode(), f"&n={start_at}-{os.getpid()}-{nonce}".encode(), 1)
        try:
            if isinstance(request, tuple):  # the shopper acts, then asks: only the answer is timed
                status, _, _ = conn.get(request[0])
                errors += status != 200
                request = request[1]
            began = perf_counter()
            status, head, _ = conn.get(request)
        except OSError:
            errors += 1
            conn.close()
            continue
        ended = perf_counter()
        latencies.append(ended - began)
        errors += status != 200
        hits += b"x-answer-cache: hit" in head
    queue.put((latencies, errors, hits))


def drive(
    port: int, key: str, paths: list, clients: int, seconds: float, in_order: bool = False
) -> tuple[np.ndarray, int, float, float]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.time() + 1.0
    workers = [
        multiprocessing.Process(
            target=client_loop, args=(port, key, paths, seconds, start_at, queue, index, in_order)
        )
        for index in range(clients)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = np.concatenate([np.array(r[0]) for r in results]) if results else np.zeros(0)
    hit_share = sum(r[2] for r in results) / max(len(latencies), 1)
    return latencies, sum(r[1] for r in results), seconds, hit_share


# GETs of the listed paths, each thread from its own offset; distinct: a parameter of its own per request
GET_SCRIPT = r"""
local counter = 0
function start(args)
  distinct = args[3] == "1"
  counter = (index * 7919) % #lines
end
function request()
  counter = counter + 1
  local path = lines[(counter % #lines) + 1]
  if distinct then path = path .. "&n=" .. salt .. "-" .. counter end
  return wrk.format("GET", path)
end
function response(status, headers, body)
  for name, value in pairs(headers) do
    if string.lower(name) == "x-answer-cache" and value == "hit" then hits = hits + 1 end
  end
end
"""


def drive_wrk(port: int, key: str, paths: list[str], clients: int, seconds: float) -> dict:
    """The same load from wrk (C, two threads, `clients` keep-alive connections): the client then takes
    little of the two cores it shares with the server."""
    distinct = paths[0].endswith(DISTINCT)
    script = GET_SCRIPT.replace('args[3] == "1"', "true" if distinct else "false")
    totals = wrk.run(
        script, [p.removesuffix(DISTINCT) for p in paths], port=port, threads=min(2, clients),
        connections=clients, seconds=seconds, headers=(f"Authorization: Bearer {key}",),
        salt=str(time.time_ns()),
    )  # fmt: skip
    return {"rps": round(totals.requests / totals.seconds), "p50_ms": round(totals.p50_ms, 2),
            "p95_ms": round(totals.p95_ms, 2), "p99_ms": round(totals.p99_ms, 2), "errors": totals.errors,
            "cache_hits": round(totals.hits / max(totals.requests, 1), 3),
            "requests": totals.requests}  # fmt: skip


# a shopper's steps in order (one connection a thread): post the view of a line ("path<TAB>event"), then
# get the path
STEPS_SCRIPT = r"""
local at, pending, post_headers, asked = 0, nil, nil, nil
timed = {}  -- microseconds of each answer, from its request to its response
function start(args)
  at = (index * 7919 * 5) % #lines
  post_headers = {["Content-Type"] = "application/json"}
  for name, value in pairs(wrk.headers) do post_headers[name] = value end  -- the key, the host
end
function request()
  if pending then
    local path = pending
    pending = nil
    asked = monotonic_us()
    return wrk.format("GET", path)
  end
  at = at + 1
  local path, body = lines[(at % #lines) + 1]:match("^(%S+)\t(.+)$")
  pending = path
  asked = nil
  return wrk.format("POST", "/api/v1/events", post_headers, body)
end
function response(status, headers, body)
  if asked then timed[#timed + 1] = monotonic_us() - asked end
end
"""


STEPS_FROM_WRK = ("visit (wrk)", "view+for-user (wrk)")


def drive_wrk_steps(
    port: int, key: str, steps: list[tuple[bytes, str]], clients: int, seconds: float
) -> dict:
    """Storefront steps from wrk: each of `clients` threads keeps one connection and posts a shopper's
    view, then asks for their answer, in order. Answers per second; the latencies are the answers' alone
    (timed by the script, from request to response; the view before each is committed in PostgreSQL
    before it is answered), as the Python clients time them."""
    totals = wrk.run(
        STEPS_SCRIPT, [f"{path}\t{event.decode()}" for event, path in steps], port=port, threads=clients,
        connections=clients, seconds=seconds, headers=(f"Authorization: Bearer {key}",),
    )  # fmt: skip
    answers = np.array(totals.timed_us, dtype=np.float64) / 1000 if totals.timed_us else np.zeros(1)
    return {"rps": round(totals.requests / 2 / totals.seconds),
            **{f"p{q}_ms": round(float(np.percentile(answers, q)), 2) for q in (50, 95, 99)},
            "errors": totals.errors, "cache_hits": 0.0, "requests": totals.requests}  # fmt: skip


def cpu_seconds(root_pid: int) -> tuple[float, dict[int, float], float]:
    """(CPU seconds of the process tree under `root_pid`, of each PostgreSQL process by pid, of the whole
    machine), busy time so far: the server's share, the database's, and everyone's (Redis and the clients
    too). PostgreSQL's by process, so that a backend that exits between two readings takes only its own
    share with it (database_seconds)."""

    ticks = os.sysconf("SC_CLK_TCK")
    stats = process_stats()
    busy = {pid: (int(fields[11]) + int(fields[12])) / ticks for pid, fields in stats.items()}
    tree = process_tree(root_pid, stats)
    database = {}
    for pid, seconds in busy.items():
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name == "postgres" or name.startswith("postgres:"):
            database[pid] = seconds
    machine = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    machine_busy = (sum(machine) - machine[3] - machine[4]) / ticks
    return sum(busy.get(pid, 0.0) for pid in tree), database, machine_busy


def database_seconds(before: dict[int, float], after: dict[int, float]) -> float:
    """PostgreSQL's CPU between two readings: what each process that lived to the second one spent since
    the first (or since it started). (A backend that exited meanwhile is not counted: a lower bound.)"""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def warm(port: int, key: str, paths: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for path in set(paths):
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        conn.getresponse().read()
    conn.close()


def event_visibility(port: int, key: str, rounds: int = 20) -> list[float]:
    """Seconds from posting a view to seeing its neighbour lead that user's next answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    seconds = []
    for round_ in range(rounds):
        user = f"visibility-{time.time_ns()}-{round_}"
        item, related = "", []
        for candidate in range(round_ * 50, round_ * 50 + 50):  # a product shoppers viewed with others
            item = f"P{candidate}"
            conn.request("GET", f"/api/v1/products/{item}/related?limit=1", headers=headers)
            related = json.loads(conn.getresponse().read())["items"]
            if related and "also viewed" in related[0]["reason"]:  # (not content, not a cold product's map)
                break
        began = time.perf_counter()
        body = json.dumps({"user_id": user, "product_id": item, "type": "view"})
        conn.request("POST", "/api/v1/events", body=body, headers=headers)
        conn.getresponse().read()
        conn.request("GET", f"/api/v1/users/{user}/recommendations?limit=10", headers=headers)
        answer = json.loads(conn.getresponse().read())
        seconds.append(time.perf_counter() - began)
        assert answer["source"].startswith(("store-model", "ranked:store-model")), answer["source"]
        reasons = [i["reason"] for i in answer["items"]]
        # a shopper seen for the first time: a personal answer at all shows the event was read; the first
        # stage's also names the viewed product in a reason (the ranking stage may order others first)
        assert answer["source"].startswith("ranked:") or any(item in reason for reason in reasons), (
            f"the event was not reflected: {answer['source']}, {reasons}"
        )
        del related
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument(
        "--server",
        choices=["granian", "gunicorn"],
        default="granian",
        help="granian: the production server (config/web.py); gunicorn: gthread workers",
    )
    parser.add_argument("--workers", type=int, default=None, help="default: as in production")
    parser.add_argument("--threads", type=int, default=None, help="per worker; default: as in production")
    parser.add_argument("--retrain", action="store_true", help="train a new version of the bench store first")
    parser.add_argument("--surfaces", default="", help="comma-separated subset, e.g. 'for-user,related'")
    parser.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator for GET surfaces (view+for-user always uses the Python client: it times "
        "only the answer of each view-then-answer step)",
    )
    parser.add_argument(
        "--impressions",
        choices=["on", "off", "both"],
        default="on",
        help="record every answer as an impression (production's default), or not (RECORD_IMPRESSIONS=0); "
        "both: the two alternated, --rounds times each, each its own server",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="drain impressions into PostgreSQL during the run, as a worker does every 5 s (it shares the "
        "cores); without it the stream is emptied after each surface",
    )
    parser.add_argument(
        "--ranker",
        choices=["on", "off", "both"],
        default="on",
        help="serve for-user and rank with each version's ranking stage (the default), or without it "
        "(RANKING_STAGE=0); both: the two alternated, --rounds times each, each its own server",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with a 'both': rounds of the configurations")
    parser.add_argument(
        "--dataset",
        choices=["generated", "lines", "beauty"],
        default="generated",
        help="the bench store: generated events (--products, --events; lines: shoppers loyal to a "
        "category choosing by popularity in it, where the ranking stage serves), or Amazon Beauty as a "
        "store (its 12,101 products and 22,363 shoppers' 198,502 reviews, as purchases)",
    )
    args = parser.parse_args()
    if args.dataset == "beauty":  # its products and shoppers (P<n>, U<n>) stand in for the generated ones
        args.products, args.events = 12_101, 22_363 * 15
    key, _ = prepare(args.products, args.events, args.retrain, args.dataset)

    from config import web

    args.workers = args.workers or web.default_workers()
    args.threads = args.threads or web.BLOCKING_THREADS
    choices = {"on": [True], "off": [False], "both": [True, False]}
    configurations = [
        (record, ranker) for record in choices[args.impressions] for ranker in choices[args.ranker]
    ]
    rounds = args.rounds if len(configurations) > 1 else 1
    rows: list[dict] = []
    histograms: dict[str, np.ndarray] = {}
    for number in range(rounds):
        order = configurations if number % 2 == 0 else configurations[::-1]
        for record, ranker in order:
            label = f"impressions {'on' if record else 'off'}" + (" + drain" if record and args.drain else "")
            if args.ranker != "on":
                label += f", ranker {'on' if ranker else 'off'}"
            # other shoppers each time: first-time ones stay so
            seed = 1 + len(configurations) * number + configurations.index((record, ranker))
            found, drawn = measure(
                args, key, record=record, ranker=ranker, drain=args.drain and record, seed=seed, label=label
            )
            rows += found
            histograms = histograms or drawn
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve.json").write_text(json.dumps(rows, indent=2))
    plot(histograms)


def drain_loop(stop: multiprocessing.synchronize.Event) -> None:
    """A worker's impressions drain, every second (beat sends it every 5 s; draining as it fills is the
    worst case for the cores it shares with the server)."""
    from bench_env import django_setup

    django_setup()
    from outcomes.services import impressions_drain

    while not stop.is_set():
        impressions_drain(max_seconds=5.0)
        stop.wait(1.0)


def measure(
    args: argparse.Namespace, key: str, *, record: bool, ranker: bool, drain: bool, seed: int, label: str
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One server, with or without impressions (and a drain) and the ranking stage, driven over every
    surface."""
    import subprocess

    from ingest import free_port, wait_healthy

    from config import web

    port = free_port()
    env = {
        **os.environ, **BENCH_LIMITS,
        "RECORD_IMPRESSIONS": "1" if record else "0", "RANKING_STAGE": "1" if ranker else "0",
    }  # fmt: skip
    if args.server == "gunicorn":  # the comparison that picked granian (config/web.py)
        command = [sys.executable, "-m", "gunicorn", "config.wsgi:application",
                   "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--worker-class", "gthread",
                   "--threads", str(args.threads), "--keep-alive", "30",
                   "--log-level", "warning"]  # fmt: skip
    else:
        command = web.command(bind=f"127.0.0.1:{port}", workers=args.workers, threads=args.threads)
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    stop = multiprocessing.Event()
    drainer = multiprocessing.Process(target=drain_loop, args=(stop,), daemon=True) if drain else None
    rows = []
    histograms = {}
    try:
        wait_healthy(port)
        clear_impressions()
        if drainer is not None:
            drainer.start()
        rng = np.random.default_rng(seed)
        users = [f"U{u}" for u in rng.integers(0, args.events // 15, size=500)]
        items = [f"P{i}" for i in rng.zipf(1.3, size=500) % args.products]
        # hot: 500 shoppers asked about again and again (answers come from the cache until they act);
        # distinct: every request its own, so every answer is computed
        everyone = [f"U{u}" for u in rng.permutation(max(args.events // 15, 40_000))]
        surfaces = {
            "for-user": [f"/api/v1/users/{u}/recommendations?limit=10" for u in users],
            # a storefront: each shopper views a product, then asks for their recommendations (every answer
            # is computed: the view makes the cached one stale)
            "view+for-user": [
                (
                    json.dumps({"user_id": u, "product_id": i, "type": "view"}).encode(),
                    f"/api/v1/users/{u}/recommendations?limit=10",
                )
                for u, i in zip(
                    everyone[:20_000],
                    [f"P{i}" for i in rng.zipf(1.3, size=20_000) % args.products],
                    strict=True,
                )
            ],  # fmt: skip
            # visits: each shopper views five products in a row, asking for their answer after each view
            "visit": [
                (
                    json.dumps({"user_id": u, "product_id": f"P{i}", "type": "view"}).encode(),
                    f"/api/v1/users/{u}/recommendations?limit=10",
                )
                for u in everyone[20_000:30_000]
                for i in rng.zipf(1.3, size=5) % args.products
            ],
            "related": [f"/api/v1/products/{i}/related?limit=10" for i in items],
            # every request distinct (an unused query parameter): computed, never from the cache
            # 5,000 shoppers active on the storefront (their profiles are in Redis: they were asked about a
            # moment before), every answer computed
            "for-user distinct": [
                f"/api/v1/users/{u}/recommendations?limit=10{DISTINCT}" for u in everyone[:5000]
            ],
            "related distinct": [
                f"/api/v1/products/P{i}/related?limit=10{DISTINCT}"
                for i in rng.zipf(1.3, size=60_000) % args.products
            ],
            "complementary": [f"/api/v1/products/{i}/complementary?limit=10" for i in items],
            "trending": ["/api/v1/trending?limit=10", "/api/v1/trending?limit=10&category=C3"],
        }
        # the same visits from wrk (C): the client then takes little of the cores; other shoppers
        surfaces["visit (wrk)"] = [
            (json.dumps({"user_id": u, "product_id": f"P{i}", "type": "view"}).encode(),
             f"/api/v1/users/{u}/recommendations?limit=10")
            for u in everyone[30_000:40_000] for i in rng.zipf(1.3, size=5) % args.products
        ]  # fmt: skip
        # the storefront loop from wrk: one view each, then the answer (a third of these shoppers are in
        # the store's data, the rest new, as in the Python clients' row; drawn last, so that the other
        # rows' shoppers stay as they were)
        surfaces["view+for-user (wrk)"] = [
            (json.dumps({"user_id": u, "product_id": f"P{i}", "type": "view"}).encode(),
             f"/api/v1/users/{u}/recommendations?limit=10")
            for u, i in zip(
                [f"U{u}" for u in rng.permutation(max(args.events // 15, 40_000))[:20_000]],
                rng.zipf(1.3, size=20_000) % args.products, strict=True,
            )
        ]  # fmt: skip
        if args.surfaces:
            surfaces = {name: paths for name, paths in surfaces.items() if name in args.surfaces.split(",")}
        hot = {"for-user", "related", "complementary", "trending"}  # the rest are computed on every request
        for name, paths in surfaces.items():  # every web worker loads the model before the clock starts
            drive(port, key, paths[:50] if name in hot else paths[-50:], clients=args.workers * 2,
                  seconds=1.0)  # fmt: skip
        print(f"machine: {os.cpu_count()} cores; {args.server} {args.workers} workers x {args.threads} "
              f"threads; {args.products:,} products, {args.events:,} events; {label}",
              flush=True)  # fmt: skip
        header = ["clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "hits",
                  "srv µs", "db µs", "all µs"]  # fmt: skip
        print(f"{'surface':<18} " + " ".join(f"{name:>7}" for name in header) + "   client")
        for name, paths in surfaces.items():
            if name in hot:  # hot answers: asked once just before, as on a live storefront
                warm(port, key, paths)
            if name == "for-user distinct":  # every shopper once, so that their profile is in Redis
                drive_wrk(port, key, paths, 8, max(3.0, len(paths) / 400))
            for clients in [int(c) for c in args.clients.split(",")]:
                client = "python" if isinstance(paths[0], tuple) else args.client
                if name in STEPS_FROM_WRK:
                    client = "wrk"
                server_before, database_before, machine_before = cpu_seconds(server.pid)
                if name in STEPS_FROM_WRK:
                    row = {"surface": name, "clients": clients,
                           **drive_wrk_steps(port, key, paths, clients, args.seconds)}  # fmt: skip
                    ms = None
                elif client == "wrk":
                    row = {
                        "surface": name,
                        "clients": clients,
                        **drive_wrk(port, key, paths, clients, args.seconds),
                    }
                    ms = None
                else:
                    latencies, errors, seconds, hit_share = drive(
                        port, key, paths, clients, args.seconds, in_order=name == "visit"
                    )
                    ms = latencies * 1000
                    row = {
                        "surface": name, "clients": clients, "rps": round(len(latencies) / seconds),
                        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
                        "errors": errors, "cache_hits": round(hit_share, 3), "requests": len(latencies),
                    }  # fmt: skip
                server_after, database_after, machine_after = cpu_seconds(server.pid)
                answered = max(row["requests"], 1) * (
                    2 if client == "python" and isinstance(paths[0], tuple) else 1
                )
                row["server_cpu_us"] = round((server_after - server_before) / answered * 1e6)
                row["database_cpu_us"] = round(
                    database_seconds(database_before, database_after) / answered * 1e6
                )
                row["machine_cpu_us"] = round((machine_after - machine_before) / answered * 1e6)
                row["client"] = client
                row["impressions"] = label
                rows.append(row)
                if drainer is None:
                    clear_impressions()  # (no drain: the stream must not grow from surface to surface)
                if clients == 8 and ms is not None:
                    histograms[name] = ms
                print(f"{name:<18} {clients:>7} {row['rps']:>7} {row['p50_ms']:>7} {row['p95_ms']:>7} "
                      f"{row['p99_ms']:>7} {row['errors']:>7} {row['cache_hits']:>7.0%} "
                      f"{row['server_cpu_us']:>7} {row['database_cpu_us']:>7} {row['machine_cpu_us']:>7}"
                      f"   {client}",
                      flush=True)  # fmt: skip
        visible = np.array(event_visibility(port, key)) * 1000
        print(f"event -> next answer: median {np.median(visible):.1f} ms, max {visible.max():.1f} ms "
              f"(POST the event, then GET: reflected every time)")  # fmt: skip
    finally:
        stop.set()
        if drainer is not None:
            drainer.join(timeout=20)
        server.terminate()
        server.wait(timeout=20)
        clear_impressions()
    return rows, histograms


def plot(histograms: dict[str, np.ndarray]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(8, 4))
    bins = np.logspace(-1, 3.5, 120)
    for name, ms in histograms.items():
        p95 = float(np.percentile(ms, 95))
        axis.hist(np.clip(ms, 0.1, 3000), bins=bins, histtype="step", label=f"{name} (p95 {p95:.1f} ms)")
    axis.axvline(10, color="grey", linestyle="--", linewidth=1)
    axis.text(10.5, axis.get_ylim()[1] * 0.95, "10 ms", color="grey", va="top")
    axis.set_xscale("log")
    axis.set_xlabel("latency (ms, log scale)")
    axis.set_ylabel("requests")
    axis.set_title("latency at 8 concurrent clients")
    axis.legend()
    figure.tight_layout()
    figure.savefig(OUT / "serve-latency.png", dpi=110)


if __name__ == "__main__":
    main()
