"""Events partitioned by month: partitions made ahead and on ingest, idempotency across them, queries that
touch only the partitions they need (read from EXPLAIN), retention into the Parquet archive, training from
the archive, and erasure and export reaching it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.db import connection

from events import archive, partitions, selectors
from events.models import Event, EventArchive
from events.selectors import user_history
from events.services import events_maintain
from tests.conftest import make_tenant, product

pytestmark = pytest.mark.django_db

OLD_MONTHS = [datetime(2014, 3, 5, tzinfo=UTC), datetime(2014, 4, 7, tzinfo=UTC)]


@pytest.fixture(autouse=True)
def archive_folder(settings: Any, tmp_path: Any) -> Any:
    settings.EVENT_ARCHIVE_URL = str(tmp_path / "archive")
    partitions.forget()
    yield tmp_path / "archive"
    partitions.forget()


@pytest.fixture
def shop(tenant: Any) -> Any:
    response = tenant.api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(6)])
    assert response.status_code == 200, response.content
    return tenant


def send(api: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.post("/api/v1/events", events)
    assert response.status_code in (200, 201), response.content
    return response.json()


def event(user: str, item: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "product_id": item, "type": "view", "timestamp": at.isoformat(), **extra}


def partition_names() -> list[str]:
    return [part.name for part in partitions.partitions()]


def rows_in(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 - a partition's name
        return int(cursor.fetchone()[0])


def test_a_historical_import_gets_a_partition_per_month_and_old_times_share_one(shop):
    sent = send(
        shop.api,
        [
            event("u1", "p1", OLD_MONTHS[0]),
            event("u1", "p2", OLD_MONTHS[1]),
            event("u2", "p3", datetime(1999, 12, 31, 23, 59, tzinfo=UTC)),
            event("u2", "p4", datetime(1970, 1, 2, tzinfo=UTC)),
        ],
    )
    assert sent["accepted"] == 4
    names = partition_names()
    assert {"events_event_p201403", "events_event_p201404", "events_event_before2000"} <= set(names)
    assert rows_in("events_event_p201403") == 1 and rows_in("events_event_before2000") == 2
    # the migration and the maintenance task made this month's and the next ones ahead of the events
    now = datetime.now(tz=UTC)
    events_maintain(now=now)
    ahead = partitions.partition_name(
        partitions.next_month(partitions.next_month(partitions.month_start(now)))
    )
    assert partitions.partition_name(now) in partition_names() and ahead in partition_names()


def test_a_partition_is_forced_to_row_level_security_like_the_table(shop):
    send(shop.api, [event("u1", "p1", OLD_MONTHS[0])])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'events_event_p201403'"
        )
        assert cursor.fetchone() == (True, True)


def test_a_resent_event_id_is_a_duplicate_whichever_month_it_names(shop):
    first = send(shop.api, [event("u1", "p1", OLD_MONTHS[0], event_id="e-1")])
    again = send(
        shop.api, [event("u1", "p1", OLD_MONTHS[1], event_id="e-1"), event("u1", "p2", OLD_MONTHS[1])]
    )
    assert (first["accepted"], again["accepted"], again["duplicate"]) == (1, 1, 1)
    # a large batch (COPY) resending it in a third month, with new ones around it
    batch = [event("u3", "p3", datetime(2015, 1, 1, tzinfo=UTC) + timedelta(minutes=i), event_id=f"n{i}")
             for i in range(150)]  # fmt: skip
    batch.append(event("u3", "p3", datetime(2015, 2, 1, tzinfo=UTC), event_id="e-1"))
    large = send(shop.api, batch)
    assert (large["accepted"], large["duplicate"]) == (150, 1)
    assert Event.objects.filter(store=shop.store, event_id="e-1").count() == 1
    assert Event.objects.filter(store=shop.store).count() == 152


def _plan(sql: str, params: Any, analyze: bool = False) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}COSTS OFF) {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_training_and_history_queries_touch_only_the_partitions_they_need(shop):
    months = [datetime(2020, m, 10, tzinfo=UTC) for m in range(1, 7)]
    send(shop.api, [event("u1", f"p{i % 6}", at + timedelta(hours=i)) for at in months for i in range(5)])
    # training with a window (StoreSettings.training_window_days) reads from the window's partitions only
    plan = _plan(
        "SELECT user_id FROM events_event WHERE store_id = %s AND timestamp >= %s",
        [shop.store.id, datetime(2020, 5, 1, tzinfo=UTC)],
    )
    touched = {name for name in partition_names() if name in plan}
    assert touched >= {"events_event_p202005", "events_event_p202006"}
    assert not touched & {f"events_event_p2020{m:02d}" for m in range(1, 5)}
    # a shopper's latest events (the statement that rebuilds a profile): partitions in time order, newest
    # first; the older ones are never read once the newest hold enough events
    plan = _plan(selectors.HISTORY, {"store": shop.store.id, "user": "u1", "limit": 3}, analyze=True)
    scans = [line for line in plan.splitlines() if "events_event_p2020" in line]
    assert scans and all("never executed" in line for line in scans if "p202006" not in line), plan
    # and the served history is the same events as before partitioning: the latest, oldest first
    history = user_history(store=shop.store, user_id="u1", limit=3)
    assert [row.timestamp for row in history] == [months[-1] + timedelta(hours=i) for i in (2, 3, 4)]


def test_an_ingest_after_another_process_dropped_a_partition_it_knew_makes_it_again(shop):
    send(shop.api, [event("u1", "p1", OLD_MONTHS[0])])
    partitions._known.add("events_event_p201403")  # as a process that saw it commit would
    Event.objects.filter(store=shop.store).delete()
    assert partitions.drop("events_event_p201403")
    partitions._known.add("events_event_p201403")  # ... and was not told
    assert send(shop.api, [event("u1", "p1", OLD_MONTHS[0] + timedelta(days=1))])["accepted"] == 1
    assert "events_event_p201403" in partition_names()


def test_a_partition_with_rows_is_not_dropped_unarchived(shop):
    send(shop.api, [event("u1", "p1", OLD_MONTHS[0]), event("u2", "p1", OLD_MONTHS[0])])
    assert partitions.drop("events_event_p201403") is False
    with pytest.raises(Exception, match="not dropped"):
        partitions.drop("events_event_p201403", expected_rows=1)
    assert "events_event_p201403" in partition_names() and rows_in("events_event_p201403") == 2


def _settings(api: Any, **values: Any) -> Any:
    return api.patch("/api/v1/store", {"settings": values})


def test_retention_and_the_training_window_are_store_settings(shop):
    assert _settings(shop.api, retention_days=400, training_window_days=90).status_code == 200
    body = shop.api.get("/api/v1/store").json()["settings"]
    assert (body["retention_days"], body["training_window_days"]) == (400, 90)
    for bad in (0, -1, "30", 1.5, True, 40000):
        response = _settings(shop.api, retention_days=bad)
        assert response.status_code == 400 and "retention_days" in response.json()["details"], bad
    assert _settings(shop.api, retention_days=None).status_code == 200
    assert shop.api.get("/api/v1/store").json()["settings"]["retention_days"] is None


@pytest.fixture
def two_stores(shop: Any) -> tuple[Any, Any]:
    other = make_tenant("keeps-everything")
    other.api.post("/api/v1/products/bulk", [product("q1"), product("q2")])
    march, april = OLD_MONTHS
    send(
        shop.api,
        [
            event("ann", "p1", march),
            event("ann", "p2", march + timedelta(hours=1)),
            event("bob", "p3", march),
            event("ann", "p4", april, event_id="x"),
        ],
    )
    send(other.api, [event("cy", "q1", OLD_MONTHS[0])])
    recent = datetime.now(tz=UTC) - timedelta(hours=1)
    send(shop.api, [event("ann", "p5", recent), event("dan", "p5", recent)])
    return shop, other


def test_events_past_retention_go_to_parquet_and_leave_postgresql(two_stores, archive_folder):
    shop, other = two_stores
    assert _settings(shop.api, retention_days=365).status_code == 200
    report = events_maintain()
    assert report["rows_archived"] == 4 and report["stores_archived"] == 2  # two months of one store
    # the other store keeps everything: its rows, and so the partition, stay
    assert "events_event_p201403" in partition_names() and rows_in("events_event_p201403") == 1
    assert Event.objects.filter(store=shop.store).count() == 2  # the recent ones
    files = EventArchive.objects.filter(store=shop.store).order_by("month")
    assert [(f.month.isoformat(), f.rows) for f in files] == [("2014-03-01", 3), ("2014-04-01", 1)]
    table = pq.read_table(files[0].path)
    assert sorted(table.column("user_id").to_pylist()) == ["ann", "ann", "bob"]
    assert f"store={shop.store.id}/month=2014-03" in files[0].path
    assert str(archive_folder) in files[0].path
    # a second run finds nothing more to do; once the other store has a retention too, the month's
    # partition is written and dropped whole
    assert events_maintain()["rows_archived"] == 0
    assert _settings(other.api, retention_days=30).status_code == 200
    report = events_maintain()
    assert report["rows_archived"] == 1 and report["partitions_dropped"] >= 1
    assert "events_event_p201403" not in partition_names()
    assert EventArchive.objects.filter(store=other.store).count() == 1


def test_training_reads_the_archive_within_its_window(two_stores):
    from recommendations.services import _load
    from tenants.models import StoreSettings

    shop, _ = two_stores
    _settings(shop.api, retention_days=365)
    events_maintain()
    settings = StoreSettings.objects.get(store_id=shop.store.id)
    assert _load(shop.store, settings).n_events == 6  # 2 in PostgreSQL, 4 archived
    assert _settings(shop.api, training_window_days=30).status_code == 200
    settings = StoreSettings.objects.get(store_id=shop.store.id)
    assert _load(shop.store, settings).n_events == 2


def test_erasure_and_export_reach_the_archive(two_stores):
    shop, _ = two_stores
    _settings(shop.api, retention_days=365)
    events_maintain()
    exported = shop.api.get("/api/v1/users/ann/data").json()
    assert [e["product_id"] for e in exported["events"]] == ["p1", "p2", "p4", "p5"]
    assert shop.api.delete("/api/v1/users/ann").status_code in (200, 202, 204)
    left = archive.read_archived(store_id=shop.store.id, columns=["user_id"])
    assert left.column("user_id").to_pylist() == ["bob"]
    assert EventArchive.objects.filter(store=shop.store).count() == 1  # April held only ann's: gone
    assert shop.api.get("/api/v1/users/ann/data").json()["events"] == []


def test_a_shopper_s_export_and_erasure_read_only_the_row_groups_that_may_hold_them(shop, monkeypatch):
    """Archived files are in shopper order, a row group per CHUNK_ROWS: a shopper's export reads the
    groups whose statistics may hold them, and erasure passes over a file none of whose groups can."""
    monkeypatch.setattr(archive, "CHUNK_ROWS", 4)
    march, april = OLD_MONTHS
    shoppers = [f"s{n:02d}" for n in range(12)]
    # sent in time order, every shopper in turn: in id order each group would hold four shoppers
    send(shop.api, [event(shoppers[n % 12], f"p{n // 12}", march + timedelta(minutes=n)) for n in range(48)])
    send(shop.api, [event("zz-april-only", "p1", april)])
    _settings(shop.api, retention_days=365)
    assert events_maintain()["rows_archived"] == 49
    entry = EventArchive.objects.get(store=shop.store, month=partitions.month_start(march).date())
    metadata = pq.read_metadata(entry.path)
    assert metadata.num_row_groups == 12
    table = pq.read_table(entry.path)
    assert table.column("user_id").to_pylist() == sorted(table.column("user_id").to_pylist())
    assert archive.shopper_groups(metadata, ["s05"]) == [5]
    assert archive.shopper_groups(metadata, ["s00", "s11", "nobody"]) == [0, 11]
    assert archive.shopper_groups(metadata, ["a", "s055", "zz"]) == []  # between and beyond every group

    read: list[list[int]] = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_groups",
        lambda self, groups, **options: read.append(groups) or real(self, groups, **options),
    )
    exported = shop.api.get("/api/v1/users/s05/data").json()["events"]
    assert [e["product_id"] for e in exported] == ["p0", "p1", "p2", "p3"]  # its four, in time order
    assert read == [[5]]  # one group of March's file; April's file (one other shopper) not opened for rows
    assert shop.api.get("/api/v1/users/zz-april-only/data").json()["events"][0]["product_id"] == "p1"

    april_file = EventArchive.objects.get(store=shop.store, month=partitions.month_start(april).date()).path
    opened: list[str] = []
    read_table = pq.read_table
    monkeypatch.setattr(
        pq, "read_table", lambda path, **options: opened.append(path) or read_table(path, **options)
    )
    assert shop.api.delete("/api/v1/users/s05").status_code in (200, 202, 204)
    assert april_file not in opened and entry.path in opened  # April's footer said it holds no s05
    left = archive.read_archived(store_id=shop.store.id, columns=["user_id"])
    assert "s05" not in left.column("user_id").to_pylist() and left.num_rows == 45


def test_a_store_erased_loses_its_archive(two_stores, archive_folder):
    from events.services import store_erase

    shop, other = two_stores
    _settings(shop.api, retention_days=365)
    _settings(other.api, retention_days=365)
    events_maintain()
    assert (archive_folder / "events" / f"store={shop.store.id}").exists()
    store_erase(shop.store.id)
    assert not (archive_folder / "events" / f"store={shop.store.id}").exists()
    assert not EventArchive.objects.filter(store=shop.store).exists()
    assert EventArchive.objects.filter(store=other.store).count() == 1


def test_a_file_no_manifest_names_is_removed_by_the_next_run(two_stores, archive_folder):
    shop, _ = two_stores
    orphan = archive_folder / "events" / f"store={shop.store.id}" / "month=2014-03" / "events-1-2.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"PAR1")
    assert events_maintain()["orphans_removed"] == 1 and not orphan.exists()


@pytest.mark.django_db(transaction=True)
def test_two_sessions_making_the_same_new_month_both_succeed():
    """The first holds the month's new partition uncommitted; the second waits, then finds it made."""
    import threading

    from django.db import connections, transaction

    at = datetime(2011, 5, 5, tzinfo=UTC)
    first_made, errors, answers = threading.Event(), [], []

    def second() -> None:
        try:
            first_made.wait(10)
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT recsys_event_partition(%s)", [at])
                answers.append(cursor.fetchone()[0])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=second)
    thread.start()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT recsys_event_partition(%s)", [at])
        first_made.set()
        thread.join(0.5)  # the second is waiting on the first's lock
        assert thread.is_alive()
    thread.join(10)
    assert errors == [] and answers == ["events_event_p201105"]
    assert partitions.drop("events_event_p201105")


