"""The global model's behaviour counts on Spark (`manage.py train_global --engine spark [--master URL]`).

The job reads Parquet only, so that it runs on any cluster that sees the files:
- the archive's files of the sharing stores (events past retention, events/archive.py), where they are;
- an export of the sharing stores' events still in PostgreSQL (COPY, streamed into Parquet files);
- the small tables: products (canonical and category codes), event weights, aliases.

The export and the small tables go to SPARK_STAGING_URL (a folder the cluster reads: local by default, for
`local[*]`; an object store for a cluster), one folder per run, removed afterwards. The counts come back to
this process, which finishes the global model exactly as the in-process engine does.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.db import connection

from events.archive import archived_files
from recommendations.engine.network import NetworkCounts
from recommendations.engine.spark_network import SparkInputs, network_counts, session
from recommendations.network import NetworkCatalog
from recommendations.selectors import event_type_weights

logger = logging.getLogger(__name__)
EXPORT_CHUNK = 500_000  # events a staged file holds
EVENT_SCHEMA = pa.schema(
    [("store_id", pa.int64()), ("user_id", pa.string()), ("product_id", pa.int64()), ("type", pa.int32())]
)


def counts_with_spark(catalog: NetworkCatalog, *, master: str | None = None) -> NetworkCounts:
    fs, root = fsspec.core.url_to_fs(settings.SPARK_STAGING_URL)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    folder = f"{root.rstrip('/')}/global-{uuid.uuid4().hex[:12]}"
    fs.makedirs(folder, exist_ok=True)

    def url(path: str) -> str:  # as Spark names it
        return path if protocol in ("file", "local") else f"{protocol}://{path}"

    try:
        inputs = _stage(fs, folder, catalog, url)
        spark = session(
            master or settings.SPARK_MASTER, **{"spark.driver.memory": settings.SPARK_DRIVER_MEMORY}
        )

        def read(name: str) -> pa.Table:
            return pq.read_table(f"{folder}/results/{name}", filesystem=fs)

        try:
            return network_counts(
                spark, inputs, n_canonical=catalog.n_canonical, n_categories=catalog.n_categories, read=read
            )
        finally:
            spark.stop()  # the JVM's memory goes back (a worker process lives on)
    finally:
        fs.rm(folder, recursive=True)


def _write(fs: Any, path: str, table: pa.Table) -> None:
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle)


def _stage(fs: Any, folder: str, catalog: NetworkCatalog, url: Any) -> SparkInputs:
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
    _write(
        fs,
        f"{folder}/weights.parquet",
        pa.table(
            {
                "store_id": pa.array([row[0] for row in weight_rows], pa.int64()),
                "type": pa.array([row[1] for row in weight_rows], pa.int32()),
                "weight": pa.array([row[2] for row in weight_rows], pa.float64()),
            }
        ),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT store_id, alias_id, user_id FROM events_useralias WHERE store_id = ANY(%s)", [stores]
        )
        aliases = cursor.fetchall()
    _write(
        fs,
        f"{folder}/aliases.parquet",
        pa.table(
            {
                "store_id": pa.array([row[0] for row in aliases], pa.int64()),
                "alias_id": pa.array([row[1] for row in aliases], pa.string()),
                "user_id": pa.array([row[2] for row in aliases], pa.string()),
            }
        ),
    )
    events = _export_events(fs, f"{folder}/events", stores)
    archived = [entry.path for store in stores for entry in archived_files(store_id=store)]
    archive_fs, archive_root = fsspec.core.url_to_fs(settings.EVENT_ARCHIVE_URL)
    archive_protocol = (
        archive_fs.protocol[0] if isinstance(archive_fs.protocol, tuple | list) else archive_fs.protocol
    )

    def archive_url(path: str) -> str:
        return path if archive_protocol in ("file", "local") else f"{archive_protocol}://{path}"

    return SparkInputs(
        events=[url(path) for path in events],
        archived=[archive_url(path) for path in archived],
        archive_base=archive_url(f"{archive_root.rstrip('/')}/events") if archived else None,
        products=url(f"{folder}/products.parquet"),
        weights=url(f"{folder}/weights.parquet"),
        aliases=url(f"{folder}/aliases.parquet"),
        output=url(f"{folder}/results"),
    )


def _export_events(fs: Any, folder: str, stores: list[int]) -> list[str]:
    """The sharing stores' events in PostgreSQL, streamed (COPY, binary) into Parquet files."""
    fs.makedirs(folder, exist_ok=True)
    paths: list[str] = []
    buffer: list[tuple] = []

    def flush() -> None:
        if not buffer:
            return
        columns = list(zip(*buffer, strict=True))
        table = pa.Table.from_arrays(
            [pa.array(values, type=field.type) for values, field in zip(columns, EVENT_SCHEMA, strict=True)],
            schema=EVENT_SCHEMA,
        )
        path = f"{folder}/part-{len(paths):05d}.parquet"
        _write(fs, path, table)
        paths.append(path)
        buffer.clear()

    if not stores:
        return paths
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY (SELECT store_id, user_id, product_id, type FROM events_event WHERE store_id = ANY(%s)) "
            "TO STDOUT (FORMAT BINARY)",
            [stores],
        ) as copy,
    ):
        copy.set_types(["int8", "text", "int8", "int2"])
        for row in copy.rows():
            buffer.append(row)
            if len(buffer) >= EXPORT_CHUNK:
                flush()
    flush()
    logger.info("staged %d files of events for Spark", len(paths))
    return paths
