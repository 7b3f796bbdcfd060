"""The network's behaviour counts (engine/network.py's NetworkCounts) as a Spark job, for event volumes
that one worker process cannot hold: the same sums as `store_counts` and `category_counts`, over Parquet
files of events (the archive and an export of the recent ones), so that the rest of the global model
(similarity, slices, the embedding) is computed from identical inputs whichever engine counted.

Per store and shopper (aliases resolved), each canonical product's and category's event weights are summed
and taken as log1p; products pair within a shopper (distinct products only), categories with themselves
too; the pair products are summed per store (products) and over every store (categories). Only sums of
products of a store's own shoppers cross the job's shuffle: shoppers are never joined across stores.

No Django here: the caller stages the inputs (recommendations/spark_network.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.network import NetworkCounts, StoreCounts, store_counts_from_rows


@dataclass(frozen=True)
class SparkInputs:
    """Paths of the staged inputs (Parquet), as the Spark cluster sees them."""

    events: list[str]  # files or folders of (store_id, user_id, product_id, type)
    archived: list[str]  # archive files (hive layout: store=<id>/month=<YYYY-MM>/...), under archive_base
    archive_base: str | None
    products: str  # (product_id, canonical, category): category -1 for none
    weights: str  # (store_id, type, weight)
    aliases: str  # (store_id, alias_id, user_id)
    output: str  # a folder the job writes its results to


def session(master: str, app_name: str = "recsys-global", **conf: str) -> Any:
    """A SparkSession on `master` (local[*] for one machine, spark://host:7077, yarn, k8s://...)."""
    import logging

    from pyspark.sql import SparkSession

    logging.getLogger("py4j").setLevel(logging.WARNING)  # (py4j logs every connection it closes)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        **conf,
    }.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def network_counts(
    spark: Any,
    inputs: SparkInputs,
    *,
    n_canonical: int,
    n_categories: int,
    read: Callable[[str], Any],
    exists: Callable[[str], bool],
) -> NetworkCounts:
    """The counts, computed by Spark and written as Parquet under `inputs.output`; `read(name)` gives
    back the result `name` (a store's "pairs/store_id=N" and "mass/store_id=N", the network's "total" and
    "total_mass", "categories") as an Arrow table, `exists(name)` whether the job wrote it."""
    from pyspark.sql import functions as F

    columns = ["store_id", "user_id", "product_id", "type"]
    frames = [spark.read.parquet(*inputs.events).select(*columns)] if inputs.events else []
    if inputs.archived:
        reader = spark.read
        if inputs.archive_base:
            reader = reader.option("basePath", inputs.archive_base)
        archived = reader.parquet(*inputs.archived).withColumnRenamed("store", "store_id")
        frames.append(
            archived.select(
                F.col("store_id").cast("long"),
                "user_id",
                F.col("product_id").cast("long"),
                F.col("type").cast("int"),
            )
        )
    if not frames:
        return NetworkCounts(
            {},
            sp.csr_matrix((n_canonical, n_canonical), dtype=np.float32),
            np.zeros(n_canonical, dtype=np.float32),
            sp.csr_matrix((n_categories, n_categories), dtype=np.float32),
            0,
        )
    events = frames[0]
    for frame in frames[1:]:
        events = events.unionByName(frame)
    events = events.select(
        F.col("store_id").cast("long").alias("store_id"),
        F.col("user_id").cast("string").alias("user_id"),
        F.col("product_id").cast("long").alias("product_id"),
        F.col("type").cast("int").alias("type"),
    )
    weights = spark.read.parquet(inputs.weights)
    products = spark.read.parquet(inputs.products)
    aliases = spark.read.parquet(inputs.aliases).withColumnRenamed("user_id", "owner")
    known = (
        events.join(F.broadcast(weights), ["store_id", "type"])
        .where(F.col("weight") > 0)
        .join(F.broadcast(products), "product_id")
        .join(aliases, (events.store_id == aliases.store_id) & (events.user_id == aliases.alias_id), "left")
        .select(
            events.store_id,
            F.coalesce(F.col("owner"), events.user_id).alias("user"),
            "canonical",
            "category",
            "weight",
        )
        .persist()
    )
    n_events = known.count()
    items = known.groupBy("store_id", "user", "canonical").agg(F.log1p(F.sum("weight")).alias("v"))
    a, b = items.alias("a"), items.alias("b")
    pairs = (
        a.join(b, ["store_id", "user"])
        .where(F.col("a.canonical") != F.col("b.canonical"))
        .groupBy("store_id", F.col("a.canonical").alias("row"), F.col("b.canonical").alias("col"))
        .agg(F.sum(F.col("a.v") * F.col("b.v")).alias("value"))
    )
    mass = items.groupBy("store_id", "canonical").agg(F.sum("v").alias("value"))
    categories = (
        known.where(F.col("category") >= 0)
        .groupBy("store_id", "user", "category")
        .agg(F.log1p(F.sum("weight")).alias("v"))
    )
    c, d = categories.alias("c"), categories.alias("d")
    category_pairs = (
        c.join(d, ["store_id", "user"])
        .groupBy(F.col("c.category").alias("row"), F.col("d.category").alias("col"))
        .agg(F.sum(F.col("c.v") * F.col("d.v")).alias("value"))
    )
    # the results are written where the inputs are (a cluster's driver would not hold them): each
    # store's in a folder of its own (read when its slice is made), the network's sums beside them
    pairs.repartition("store_id").write.partitionBy("store_id").mode("overwrite").parquet(
        f"{inputs.output}/pairs"
    )
    mass.repartition("store_id").write.partitionBy("store_id").mode("overwrite").parquet(
        f"{inputs.output}/mass"
    )
    # (read back with their schema: a job whose shoppers make no pair writes no file to infer it from)
    written_pairs = spark.read.schema(pairs.schema).parquet(f"{inputs.output}/pairs")
    written_mass = spark.read.schema(mass.schema).parquet(f"{inputs.output}/mass")
    written_pairs.groupBy("row", "col").agg(F.sum("value").alias("value")).write.mode("overwrite").parquet(
        f"{inputs.output}/total"
    )
    written_mass.groupBy("canonical").agg(F.sum("value").alias("value")).write.mode("overwrite").parquet(
        f"{inputs.output}/total_mass"
    )
    stores = sorted(int(row.store_id) for row in written_mass.select("store_id").distinct().collect())
    category_pairs.write.mode("overwrite").parquet(f"{inputs.output}/categories")
    known.unpersist()
    total = read("total")
    total_mass = read("total_mass")
    categories_table = read("categories")
    return NetworkCounts(
        own=StoreResults(stores, read=read, exists=exists),
        total=_matrix(total, "row", "col", n_canonical),
        mass=_vector(total_mass, "canonical", n_canonical),
        categories=_matrix(categories_table, "row", "col", n_categories),
        events=int(n_events),
    )