def test_an_event_arriving_while_a_month_is_archived_keeps_the_month_for_the_next_run(
    two_stores, monkeypatch
):
    shop, other = two_stores
    _settings(shop.api, retention_days=365)
    _settings(other.api, retention_days=365)
    write = archive._write_store_month
    late = {"sent": False}

    def write_then_an_event_arrives(store_id, part, **kwargs):
        rows = write(store_id, part, **kwargs)
        if part.name == "events_event_p201403" and not late["sent"]:
            # on this connection, so counted by the drop as another session's committed event would be
            # (and rolled back with the refused month, which another session's would not be)
            late["sent"] = True
            send(shop.api, [event("eve", "p2", OLD_MONTHS[0] + timedelta(days=2))])
        return rows

    monkeypatch.setattr(archive, "_write_store_month", write_then_an_event_arrives)
    report = events_maintain()
    assert "events_event_p201403" in partition_names()  # kept, and nothing of it archived
    assert not EventArchive.objects.filter(month="2014-03-01").exists()
    assert report["rows_archived"] == 1  # April's one event only
    monkeypatch.setattr(archive, "_write_store_month", write)
    again = events_maintain()
    assert again["rows_archived"] == 4  # March: ann's two, bob's and cy's
    assert "events_event_p201403" not in partition_names()


