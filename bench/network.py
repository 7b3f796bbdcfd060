"""pgvector for network related products: recall@10 against exact search, and latency, at 100k and 1M
vectors, with and without a store filter.

    python bench/network.py [--sizes 100000,1000000] [--queries 200]

Vectors (64 dimensions, halfvec, unit length, clustered like product embeddings) go into a table shaped
like catalog_product's network columns, in the `recsys_bench` database, with the same HNSW index
(m 16, ef_construction 64, cosine). Queries run as recommendations/network.py runs them: ef_search 100,
iterative scans (relaxed order) bounded by max_scan_tuples, and for the filtered case a store that holds
1% of the rows. The exact path (B-tree prefilter on the store, then distances) is measured beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("RECSYS_DATABASE_NAME", "recsys_bench")
os.environ.setdefault("LOG_LEVEL", "WARNING")

DIMENSIONS = 64
STORES = 100  # store 0 holds 1% of the rows


def vectors(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(count // 200, 10), DIMENSIONS))
    points = centres[rng.integers(0, len(centres), size=count)] + 0.35 * rng.normal(size=(count, DIMENSIONS))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.5f}" for x in vector) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    from bench_env import django_setup

    django_setup()
    from django.db import connection

    from recommendations.network import EF_SEARCH, MAX_SCAN_TUPLES

    print(f"machine: {os.cpu_count()} cores; ef_search {EF_SEARCH}; max_scan_tuples {MAX_SCAN_TUPLES}")
    print(f"{'vectors':>9} {'query':<28} {'recall@10':>9} {'p50 ms':>7} {'p95 ms':>7} {'rows':>5}  build")
    for size in [int(s) for s in args.sizes.split(",")]:
        data = vectors(size, seed=size)
        stores = np.arange(size) % STORES
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_network")
            cursor.execute(
                f"CREATE TABLE bench_network (id bigint, store_id int, v halfvec({DIMENSIONS}), "
                "PRIMARY KEY (store_id, id))"
            )
            with cursor.cursor.copy("COPY bench_network (id, store_id, v) FROM STDIN") as copy:
                for index in range(size):
                    copy.write_row((index, int(stores[index]), literal(data[index])))
            started = time.perf_counter()
            cursor.execute("SET maintenance_work_mem = '1GB'")
            cursor.execute("SET max_parallel_maintenance_workers = 2")
            cursor.execute(
                "CREATE INDEX ON bench_network USING hnsw (v halfvec_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)"
            )
            cursor.execute("ANALYZE bench_network")
            build = time.perf_counter() - started
        rng = np.random.default_rng(1)
        queries = rng.integers(0, size, size=args.queries)
        exact_all = np.argsort(-(data[queries] @ data.T), axis=1)[:, 1:11]  # the query itself is first
        in_store = np.flatnonzero(stores == 0)
        scores_store = data[queries] @ data[in_store].T
        exact_store = in_store[np.argsort(-scores_store, axis=1)[:, :10]]
        cases = [
            ("no filter, HNSW", "", exact_all, True),
            ("store filter 1%, HNSW iterative", "AND store_id = 0", exact_store, True),
            ("store filter 1%, exact", "AND store_id = 0", exact_store, False),
        ]
        for name, where, truth, use_index in cases:
            latencies, recalls, counts = [], [], []
            for number, query in enumerate(queries):
                with connection.cursor() as cursor:
                    cursor.execute("BEGIN")
                    cursor.execute(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}")
                    cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
                    if not use_index:
                        cursor.execute("SET LOCAL enable_indexscan = off")  # B-tree bitmap, then sort
                    began = time.perf_counter()
                    cursor.execute(
                        f"SELECT id FROM bench_network WHERE id <> %s {where} "
                        "ORDER BY v <=> %s::halfvec LIMIT 10",
                        [int(query), literal(data[query])],
                    )
                    found = [row[0] for row in cursor.fetchall()]
                    latencies.append(time.perf_counter() - began)
                    cursor.execute("COMMIT")
                counts.append(len(found))
                recalls.append(len(set(found) & set(truth[number].tolist())) / 10)
            ms = np.array(latencies) * 1000
            print(
                f"{size:>9,} {name:<28} {np.mean(recalls):9.3f} {np.percentile(ms, 50):7.2f} "
                f"{np.percentile(ms, 95):7.2f} {np.mean(counts):5.1f}  {build:.0f} s",
                flush=True,
            )
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bench_network")


if __name__ == "__main__":
    main()
