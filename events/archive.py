"""Retention and the events' archive: a store's events older than its `retention_days` are written to
Parquet (pyarrow), one file per store and month, and removed from PostgreSQL. Files go to a local folder
by default, or to any object store fsspec reaches (EVENT_ARCHIVE_URL, e.g. s3://bucket/recsys).

Layout (hive-style, so Spark and pyarrow.dataset read it as a table partitioned by store and month):

    <root>/events/store=<id>/month=<YYYY-MM>/events-<first id>-<last id>.parquet

The EventArchive rows are the manifest: a file counts only once its row is committed, in the same
transaction that removes its events from PostgreSQL (a file written by a run that failed before its commit
is an orphan, deleted by the next run). A month whose every store is past retention is one transaction:
each store's file, then the partition detached and dropped, refused by the database when it holds other
rows than those written (an event that arrived meanwhile). Otherwise each store's rows are removed by a
DELETE ... RETURNING inside the COPY that reads them, so exactly the rows written are the rows removed.

A file holds its rows in shopper order (then time), a row group per CHUNK_ROWS: a shopper's export reads
the row groups whose statistics may hold them, and erasure rewrites only the files whose footers say they
may (shopper_groups). Training reads the archived months inside its window.
"""

from __future__ import annotations

import bisect
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.conf import settings
from django.db import OperationalError, connection, transaction

from events import partitions
from events.models import EventArchive

logger = logging.getLogger(__name__)

COLUMNS = (
    "id", "user_id", "session_id", "product_id", "type", "quantity", "price", "rating", "channel",
    "timestamp", "event_id", "recommendation_id", "received_at",
)  # fmt: skip
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("product_id", pa.int64()),
        ("type", pa.int16()),
        ("quantity", pa.int32()),
        ("price", pa.decimal128(14, 4)),
        ("rating", pa.float64()),
        ("channel", pa.int16()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("event_id", pa.string()),
        ("recommendation_id", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)
_SELECT = ", ".join(COLUMNS)
# Held by each archiving transaction (a month of a store, or a month whole) from its read of PostgreSQL to
# its commit, and by a shopper's erasure while it rewrites the files: the erasure, which deleted the
# shopper's rows first, then sees every file a transaction that read them has written.
_WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('recsys_event_archive_write'))"
CHUNK_ROWS = 100_000  # rows a Parquet row group holds (and the most held in memory at once)
_ARCHIVE_ORDER = "user_id, timestamp, id"  # (user_id compares bytewise, as Parquet's statistics do)


def _filesystem() -> tuple[Any, str]:
    """The archive's filesystem and root path (fsspec: a local folder, s3://, gs://, memory://, ...)."""
    fs, root = fsspec.core.url_to_fs(settings.EVENT_ARCHIVE_URL)
    return fs, root.rstrip("/")


def _month_folder(root: str, store_id: int, month: datetime) -> str:
    return f"{root}/events/store={store_id}/month={month:%Y-%m}"


@dataclass
class ArchiveReport:
    partitions_dropped: int = 0
    stores_archived: int = 0
    rows_archived: int = 0
    files_written: int = 0
    orphans_removed: int = 0
    keys_pruned: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# --- writing ---------------------------------------------------------------------------------------


class _FileWriter:
    """Rows to one Parquet file, a row group per CHUNK_ROWS; first and last id seen."""

    def __init__(self, fs: Any, folder: str) -> None:
        self.fs, self.folder = fs, folder
        self.tmp = f"{folder}/.writing-{uuid.uuid4().hex}.parquet"
        fs.makedirs(folder, exist_ok=True)
        self.handle = fs.open(self.tmp, "wb")
        self.writer = pq.ParquetWriter(self.handle, SCHEMA, compression="zstd")
        self.rows = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.buffer: list[tuple] = []

    def add(self, row: tuple) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        table = arrow_table(self.buffer, SCHEMA)
        ids = table.column("id")
        low, high = pc.min(ids).as_py(), pc.max(ids).as_py()
        self.first_id = low if self.first_id is None else min(self.first_id, low)
        self.last_id = high if self.last_id is None else max(self.last_id, high)
        self.writer.write_table(table)
        self.rows += len(self.buffer)
        self.buffer = []

    def close(self) -> str | None:
        """The file's final path (None and nothing kept when no row came)."""
        self._flush()
        self.writer.close()
        self.handle.close()
        if not self.rows:
            self.fs.rm(self.tmp)
            return None
        path = f"{self.folder}/events-{self.first_id}-{self.last_id}.parquet"
        self.fs.mv(self.tmp, path)
        return path

    def abandon(self) -> None:
        try:
            self.writer.close()
            self.handle.close()
        finally:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)


