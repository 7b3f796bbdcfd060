"""What recording every answer as an impression costs serving, measured in process, where this noisy
machine can show a difference that load generators' runs cannot (their runs overlap).

    python bench/impressions.py [--lookups 3000] [--blocks 8] [--drain 20000]

- the cache lookup of a cached answer (one Redis script call: generations, the answer, the rate limit's
  token, and with impressions the XADD of the answer's impression), with and without its impression, in
  alternating blocks: this process's CPU and wall time per lookup, and Redis's own time per call (its
  INFO commandstats);
- the drain (what a worker does off the request path): impressions stored per second, and the CPU this
  process and PostgreSQL spend per impression, which on one machine come out of the web server's share.

Prints each figure's median and range over the blocks, and the share of a cached answer's whole cost
(web CPU per answer from `bench/serve.py`, given with --answer-us) the impression adds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("RECSYS_DATABASE_NAME", "recsys_bench")
os.environ.setdefault("LOG_LEVEL", "WARNING")
SLUG = "impressions-bench"


def _evalsha_usec(client) -> tuple[int, float]:  # noqa: ANN001
    stats = client.info("commandstats")
    row = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(row["calls"]), float(row["usec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=3000, help="lookups per block")
    parser.add_argument("--blocks", type=int, default=8, help="blocks of each kind, alternated")
    parser.add_argument("--drain", type=int, default=20000, help="impressions drained, in one measure")
    parser.add_argument(
        "--answer-us", type=float, default=300.0, help="web CPU per cached answer (bench/serve.py), µs"
    )
    args = parser.parse_args()

    from bench_env import clear_impressions, django_setup

    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from core import answer_cache
    from outcomes.services import impressions_drain
    from tenants.models import Store
    from tenants.services import store_create

    store = Store.objects.filter(slug=SLUG).first() or store_create(slug=SLUG)[0]
    client = answer_cache._redis()
    if client is None:
        raise SystemExit("the answer cache (Redis) is not configured")
    body = (
        b'{"source":"store-model:v1","items":['
        + b",".join(
            b'{"id":"p%d","score":0.5,"reason":"popular with shoppers like you"}' % n for n in range(10)
        )
        + b"]}"
    )
    key = "/api/v1/users/shopper-1/recommendations?limit=10"
    first = answer_cache.lookup(store, key, user_id="shopper-1")
    answer_cache.put(first.key, body, ttl=3600)
    bucket = (f"rl:{SLUG}", 10**9, 10**9)

    def block(with_impression: bool) -> tuple[float, float, float]:
        clear_impressions()
        calls0, usec0 = _evalsha_usec(client)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(args.lookups):
            impression = (
                answer_cache.Impression(uuid.uuid4().hex, store.id, "for_user", "shopper-1", b"")
                if with_impression
                else None
            )
            found = answer_cache.lookup(store, key, user_id="shopper-1", bucket=bucket, impression=impression)
            assert found.body is not None
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        calls1, usec1 = _evalsha_usec(client)
        per = 1e6 / args.lookups
        return cpu * per, wall * per, (usec1 - usec0) / max(calls1 - calls0, 1)

    figures: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for number in range(args.blocks):
        for kind in (True, False) if number % 2 == 0 else (False, True):
            figures[kind].append(block(kind))
        print(f"block {number + 1}/{args.blocks} done", file=sys.stderr)
    clear_impressions()

    # the drain: impressions appended by lookups, then stored by one drain (a worker's job)
    for _ in range(args.drain):
        answer_cache.lookup(
            store,
            key,
            user_id="shopper-1",
            impression=answer_cache.Impression(uuid.uuid4().hex, store.id, "for_user", "shopper-1", b""),
        )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stored = impressions_drain(max_seconds=600)
    drain_cpu, drain_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    clear_impressions()

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"

    print(f"\ncached lookups, {args.blocks} blocks of {args.lookups} each kind, alternated (µs per lookup)")
    print(f"{'':28} {'with impression':>26} {'without':>26}")
    for index, name in enumerate(("this process's CPU", "wall (a round trip)", "Redis's time in the script")):
        print(
            f"{name:28} {summary([f[index] for f in figures[True]]):>26} "
            f"{summary([f[index] for f in figures[False]]):>26}"
        )
    added = [
        statistics.median([f[index] for f in figures[True]])
        - statistics.median([f[index] for f in figures[False]])
        for index in (0, 2)
    ]
    per_impression = 1e6 * drain_wall / max(stored, 1)
    print(
        f"\ndrain: {stored:,} impressions stored in {drain_wall:.2f} s ({stored / drain_wall:,.0f}/s); "
        f"{1e6 * drain_cpu / max(stored, 1):.1f} µs of this process's CPU and {per_impression:.1f} µs of "
        "wall (this process and PostgreSQL) per impression"
    )
    total = added[0] + added[1] + per_impression
    print(
        f"an impression adds about {added[0]:.1f} µs (web) + {added[1]:.1f} µs (Redis) + "
        f"{per_impression:.1f} µs (drain, at most: its wall time) = {total:.1f} µs to a cached answer of "
        f"{args.answer_us:.0f} µs of web CPU: {100 * total / args.answer_us:.1f}%"
    )


if __name__ == "__main__":
    main()
