"""The network: one embedding space for the products of every store that shares, and related products
across those stores. Only model parameters (product vectors) cross stores, never events; a store that
stops sharing drops out of every answer at once, because each query joins the live setting."""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from catalog.models import CONTENT_DIMENSIONS
from catalog.services import unscoped_product_network_vectors_write
from core.errors import ApiError, NotFound
from core.ids import time_ordered_id
from core.json import jsonb_dict
from events.selectors import shopper_codes, store_aliases, training_events
from recommendations.artifacts import ArtifactError, artifact_dump, artifact_load
from recommendations.engine.content import ContentEmbedding, product_document
from recommendations.engine.interactions import IdIndex
from recommendations.engine.network import (
    CountsBuilder,
    CountsFolder,
    NetworkCooccurrence,
    NetworkCounts,
    canonical_key,
    network_vectors,
    normalised_title,
    store_slices,
)
from recommendations.engine.two_stage import learn_from_samples
from recommendations.models import GlobalModel, ModelKind, NetworkSlice
from recommendations.selectors import event_type_weights
from recommendations.serving.options import catalog_filters
from tenants.models import Store, StoreSettings
from tenants.selectors import store_settings_get

logger = logging.getLogger(__name__)

EF_SEARCH = 100
MAX_SCAN_TUPLES = 20_000
STATEMENT_TIMEOUT_MS = 1000
EXACT_BELOW = 20_000  # filtered candidates under this: exact search instead of HNSW
SLICES_A_STATEMENT = 50
SLICE_PAIRS_A_STATEMENT = 5_000_000


def _peak_memory_mb() -> int:
    """This process's peak resident memory so far (a worker's: the global model runs in one)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


@dataclass(frozen=True)
class GlobalTrainingResult:
    version: int
    stores: int
    products: int
    merged_groups: int
    events: int
    seconds: float


def _sharing_products() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.id, p.store_id, p.title, p.description, p.category_path, p.brand, p.attributes, p.gtin "
            "FROM catalog_product AS p JOIN tenants_store AS s ON s.id = p.store_id AND s.is_active "
            "JOIN tenants_storesettings AS ss ON ss.store_id = p.store_id AND ss.share_network "
            "WHERE p.is_active ORDER BY p.id"
        )
        return cursor.fetchall()


def _sharing_lessons() -> list[bytes]:
    """The lesson samples of the sharing stores' active versions."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.ranker_lessons FROM recommendations_trainedmodel AS m "
            "JOIN tenants_store AS s ON s.id = m.store_id AND s.is_active "
            "JOIN tenants_storesettings AS ss ON ss.store_id = m.store_id AND ss.share_network "
            "WHERE m.is_active AND m.kind = %s AND m.ranker_lessons IS NOT NULL ORDER BY m.store_id",
            [ModelKind.STORE],
        )
        return [bytes(row[0]) for row in cursor.fetchall()]


def _store_events(store_id: int, event_weights: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user codes, product ids, weights) of one store's events, its archived ones included (as training
    reads them); aliases resolved to their user."""
    type_weight = event_type_weights(event_weights)
    events = training_events(store_id=store_id, since=None)
    if not len(events):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    canonical = {alias: user for _, alias, user in store_aliases(store_ids=[store_id])}
    _, user_codes = shopper_codes(events, canonical)
    return (
        user_codes.astype(np.int64),
        events.column("product_id").to_numpy().astype(np.int64),
        type_weight[events.column("type").to_numpy().astype(np.int64)],
    )


@dataclass(frozen=True)
class NetworkCatalog:
    """The sharing stores' products as the network sees them."""

    product_ids: np.ndarray  # internal ids, sorted
    store_of: np.ndarray
    canonical: np.ndarray  # per product, its canonical code
    n_canonical: int
    category_codes: np.ndarray  # per product, its category's code
    has_category: np.ndarray
    n_categories: int
    event_weights: dict[int, dict]  # per sharing store, its event weights setting