COPY_TYPES = [
    "int8",
    "text",
    "text",
    "int8",
    "int2",
    "int4",
    "numeric",
    "float8",
    "int2",
    "timestamptz",
    "text",
    "text",
    "timestamptz",
]  # fmt: skip  (COLUMNS as COPY's binary format gives them)


def _copy_rows(query: str, params: list[Any], types: list[str]) -> Iterator[tuple]:
    """The rows of `COPY (query) TO STDOUT`, streamed (binary, of these types)."""
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", params) as copy,
    ):
        copy.set_types(types)
        yield from copy.rows()


def arrow_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """Rows (tuples in the schema's column order) as an Arrow table."""
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


EXPORT_SCHEMA = pa.schema(
    [("store_id", pa.int64()), ("user_id", pa.string()), ("product_id", pa.int64()), ("type", pa.int32())]
)


def export_events(fs: Any, folder: str, store_ids: list[int]) -> list[str]:
    """These stores' events still in PostgreSQL as Parquet files under `folder` (fsspec), CHUNK_ROWS x 5
    a file, streamed (COPY, binary): what a job outside the database (the global model on Spark) reads
    beside the archive. Answers the files' paths."""
    fs.makedirs(folder, exist_ok=True)
    paths: list[str] = []
    buffer: list[tuple] = []

    def flush() -> None:
        if buffer:
            path = f"{folder}/part-{len(paths):05d}.parquet"
            with fs.open(path, "wb") as handle:
                pq.write_table(arrow_table(buffer, EXPORT_SCHEMA), handle)
            paths.append(path)
            buffer.clear()

    if store_ids:
        query = "SELECT store_id, user_id, product_id, type FROM events_event WHERE store_id = ANY(%s)"
        for row in _copy_rows(query, [store_ids], ["int8", "text", "int8", "int2"]):
            buffer.append(row)
            if len(buffer) >= 5 * CHUNK_ROWS:
                flush()
        flush()
    return paths


def _write_store_month(
    store_id: int, part: partitions.Partition, *, delete: bool, report: ArchiveReport
) -> int:
    """One store's events of one partition to a file and the manifest (inside the caller's transaction);
    with `delete`, they leave PostgreSQL in the same statement that reads them. Answers the rows."""
    fs, root = _filesystem()
    month = part.lower or datetime(1970, 1, 1, tzinfo=UTC)
    writer = _FileWriter(fs, _month_folder(root, store_id, month))
    where = "store_id = %s AND timestamp < %s" + ("" if part.lower is None else " AND timestamp >= %s")
    params: list[Any] = [store_id, part.upper] + ([] if part.lower is None else [part.lower])
    # ordered by shopper, so that each row group holds a narrow range of shopper ids: a shopper's export or
    # erasure reads the row groups whose statistics may hold them, not the whole archive (shopper_groups)
    query = (
        f"WITH gone AS (DELETE FROM events_event WHERE {where} RETURNING {_SELECT}) "
        f"SELECT * FROM gone ORDER BY {_ARCHIVE_ORDER}"
        if delete
        else f"SELECT {_SELECT} FROM events_event WHERE {where} ORDER BY {_ARCHIVE_ORDER}"
    )
    try:
        for row in _copy_rows(query, params, COPY_TYPES):
            writer.add(row)
        path = writer.close()
    except BaseException:
        writer.abandon()
        raise
    if path is None or writer.first_id is None or writer.last_id is None:
        return 0
    # the file counts once this row commits; a rollback leaves it an orphan, which the next run removes
    EventArchive.objects.create(
        store_id=store_id,
        month=month.date(),
        path=path,
        rows=writer.rows,
        first_id=writer.first_id,
        last_id=writer.last_id,
    )
    report.files_written += 1
    report.rows_archived += writer.rows
    return writer.rows


