"""The global model's behaviour counts on Spark (`manage.py train_global --engine spark [--master URL]`).

The job reads Parquet only, so that it runs on any cluster that sees the files:
- the archive's files of the sharing stores (events past retention, events/archive.py), where they are;
- an export of the sharing stores' events still in PostgreSQL (COPY, streamed into Parquet files);
- the small tables: products (canonical and category codes), event weights, aliases.

The export and the small tables go to SPARK_STAGING_URL (a folder the cluster reads: local by default, for
`local[*]`; an object store for a cluster), one folder per run, removed afterwards. The network's sums come
back to this process, which finishes the global model exactly as the in-process engine does; each store's
counts stay in the folder (one partition a store) and are read when its slice is made, so that the process
never holds every store's at once (at 50M events, 1,000 stores, reading them all back at once did not fit
in 23 GB).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from events.archive import archived_files, arrow_table, export_events
from events.selectors import store_aliases
from recommendations.engine.network import NetworkCounts
from recommendations.engine.spark_network import SparkInputs, network_counts, session
from recommendations.network import NetworkCatalog
from recommendations.selectors import event_type_weights

logger = logging.getLogger(__name__)


def _spark_url(fs: Any, path: str) -> str:
    """A path of an fsspec filesystem as Spark names it (a local path as is, else protocol://path)."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


@contextmanager
def counts_with_spark(catalog: NetworkCatalog, *, master: str | None = None) -> Iterator[NetworkCounts]:
    """The counts by a Spark job; its results stay in the staging folder (each store's read when its
    slice is made) until the caller is done with them."""
    fs, root = fsspec.core.url_to_fs(settings.SPARK_STAGING_URL)
    folder = f"{root.rstrip('/')}/global-{uuid.uuid4().hex[:12]}"
    fs.makedirs(folder, exist_ok=True)
    try:
        inputs = _stage(fs, folder, catalog)
        spark = session(
            master or settings.SPARK_MASTER, **{"spark.driver.memory": settings.SPARK_DRIVER_MEMORY}
        )

        def read(name: str) -> pa.Table:
            return pq.read_table(f"{folder}/results/{name}", filesystem=fs)

        def exists(name: str) -> bool:
            return bool(fs.exists(f"{folder}/results/{name}"))

        try:
            counts = network_counts(
                spark, inputs, n_canonical=catalog.n_canonical, n_categories=catalog.n_categories, read=read,
                exists=exists,
            )  # fmt: skip
        finally:
            spark.stop()  # the JVM's memory goes back (a worker process lives on)
        yield counts
    finally:
        fs.rm(folder, recursive=True)


def _write(fs: Any, path: str, table: pa.Table) -> None:
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle)


def _stage(fs: Any, folder: str, catalog: NetworkCatalog) -> SparkInputs:
    stores = sorted(catalog.event_weights)
    category = np.where(catalog.has_category, catalog.category_codes, -1).astype(np.int64)
    _write(
        fs,
        f"{folder}/products.parquet",
        pa.table(
            {
                "product_id": catalog.product_ids,
                "canonical": catalog.canonical.astype(np.int64),
                "category": category,
            }
        ),
    )
    weight_rows = [
        (store, kind, float(weight))
        for store in stores
        for kind, weight in enumerate(event_type_weights(catalog.event_weights[store]))
    ]
    weights = pa.schema([("store_id", pa.int64()), ("type", pa.int32()), ("weight", pa.float64())])
    _write(fs, f"{folder}/weights.parquet", arrow_table(weight_rows, weights))
    aliases = store_aliases(store_ids=stores)
    _write(
        fs,
        f"{folder}/aliases.parquet",
        arrow_table(
            aliases,
            pa.schema([("store_id", pa.int64()), ("alias_id", pa.string()), ("user_id", pa.string())]),
        ),
    )
    events = export_events(fs, f"{folder}/events", stores)
    logger.info("staged %d files of events for Spark", len(events))
    archived = [entry.path for store in stores for entry in archived_files(store_id=store)]
    archive_fs, archive_root = fsspec.core.url_to_fs(settings.EVENT_ARCHIVE_URL)
    return SparkInputs(
        events=[_spark_url(fs, path) for path in events],
        archived=[_spark_url(archive_fs, path) for path in archived],
        archive_base=_spark_url(archive_fs, f"{archive_root.rstrip('/')}/events") if archived else None,
        products=_spark_url(fs, f"{folder}/products.parquet"),
        weights=_spark_url(fs, f"{folder}/weights.parquet"),
        aliases=_spark_url(fs, f"{folder}/aliases.parquet"),
        output=_spark_url(fs, f"{folder}/results"),
    )