@pytest.mark.django_db(transaction=True)
def test_a_shopper_s_erasure_waits_for_an_archiving_transaction_in_flight():
    """An archiving transaction may have read the shopper's rows before their deletion committed: the
    erasure rewrites the files only once that transaction has committed its file to the manifest."""
    import threading

    from django.db import connections, transaction

    holding, released = threading.Event(), threading.Event()

    def archiving() -> None:
        try:
            with transaction.atomic(), connections["default"].cursor() as cursor:
                cursor.execute(archive._WRITE_LOCK)
                holding.set()
                released.wait(10)
                time.sleep(0.6)
        finally:
            connections.close_all()

    thread = threading.Thread(target=archiving)
    thread.start()
    assert holding.wait(10)
    began = time.monotonic()
    released.set()
    archive.shopper_erase(1, ["nobody"])
    waited = time.monotonic() - began
    thread.join(10)
    assert waited >= 0.5


# the tables README "Scale-out" distributes by store (Citus): each unique key must lead with store_id
DISTRIBUTED = [
    "tenants_storesettings", "catalog_product", "events_event", "events_eventkey", "events_eventarchive",
    "events_shownitem", "events_useralias", "outcomes_impression", "outcomes_attribution",
    "outcomes_dailymetric", "outcomes_experiment", "recommendations_trainedmodel",
    "recommendations_trainingrun", "recommendations_networkslice",
]  # fmt: skip
# and the ones it makes reference tables (a copy on every node): the stores; the API keys, looked up by
# their prefix before the store is known; the audit, kept (store_id emptied) after a store is erased; the
# network's global models
REFERENCE = ["tenants_store", "tenants_apikey", "tenants_auditentry", "recommendations_globalmodel"]