def _stores_in(part: partitions.Partition) -> list[int]:
    """The stores with events in a partition: a skip scan of the primary key (one probe per store)."""
    lower = part.lower or datetime(1, 1, 1, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE stores AS (
                SELECT min(store_id) AS id FROM events_event
                WHERE timestamp >= %(lower)s AND timestamp < %(upper)s
                UNION ALL
                SELECT (SELECT min(store_id) FROM events_event
                        WHERE store_id > stores.id AND timestamp >= %(lower)s AND timestamp < %(upper)s)
                FROM stores WHERE stores.id IS NOT NULL
            )
            SELECT id FROM stores WHERE id IS NOT NULL
            """,
            {"lower": lower, "upper": part.upper},
        )
        return [int(row[0]) for row in cursor.fetchall()]


def _retentions(store_ids: Iterable[int]) -> dict[int, int | None]:
    from tenants.selectors import retention_days

    return retention_days(store_ids=list(store_ids))


def archive_due(*, now: datetime | None = None) -> ArchiveReport:
    """Archive every store's events past its retention, partition by partition, oldest first; drop the
    partitions left with no rows. Safe to run twice (and concurrently: one run at a time holds the lock)."""
    now = now or datetime.now(tz=UTC)
    report = ArchiveReport()
    with _exclusive() as mine:
        if not mine:
            return report
        report.orphans_removed = _sweep_orphans(now)
        for part in partitions.partitions():
            if part.upper > now:
                break
            stores = _stores_in(part)
            if not stores:
                if part.upper <= partitions.month_start(now) and partitions.drop(part.name):
                    report.partitions_dropped += 1
                continue
            retention = _retentions(stores)
            due = [
                store
                for store in stores
                if retention.get(store) is not None
                and part.upper <= now - timedelta(days=retention[store] or 0)
            ]
            if not due:
                continue
            if len(due) == len(stores):
                written = (report.files_written, report.rows_archived)
                try:
                    with transaction.atomic():
                        _lock_writes()
                        expected = sum(_write_store_month(s, part, delete=False, report=report) for s in due)
                        # refused (an error: all of it rolls back) when the partition holds other rows
                        partitions.drop(part.name, expected_rows=expected)
                except OperationalError as error:
                    if "not dropped" not in str(error):
                        raise
                    # an event arrived meanwhile: nothing of this month changed; the next run tries again
                    # (its files, orphans now, are removed then)
                    report.files_written, report.rows_archived = written
                    logger.warning("%s not archived this time: %s", part.name, error)
                    continue
                report.partitions_dropped += 1
            else:
                for store in due:
                    with transaction.atomic():
                        _lock_writes()
                        _write_store_month(store, part, delete=True, report=report)
            report.stores_archived += len(due)
            logger.info("archived %s: %d stores", part.name, len(due))
        report.keys_pruned = _prune_keys(now)
    return report


def _lock_writes() -> None:
    with connection.cursor() as cursor:
        cursor.execute(_WRITE_LOCK)


@contextmanager
def _exclusive() -> Iterator[bool]:
    """One archiving run at a time (a session-level advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext('recsys_event_archive'))")
        mine = bool(cursor.fetchone()[0])
    try:
        yield mine
    finally:
        if mine:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext('recsys_event_archive'))")


def _sweep_orphans(now: datetime) -> int:
    """Files under the archive that no manifest row names: those of a run that died before its commit,
    and rewrites left half-done for more than a day."""
    fs, root = _filesystem()
    base = f"{root}/events"
    if not fs.exists(base):
        return 0
    known = {_bare(path) for path in EventArchive.objects.values_list("path", flat=True)}
    removed = 0
    for path in fs.find(base):
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".parquet") or _bare(path) in known:
            continue
        if name.startswith(".writing-") and not _older_than(fs, path, now - timedelta(days=1)):
            continue  # a rewrite in progress
        fs.rm(path)
        removed += 1
    return removed


def _bare(path: str) -> str:
    return path.split("://", 1)[-1].lstrip("/")


def _older_than(fs: Any, path: str, moment: datetime) -> bool:
    info = fs.info(path)
    modified = info.get("mtime") or info.get("LastModified") or info.get("created")
    if modified is None:
        return True
    if isinstance(modified, int | float):
        modified = datetime.fromtimestamp(modified, tz=UTC)
    elif modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    return bool(modified < moment)