def _matrix(table: Any, rows: str, cols: str, n: int) -> sp.csr_matrix:
    return sp.csr_matrix(
        (
            table.column("value").to_numpy().astype(np.float32),
            (table.column(rows).to_numpy().astype(np.int64), table.column(cols).to_numpy().astype(np.int64)),
        ),
        shape=(n, n),
        dtype=np.float32,
    )


def _vector(table: Any, index: str, n: int) -> np.ndarray:
    vector = np.zeros(n, dtype=np.float32)
    vector[table.column(index).to_numpy().astype(np.int64)] = table.column("value").to_numpy()
    return vector


class StoreResults(Mapping):
    """The job's per-store results (folders `pairs/store_id=N` and `mass/store_id=N`), each store's read
    on access as StoreCounts."""

    def __init__(self, stores: list[int], *, read: Callable[[str], Any], exists: Callable[[str], bool]):
        self._stores = stores
        self._known = set(stores)
        self._read = read
        self._exists = exists

    def __getitem__(self, store: Any) -> StoreCounts:
        if store not in self._known:
            raise KeyError(store)
        mass = self._read(f"mass/store_id={store}")
        if self._exists(f"pairs/store_id={store}"):
            pairs = self._read(f"pairs/store_id={store}")
            rows, cols, values = (pairs.column(name).to_numpy() for name in ("row", "col", "value"))
        else:
            rows = cols = np.zeros(0, np.int64)
            values = np.zeros(0, np.float32)
        return store_counts_from_rows(
            rows, cols, values, mass.column("canonical").to_numpy(), mass.column("value").to_numpy()
        )

    def __contains__(self, store: object) -> bool:
        return store in self._known

    def __iter__(self) -> Iterator[int]:
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)
