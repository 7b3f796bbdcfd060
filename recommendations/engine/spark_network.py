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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.network import NetworkCounts


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
) -> NetworkCounts:
    """The counts, computed by Spark and written as Parquet under `inputs.output`; `read(name)` gives
    back the result `name` ("pairs", "mass", "categories") as an Arrow table."""
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
        return NetworkCounts({}, sp.csr_matrix((n_categories, n_categories), dtype=np.float32), 0)
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
    # the results are written where the inputs are (a cluster's driver would not hold them), then read
    pairs.write.mode("overwrite").parquet(f"{inputs.output}/pairs")
    mass.write.mode("overwrite").parquet(f"{inputs.output}/mass")
    category_pairs.write.mode("overwrite").parquet(f"{inputs.output}/categories")
    known.unpersist()
    return counts_from_tables(
        read("pairs"), read("mass"), read("categories"), n_canonical=n_canonical, n_categories=n_categories,
        events=int(n_events),
    )  # fmt: skip


def counts_from_tables(
    pairs: Any, mass: Any, categories: Any, *, n_canonical: int, n_categories: int, events: int
) -> NetworkCounts:
    """NetworkCounts from the job's three results (Arrow tables): (store_id, row, col, value),
    (store_id, canonical, value) and (row, col, value)."""
    pair_rows = {name: pairs.column(name).to_numpy() for name in ("store_id", "row", "col", "value")}
    mass_rows = {name: mass.column(name).to_numpy() for name in ("store_id", "canonical", "value")}
    own: dict[int, tuple[sp.csr_matrix, np.ndarray]] = {}
    pair_order = np.argsort(pair_rows["store_id"], kind="stable")
    mass_order = np.argsort(mass_rows["store_id"], kind="stable")
    pair_stores, mass_stores = pair_rows["store_id"][pair_order], mass_rows["store_id"][mass_order]
    for store in np.union1d(pair_stores, mass_stores).astype(np.int64):
        mine = pair_order[np.searchsorted(pair_stores, store) : np.searchsorted(pair_stores, store, "right")]
        counts = sp.csr_matrix(
            (
                pair_rows["value"][mine].astype(np.float32),
                (pair_rows["row"][mine].astype(np.int64), pair_rows["col"][mine].astype(np.int64)),
            ),
            shape=(n_canonical, n_canonical),
            dtype=np.float32,
        )
        here = mass_order[np.searchsorted(mass_stores, store) : np.searchsorted(mass_stores, store, "right")]
        store_mass = np.zeros(n_canonical, dtype=np.float32)
        store_mass[mass_rows["canonical"][here].astype(np.int64)] = mass_rows["value"][here]
        own[int(store)] = (counts, store_mass)
    category_total = sp.csr_matrix(
        (
            categories.column("value").to_numpy().astype(np.float32),
            (
                categories.column("row").to_numpy().astype(np.int64),
                categories.column("col").to_numpy().astype(np.int64),
            ),
        ),
        shape=(n_categories, n_categories),
        dtype=np.float32,
    )
    return NetworkCounts(own=own, categories=category_total, events=events)