@contextmanager
def _counts_in_process(catalog: NetworkCatalog) -> Iterator[NetworkCounts]:
    """Each sharing store's events read here, one store at a time; each store's counts kept in a
    temporary folder until the slices are made, so that the process holds the network's sum and one
    store's counts, not every store's."""
    product_ids = catalog.product_ids
    with tempfile.TemporaryDirectory(prefix="recsys-network-") as folder:
        builder = CountsBuilder(
            CountsFolder(folder), n_canonical=catalog.n_canonical, n_categories=catalog.n_categories
        )
        for store_id, event_weights in catalog.event_weights.items():
            users, products, weights = _store_events(store_id, event_weights)
            position = np.searchsorted(product_ids, products)
            position = np.clip(position, 0, max(len(product_ids) - 1, 0))
            known = (product_ids[position] == products) if len(product_ids) else np.zeros(len(products), bool)
            known &= weights > 0
            mine = position[known]
            builder.add(
                store_id, users[known], catalog.canonical[mine], weights[known], catalog.category_codes[mine],
                catalog.has_category[mine],
            )  # fmt: skip
        yield builder.counts()


ENGINES = ("in-process", "spark")


def global_model_train(
    *,
    progress: Callable[[str], None] = lambda message: None,
    engine: str = "in-process",
    spark_master: str | None = None,
) -> GlobalTrainingResult:
    """Learn the network model over the stores that share:

    1. products matched across stores (same GTIN, or same brand and normalised title) become one
       canonical product;
    2. co-occurrence of canonical products in each store's shoppers' histories, summed over stores
       (shoppers are never joined across stores), and of categories;
    3. one embedding space from text, refined by that behaviour, stored in `network_embedding` (HNSW);
    4. per store, its slice: the network's co-occurrence among its products with its own events left out,
       which its next training blends in with a share chosen on its validation split.

    Products of stores that do not share (any more) leave the network space.

    `engine` counts the behaviour of step 2: "in-process" (this worker reads each store's events, the
    default) or "spark" (a Spark job over the archive and an export of the recent events, on
    `spark_master`; recommendations/spark_network.py). Both give the same counts; the rest is the same."""
    if engine not in ENGINES:
        raise ApiError("invalid_engine", f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    clock = time.monotonic()
    laps: dict[str, float] = {}

    def lap(name: str, message: str) -> None:
        nonlocal clock
        laps[name] = round(time.monotonic() - clock, 3)
        clock = time.monotonic()
        logger.info("global model: %s", message)
        progress(message)

    rows = _sharing_products()
    product_ids = np.array([row[0] for row in rows], dtype=np.int64)
    store_of = np.array([row[1] for row in rows], dtype=np.int64)
    keys = [canonical_key(gtin=row[7], brand=row[5], title=row[2]) for row in rows]
    # every product is a canonical product; those with the same key are one
    codes_by_key: dict[str, int] = {}
    canonical = np.empty(len(rows), dtype=np.int64)
    for index, key in enumerate(keys):
        canonical[index] = codes_by_key.setdefault(key or f"product:{product_ids[index]}", len(codes_by_key))
    n_canonical = len(codes_by_key)
    del keys, codes_by_key
    # a product's category, for categories that go together: the last level of its path
    leaves = np.array([normalised_title(row[4][-1]) if row[4] else "" for row in rows] + [""], dtype=str)
    category_index, category_codes = np.unique(leaves, return_inverse=True)
    category_codes, has_category = category_codes[:-1], leaves[:-1] != ""
    del leaves
    documents = [
        product_document(title, description or "", list(path or []), brand or "", jsonb_dict(attributes))
        for _, _, title, description, path, brand, attributes, _ in rows
    ]
    n_products = len(rows)
    del rows  # the catalog's rows are the largest thing held past here at a million products
    settings_by_store = dict(
        StoreSettings.objects.filter(share_network=True, store__is_active=True).values_list(
            "store_id", "event_weights"
        )
    )
    lap(
        "catalog", f"{n_products} products of {len(settings_by_store)} sharing stores, {n_canonical} distinct"
    )

    catalog = NetworkCatalog(
        product_ids, store_of, canonical, n_canonical, category_codes, has_category, len(category_index),
        settings_by_store,
    )  # fmt: skip
    if engine == "spark":
        try:
            import pyspark  # noqa: F401
        except ImportError as error:
            raise ApiError(
                "spark_missing", "the Spark engine needs pyspark (pip install 'recsys[spark]') and Java 17+"
            ) from error
        from recommendations.spark_network import counts_with_spark

        counting = counts_with_spark(catalog, master=spark_master)
    else:
        counting = _counts_in_process(catalog)
    with counting as counts:
        cooccurrence = NetworkCooccurrence.from_counts(counts, n_canonical=n_canonical)
        n_events = counts.events
        lap("behaviour", f"co-occurrence of {n_events} events ({engine})")

        text = ContentEmbedding(dimensions=CONTENT_DIMENSIONS).text_features(documents)
        del documents
        vectors, merged = network_vectors(
            text, cooccurrence, counts.categories, canonical=canonical, category_codes=category_codes,
            dimensions=CONTENT_DIMENSIONS,
        )  # fmt: skip
        del text
        lap("embedding", f"network embedding, {merged} products matched across stores")

        # the network's ranker: LambdaRank on the sharing stores' lesson samples (relative features of
        # candidate lists, no product or shopper in them); small stores that share judge it as their own
        ranker_text, ranker_metrics = learn_from_samples(_sharing_lessons())
        lap(
            "ranker",
            f"network ranker from {ranker_metrics['lessons']} lessons of {ranker_metrics['stores']} stores",
        )

        with transaction.atomic():
            _write_vectors(product_ids, vectors)
            del vectors
            lap("vectors", f"{n_products} network vectors stored")
            latest = GlobalModel.objects.aggregate(v=Max("version"))["v"] or 0
            GlobalModel.objects.filter(is_active=True).update(is_active=False)
            metrics = {
                "stores": len(settings_by_store), "products": n_products, "canonical_products": n_canonical,
                "merged_groups": merged, "events": n_events, "network_pairs": int(cooccurrence.total_.nnz),
                "ranker": ranker_metrics, "engine": engine,
            }  # fmt: skip
            model = GlobalModel.objects.create(
                version=latest + 1, is_active=True, activated_at=timezone.now(), metrics=metrics,
                ranker=ranker_text or "",
                parameters={"k": cooccurrence.k, "alpha": cooccurrence.alpha, "shrink": cooccurrence.shrink,
                            "dimensions": CONTENT_DIMENSIONS},
            )  # fmt: skip
            # each store's slice made and stored in turn (a few stores' artifacts held at once)
            n_slices, batch, batch_pairs = 0, [], 0
            for store_id, mine, matrix in store_slices(cooccurrence, settings_by_store, store_of, canonical):
                batch.append(
                    NetworkSlice(
                        store_id=store_id,
                        global_model=model,
                        n_items=len(mine),
                        n_pairs=int(matrix.nnz),
                        artifact=artifact_dump({"product_ids": product_ids[mine], "matrix": matrix}),
                    )  # fmt: skip
                )
                n_slices, batch_pairs = n_slices + 1, batch_pairs + int(matrix.nnz)
                if len(batch) >= SLICES_A_STATEMENT or batch_pairs >= SLICE_PAIRS_A_STATEMENT:
                    NetworkSlice.objects.bulk_create(batch)
                    batch, batch_pairs = [], 0
            NetworkSlice.objects.bulk_create(batch)
            # slices are read only when a store trains: keep those of this version and the one before
            NetworkSlice.objects.filter(global_model__version__lt=latest).delete()
            metrics["slices"] = n_slices
            lap("slices", f"{n_slices} store slices")
    lap("store", f"version {model.version} stored and active")
    seconds = round(sum(laps.values()), 2)
    metrics |= {"seconds_by_phase": laps, "peak_memory_mb": _peak_memory_mb(), "seconds": seconds}
    GlobalModel.objects.filter(pk=model.pk).update(metrics=metrics)
    result = GlobalTrainingResult(
        model.version, len(settings_by_store), n_products, merged, n_events, seconds
    )
    logger.info("global model trained: %s", result)
    return result


def _write_vectors(product_ids: np.ndarray, vectors: np.ndarray) -> None:
    unscoped_product_network_vectors_write(product_ids=product_ids, vectors=vectors)
    with connection.cursor() as cursor:
        # products of stores that do not share (any more), or no longer active, leave the network
        cursor.execute(
            "UPDATE catalog_product AS p SET network_embedding = NULL WHERE p.network_embedding IS NOT NULL "
            "AND (NOT p.is_active OR NOT EXISTS (SELECT 1 FROM tenants_storesettings AS ss "
            "JOIN tenants_store AS s ON s.id = ss.store_id WHERE ss.store_id = p.store_id "
            "AND ss.share_network AND s.is_active))"
        )


def network_slice_for(*, store: Store, product_ids: np.ndarray) -> tuple[sp.csr_matrix | None, int | None]:
    """The store's slice of the active global model, laid out over `product_ids` (the store model's
    item order), and the global version; (None, None) when the store does not share or has no slice."""
    if not store_settings_get(store=store).share_network:
        return None, None
    row = (
        NetworkSlice.objects.filter(store=store, global_model__is_active=True)
        .values_list("artifact", "global_model__version")
        .first()
    )
    if row is None:
        return None, None
    try:
        arrays = artifact_load(bytes(row[0]))
        ids, matrix = np.asarray(arrays["product_ids"], dtype=np.int64), sp.coo_matrix(arrays["matrix"])
    except (ArtifactError, KeyError, AttributeError):
        # the store trains on its own; the next global training writes a new slice
        logger.warning(
            "network slice of store %s (global v%s) is unreadable; training without it", store.id, row[1]
        )
        return None, None
    index = IdIndex(ids=np.asarray(product_ids, dtype=np.int64))
    rows, cols = index.positions(ids[matrix.row]), index.positions(ids[matrix.col])
    keep = (rows >= 0) & (cols >= 0)
    n = len(index)
    laid_out = sp.csr_matrix((matrix.data[keep], (rows[keep], cols[keep])), shape=(n, n), dtype=np.float32)
    return laid_out, int(row[1])


def related_network(*, store: Store, external_id: str, options: Any) -> dict[str, Any]:
    """Similar products in the other stores that share, nearest first in the network space."""
    if not store_settings_get(store=store).share_network:
        raise ApiError(
            "network_sharing_off",
            'this store does not share with the network; PATCH /api/v1/store {"share_network": true}',
            status_code=403,
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, network_embedding IS NOT NULL FROM catalog_product "
            "WHERE store_id = %s AND external_id = %s",
            [store.id, external_id],
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFound("no such product")
        product_id, in_network = row
        items: list[dict[str, Any]] = []
        if in_network:
            items = _nearest_in_network(cursor, store, product_id, options)
    source = "network" if in_network else "network (the product joins at the next global training)"
    return {"recommendation_id": time_ordered_id(), "source": source, "items": items}


def _matching_at_most(cursor: Any, store: Store, extra: str, params: list, limit: int) -> bool:
    """Whether at most `limit` network products pass the filters (counting stops at limit + 1)."""
    cursor.execute(
        "SELECT count(*) FROM (SELECT 1 FROM catalog_product AS p "
        "JOIN tenants_storesettings AS ss ON ss.store_id = p.store_id AND ss.share_network "
        "WHERE p.store_id <> %s AND p.is_active AND p.network_embedding IS NOT NULL"
        + extra
        + " LIMIT %s) AS m",
        [store.id, *params, limit + 1],
    )
    return int(cursor.fetchone()[0]) <= limit


def _nearest_in_network(cursor: Any, store: Store, product_id: int, options: Any) -> list[dict[str, Any]]:
    clauses, params = catalog_filters(options, table="p")
    extra = "".join(f" AND {clause}" for clause in clauses)
    with transaction.atomic():
        if clauses and _matching_at_most(cursor, store, extra, params, EXACT_BELOW):
            # a narrow filter: an exact scan of the few matching rows beats a filtered HNSW walk
            # (bench/network.py at 1M vectors, a 1% filter: exact recall 0.998, p95 16 ms; HNSW 0.88, 27 ms)
            cursor.execute("SET LOCAL enable_indexscan = off")
        # filtered HNSW scans keep going until they have the limit (pgvector 0.8 iterative scans),
        # bounded in tuples and time
        cursor.execute(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}")
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        cursor.execute(
            "SELECT p.external_id, st.slug, 1 - (p.network_embedding <=> q.v) AS similarity "
            "FROM (SELECT network_embedding AS v FROM catalog_product WHERE store_id = %s AND id = %s) AS q, "
            "catalog_product AS p "
            "JOIN tenants_store AS st ON st.id = p.store_id AND st.is_active "
            "JOIN tenants_storesettings AS ss ON ss.store_id = p.store_id AND ss.share_network "
            "WHERE p.store_id <> %s AND p.is_active AND p.network_embedding IS NOT NULL" + extra + " "
            "ORDER BY p.network_embedding <=> q.v LIMIT %s",
            [store.id, product_id, store.id, *params, options.limit * 2],
        )
        rows = cursor.fetchall()
    # relaxed ordering may return neighbours slightly out of order: sort, then cut
    rows.sort(key=lambda row: -row[2])
    return [
        {
            "id": external_id,
            "store": slug,
            "score": round(float(similarity), 6),
            "reason": f"similar product at {slug}",
        }
        for external_id, slug, similarity in rows[: options.limit]
    ]
