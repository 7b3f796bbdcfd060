"""The global model's Python side at scale: memory and time after the counting, without a database.

    python bench/global_model.py [--stores 1000] [--events 50000000] [--seed 0] [--limit-gb 18]

What `bench/scale.py` stores (the same store sizes, catalogs and shoppers: 1,000 stores, 50M events, the
largest store 4.75M events over 50,000 products, 1.17M products in all) is generated here as arrays and
counted per store with the engine's own `store_counts`, exactly what either engine hands back (the Spark
job's results are these sums). Then the rest of the global model runs as `train_global` runs it: the
network's co-occurrence and similarity, the text features of every product, the embedding, and each store's
slice. Each phase prints its wall time, the process's resident memory after it and its peak so far; with
`--limit-gb` a watcher ends the run when the resident memory passes the limit and says in which phase.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import catalog_size, store_sizes  # noqa: E402

WORDS = ["serum", "shampoo", "lipstick", "brush", "soap", "cream", "mask", "oil", "gel", "spray"]
TYPE_WEIGHTS = np.array([1.0, 3.0, 5.0], dtype=np.float32)  # view, add_to_cart, purchase


def status_mb(field: str) -> float:
    """A figure of /proc/self/status in MB: VmRSS (resident now) or VmHWM (its peak so far)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return status_mb("VmRSS")


def peak_mb() -> float:
    return status_mb("VmHWM")


class Phases:
    def __init__(self, limit_gb: float | None):
        self.name = "start"
        self.began = time.perf_counter()
        self.limit = limit_gb * 1024 if limit_gb else None
        if self.limit:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            if rss_mb() > self.limit:
                print(f"!! resident memory passed {self.limit / 1024:.1f} GB during {self.name!r} "
                      f"(peak {peak_mb():,.0f} MB): stopped", flush=True)  # fmt: skip
                os._exit(3)
            time.sleep(0.05)

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        print(f"{self.name:28s} {now - self.began:7.1f} s   resident {rss_mb():8,.0f} MB   "
              f"peak {peak_mb():8,.0f} MB", flush=True)  # fmt: skip
        self.name, self.began = name, now


def store_arrays(size: int, products: int, rng: np.random.Generator):
    """One store's events as bench/scale.py makes them: (user codes, product index, weights)."""
    users = max(10, size // 12)
    popularity = 1.0 / np.arange(1, products + 1) ** 1.1
    popularity /= popularity.sum()
    items = rng.choice(products, size=size, p=popularity)
    who = rng.integers(0, users, size=size)
    kinds = rng.choice(3, size=size, p=[0.85, 0.1, 0.05])
    return who.astype(np.int64), items.astype(np.int64), TYPE_WEIGHTS[kinds]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-gb", type=float, default=None)
    args = parser.parse_args()

    from recommendations.engine.content import ContentEmbedding, product_document
    from recommendations.engine.network import (
        CountsBuilder,
        CountsFolder,
        NetworkCooccurrence,
        canonical_key,
        network_vectors,
        normalised_title,
        store_slices,
    )

    phases = Phases(args.limit_gb)
    rng = np.random.default_rng(args.seed)
    sizes = store_sizes(args.stores, args.events, args.seed)
    catalogs = [catalog_size(int(size)) for size in sizes]
    # products as train_global reads them: (store, index) in store order; the same index is the same
    # product (brand and title) in every store
    store_of = np.repeat(np.arange(args.stores), catalogs)
    index = np.concatenate([np.arange(n) for n in catalogs])
    titles = [f"{WORDS[i % 10]} {WORDS[(i // 10) % 10]} {i}" for i in index.tolist()]
    print(f"{args.stores:,} stores, {int(sizes.sum()):,} events, {len(index):,} products; the largest "
          f"store {int(sizes.max()):,} events", flush=True)  # fmt: skip
    phases("catalog")
    keys = [
        canonical_key(gtin=None, brand=f"B{i % 30}", title=title)
        for i, title in zip(index.tolist(), titles, strict=True)
    ]
    codes_by_key: dict[str, int] = {}
    canonical = np.array([codes_by_key.setdefault(key, len(codes_by_key)) for key in keys], dtype=np.int64)
    n_canonical = len(codes_by_key)
    leaves = np.array([normalised_title(f"C{i % 20}") for i in index.tolist()] + [""], dtype=str)
    category_index, category_codes = np.unique(leaves, return_inverse=True)
    category_codes = category_codes[:-1]
    documents = [product_document(title, "", [f"C{i % 20}"], f"B{i % 30}", {})
                 for i, title in zip(index.tolist(), titles, strict=True)]  # fmt: skip
    del keys, titles
    phases("counting (either engine)")
    offset = 0
    with tempfile.TemporaryDirectory(prefix="bench-network-") as folder:
        builder = CountsBuilder(
            CountsFolder(folder), n_canonical=n_canonical, n_categories=len(category_index)
        )
        for store, (size, products) in enumerate(zip(sizes.tolist(), catalogs, strict=True)):
            users, items, weights = store_arrays(size, products, rng)
            positions = offset + items
            builder.add(
                store,
                users,
                canonical[positions],
                weights,
                category_codes[positions],
                np.ones(size, dtype=bool),
            )
            offset += products
        network = builder.counts()
        del builder
        phases("co-occurrence")
        cooccurrence = NetworkCooccurrence.from_counts(network, n_canonical=n_canonical)
        phases("text features")
        text = ContentEmbedding(dimensions=64).text_features(documents)
        del documents
        phases("embedding")
        vectors, merged = network_vectors(
            text, cooccurrence, network.categories, canonical=canonical, category_codes=category_codes
        )
        del text
        phases("slices, one at a time")
        n_slices = n_pairs = 0
        for _store, _mine, matrix in store_slices(cooccurrence, range(args.stores), store_of, canonical):
            n_slices, n_pairs = n_slices + 1, n_pairs + matrix.nnz
        phases("done")
    print(f"network pairs {cooccurrence.total_.nnz:,}; {merged:,} merged; slices {n_slices} with {n_pairs:,} "
          f"pairs; vectors {vectors.shape}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