def test_the_tables_distributed_by_store_have_keys_that_lead_with_it():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, i.indexrelid::regclass::text, a.attname
            FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
            JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
            WHERE c.relname = ANY(%s) AND i.indisunique
            """,
            [DISTRIBUTED],
        )
        keys = cursor.fetchall()
    assert {table for table, _, _ in keys} == set(DISTRIBUTED)  # every one has a primary key
    assert [(table, index) for table, index, first in keys if first != "store_id"] == []


def test_every_table_of_a_store_is_distributed_or_a_reference_table():
    """A new table with a store_id column is named in one of the lists (and in README's DDL) or fails."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE a.attname = 'store_id' AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
              AND n.nspname = current_schema() AND NOT c.relispartition
            """
        )
        tables = {table for (table,) in cursor.fetchall()}
    assert tables - {"tenants_store"} <= set(DISTRIBUTED) | set(REFERENCE)
    assert set(DISTRIBUTED) <= tables


def test_foreign_keys_are_ones_citus_keeps():
    """Between two distributed tables a foreign key names store_id on both sides (Citus refuses one that
    does not); a reference table refers to no distributed one."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT con.conname, src.relname, dst.relname,
                   ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = con.conrelid
                         AND attnum = ANY(con.conkey) ORDER BY array_position(con.conkey, attnum)),
                   ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = con.confrelid
                         AND attnum = ANY(con.confkey) ORDER BY array_position(con.confkey, attnum))
            FROM pg_constraint AS con JOIN pg_class AS src ON src.oid = con.conrelid
            JOIN pg_class AS dst ON dst.oid = con.confrelid
            WHERE con.contype = 'f' AND NOT src.relispartition
            """
        )
        keys = cursor.fetchall()
    distributed, reference = set(DISTRIBUTED), set(REFERENCE)
    between = [key for key in keys if key[1] in distributed and key[2] in distributed]
    assert [
        name
        for name, _, _, columns, referenced in between
        if "store_id" not in columns or columns.index("store_id") != referenced.index("store_id")
    ] == []
    assert ("training_run_model_fk", "recommendations_trainingrun", "recommendations_trainedmodel",
            ["store_id", "model_id"], ["store_id", "id"]) in keys  # fmt: skip
    assert [name for name, src, target, _, _ in keys if src in reference and target in distributed] == []


def test_a_training_run_names_a_model_of_its_own_store():
    from django.db import IntegrityError

    from recommendations.models import TrainedModel, TrainingRun

    ours, theirs = make_tenant("fk-ours").store, make_tenant("fk-theirs").store
    model = TrainedModel.objects.create(store=ours, version=1, artifact=b"")
    TrainingRun.objects.create(store=ours, model=model)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # (checked at the commit otherwise)
    with pytest.raises(IntegrityError, match="training_run_model_fk"):
        TrainingRun.objects.create(store=theirs, model=model)