def _prune_keys(now: datetime) -> int:
    """Event ids received longer ago than the idempotency window."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM events_eventkey WHERE received_at < %s",
            [now - timedelta(days=settings.EVENT_ID_WINDOW_DAYS)],
        )
        return cursor.rowcount


# --- reading -------------------------------------------------------------------------------------


def archived_files(*, store_id: int, since: datetime | None = None) -> list[EventArchive]:
    files = EventArchive.objects.filter(store_id=store_id)
    if since is not None:
        files = files.filter(month__gte=partitions.month_start(since).date())
    return list(files.order_by("month", "first_id"))


def read_archived(
    *, store_id: int, columns: list[str], since: datetime | None = None, users: list[str] | None = None
) -> pa.Table:
    """The store's archived events (at `since` or later; of these shoppers only, read from the row groups
    that may hold them), as one Arrow table."""
    fs, _ = _filesystem()
    since_at = None if since is None else pa.scalar(since, type=pa.timestamp("us", tz="UTC"))
    filters = None if since_at is None else [("timestamp", ">=", since_at)]
    tables = []
    for entry in archived_files(store_id=store_id, since=since):
        if users is None:
            tables.append(pq.read_table(entry.path, columns=columns, filters=filters, filesystem=fs))
            continue
        with fs.open(entry.path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            groups = shopper_groups(parquet.metadata, users)
            if not groups:
                continue
            table = parquet.read_row_groups(groups, columns=sorted({*columns, "user_id", "timestamp"}))
        keep = pc.is_in(table.column("user_id"), value_set=pa.array(users, type=pa.string()))
        if since_at is not None:
            keep = pc.and_(keep, pc.greater_equal(table.column("timestamp"), since_at))
        tables.append(table.filter(keep).select(columns))
    if not tables:
        return pa.table({name: pa.array([], type=SCHEMA.field(name).type) for name in columns})
    return pa.concat_tables(tables)


def shopper_groups(metadata: pq.FileMetaData, users: Iterable[str]) -> list[int]:
    """The row groups of a file whose user_id statistics may hold one of these shoppers (every group whose
    statistics are missing). Files are written in shopper order (_ARCHIVE_ORDER), so nearly always one or
    two of a file's groups; files written in id order, before, hold every shopper in every group."""
    wanted = sorted(set(users))
    column = metadata.schema.names.index("user_id")
    found = []
    for number in range(metadata.num_row_groups):
        statistics = metadata.row_group(number).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            found.append(number)
            continue
        low, high = statistics.min, statistics.max
        at = bisect.bisect_left(wanted, low)  # the first wanted id not below the group's least
        if at < len(wanted) and wanted[at] <= high:
            found.append(number)
    return found


# --- erasure -------------------------------------------------------------------------------------


def shopper_erase(store_id: int, identities: list[str]) -> int:
    """Rewrite every archived file of the store that holds one of these shoppers' events without them;
    answers the rows removed. Safe to run twice (a file is replaced only after its rewrite is written)."""
    with transaction.atomic():
        _lock_writes()  # after an archiving transaction that read the rows, with its file in the manifest
        return _shopper_rewrite(store_id, identities)


def _shopper_rewrite(store_id: int, identities: list[str]) -> int:
    fs, _ = _filesystem()
    removed = 0
    wanted = pa.array(identities, type=pa.string())
    for entry in archived_files(store_id=store_id):
        with fs.open(entry.path, "rb") as handle:
            if not shopper_groups(pq.read_metadata(handle), identities):
                continue  # (its footer alone: none of its row groups can hold them)
        table = pq.read_table(entry.path, filesystem=fs)
        theirs = pc.is_in(table.column("user_id"), value_set=wanted)
        count = pc.sum(theirs).as_py() or 0
        if not count:
            continue
        kept = table.filter(pc.invert(theirs))
        if kept.num_rows:
            folder = entry.path.rsplit("/", 1)[0]
            tmp = f"{folder}/.writing-{uuid.uuid4().hex}.parquet"
            with fs.open(tmp, "wb") as handle:
                pq.write_table(kept, handle, compression="zstd", row_group_size=CHUNK_ROWS)
            fs.mv(tmp, entry.path)  # replaced whole: a reader sees the old file or the new one
            EventArchive.objects.filter(pk=entry.pk).update(rows=kept.num_rows)
        else:
            EventArchive.objects.filter(pk=entry.pk).delete()
            fs.rm(entry.path)
        removed += count
    return removed


def shopper_export(store_id: int, identities: list[str]) -> list[dict[str, Any]]:
    """The shopper's archived events, as stored (internal product ids: the caller names them)."""
    table = read_archived(store_id=store_id, columns=list(COLUMNS), users=identities)
    return table.to_pylist()


def store_erase(store_id: int) -> dict[str, int]:
    """Every archived file of the store, and its manifest."""
    fs, root = _filesystem()
    files = archived_files(store_id=store_id)
    EventArchive.objects.filter(store_id=store_id).delete()
    folder = f"{root}/events/store={store_id}"
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    return {"archived_files": len(files)}
