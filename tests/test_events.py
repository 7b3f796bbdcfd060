"""POST /api/v1/events: one or many, idempotent by event_id, per-row errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events.models import Channel, Event, EventType
from tests.conftest import product


@pytest.fixture
def catalog(api):
    api.post("/api/v1/products/bulk", [product("p1", price=10), product("p2")])


def event(**fields):
    return {"user_id": "u1", "product_id": "p1", "type": "view", **fields}


def test_one_event(api, store, catalog):
    response = api.post(
        "/api/v1/events",
        event(
            type="purchase",
            quantity=2,
            price=9.5,
            channel="app",
            session_id="s1",
            timestamp="2026-01-02T03:04:05Z",
        ),
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicate": 0, "rejected": 0, "errors": []}
    stored = Event.objects.get(store=store)
    assert stored.type == EventType.PURCHASE
    assert stored.quantity == 2
    assert float(stored.price) == 9.5
    assert stored.channel == Channel.APP
    assert stored.session_id == "s1"
    assert stored.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert stored.product.external_id == "p1"


def test_a_list_of_events_with_defaults(api, store, catalog):
    response = api.post("/api/v1/events", [event(), event(product_id="p2", type="add_to_cart")])
    assert response.json()["accepted"] == 2
    stored = Event.objects.filter(store=store).order_by("id")
    assert [e.type for e in stored] == [EventType.VIEW, EventType.ADD_TO_CART]
    assert all(e.channel == Channel.WEB and e.quantity == 1 for e in stored)
    assert all(abs((datetime.now(tz=UTC) - e.timestamp).total_seconds()) < 60 for e in stored)


def test_epoch_timestamps_are_accepted(api, store, catalog):
    api.post("/api/v1/events", event(timestamp=1_700_000_000))
    assert Event.objects.get(store=store).timestamp == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_resend_is_counted_as_duplicate_and_stored_once(api, store, catalog):
    batch = [event(event_id="e1"), event(event_id="e2"), event(event_id="e1")]
    first = api.post("/api/v1/events", batch)
    again = api.post("/api/v1/events", batch)
    assert first.json() == {"accepted": 2, "duplicate": 1, "rejected": 0, "errors": []}
    assert again.json() == {"accepted": 0, "duplicate": 3, "rejected": 0, "errors": []}
    assert Event.objects.filter(store=store).count() == 2


def test_same_event_id_in_two_stores_is_two_events(api, other_api, store, other_store, catalog):
    other_api.post("/api/v1/products/bulk", [product("p1")])
    api.post("/api/v1/events", event(event_id="e1"))
    response = other_api.post("/api/v1/events", event(event_id="e1"))
    assert response.json()["accepted"] == 1


def test_bad_rows_are_reported_and_good_rows_kept(api, store, catalog):
    future = (datetime.now(tz=UTC) + timedelta(days=2)).isoformat()
    rows = [
        event(),
        event(product_id="missing"),
        event(type="teleport"),
        event(timestamp="not a time"),
        event(timestamp=future),
        event(user_id=""),
        event(user_id="u" * 300),
        event(quantity=0),
        event(price=-3),
        event(channel="fax"),
        event(user_id="nul\x00"),
        event(extra=1),
        [1, 2],
        event(product_id="p2"),
    ]
    response = api.post("/api/v1/events", rows)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert body["rejected"] == 12
    assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
        (1, "product_id", "unknown_product"),
        (2, "type", "unknown_type"),
        (3, "timestamp", "invalid_timestamp"),
        (4, "timestamp", "timestamp_in_future"),
        (5, "user_id", "blank"),
        (6, "user_id", "too_long"),
        (7, "quantity", "invalid_quantity"),
        (8, "price", "negative"),
        (9, "channel", "unknown_channel"),
        (10, "user_id", "invalid_character"),
        (11, "extra", "unknown_field"),
        (12, "", "invalid_type"),
    ]
    assert Event.objects.filter(store=store).count() == 2


def test_one_bad_event_is_a_400_with_its_code(api, store, catalog):
    response = api.post("/api/v1/events", event(type="teleport"))
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_type"
    assert "type must be one of" in response.json()["message"]
    assert not Event.objects.filter(store=store).exists()


@pytest.mark.parametrize(
    ("raw", "code"), [(b"[{", "malformed_json"), (b"[]", "empty_batch"), (b'{"events": 3}', "invalid")]
)
def test_malformed_bodies(api, store, raw, code):
    response = api.post("/api/v1/events", raw=raw)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not Event.objects.filter(store=store).exists()


def test_oversize_batch_is_rejected_whole(api, store, catalog, settings):
    settings.MAX_BATCH_ROWS = 5
    response = api.post("/api/v1/events", [event() for _ in range(6)])
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"
    assert not Event.objects.filter(store=store).exists()


def test_ingest_is_set_based(api, catalog):
    # small batches are one INSERT ... RETURNING, larger ones COPY; neither makes more queries with size
    api.get("/api/v1/store")
    # (the product's id and the events' id sequence are looked up once, then remembered)
    api.post("/api/v1/events", [event()] * 101)
    counts = []
    for size in (1, 100, 101, 3000):
        with CaptureQueriesContext(connection) as queries:
            response = api.post("/api/v1/events", [event(event_id=f"{size}-{i}") for i in range(size)])
        assert response.json()["accepted"] == size
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1] and counts[2] == counts[3]


def test_events_of_a_deactivated_product_are_still_recorded(api, store, catalog):
    api.delete("/api/v1/products/p1")
    assert api.post("/api/v1/events", event()).json()["accepted"] == 1


def test_a_batch_mixing_new_and_resent_events_keeps_the_new_ones(api, store, catalog):
    api.post("/api/v1/events", [event(event_id="e1"), event(event_id="e2")])
    response = api.post("/api/v1/events", [event(event_id="e2"), event(event_id="e3"), event()])
    assert response.json() == {"accepted": 2, "duplicate": 1, "rejected": 0, "errors": []}
    assert sorted(
        Event.objects.filter(store=store).values_list("event_id", flat=True), key=lambda v: v or "~"
    ) == [
        "e1",
        "e2",
        "e3",
        None,
    ]


def test_large_batches_store_new_events_once_and_count_resends(api, store, catalog):
    from events.services import SMALL_BATCH

    size = SMALL_BATCH + 50  # the staged path: COPY into a temporary table, then INSERT
    first = [event(event_id=f"big-{n}") for n in range(size)]
    assert api.post("/api/v1/events", first).json()["accepted"] == size
    # half resent, half new, and one new id twice in the batch
    again = [event(event_id=f"big-{n}") for n in range(size // 2, size + size // 2)] + [
        event(event_id="twice")
    ] * 2
    answer = api.post("/api/v1/events", again).json()
    assert (answer["accepted"], answer["duplicate"]) == (size // 2 + 1, size - size // 2 + 1)
    assert Event.objects.filter(store=store, event_id__startswith="big-").count() == size + size // 2
    assert Event.objects.filter(store=store, event_id="twice").count() == 1
    without_ids = [event() for _ in range(size)]
    assert api.post("/api/v1/events", without_ids).json()["accepted"] == size


@pytest.mark.parametrize("prepared", [True, False])
def test_the_hot_statements_work_prepared_or_not(api, store, catalog, settings, prepared):
    """DATABASE_PREPARED_STATEMENTS=0 (behind a pooler that keeps no prepared statements) runs the same
    statements unprepared: the same events stored, the same history read back."""
    from events.selectors import user_history

    settings.DATABASE_PREPARED_STATEMENTS = prepared
    sent = [event(user_id="u1", event_id=f"k{i}") for i in range(3)] + [event(user_id="u1")]
    assert api.post("/api/v1/events", sent).json()["accepted"] == 4
    assert api.post("/api/v1/events", sent[0]).json()["duplicate"] == 1
    history = user_history(store=store, user_id="u1", limit=10)
    stored = Event.objects.filter(store=store, user_id="u1").order_by("timestamp", "id")
    assert [row.id for row in history] == [e.id for e in stored]
    assert [row.timestamp for row in history] == [e.timestamp for e in stored]


def test_timestamps_are_read_as_utc_in_every_iso_form():
    from core.validation import RowError, clean_timestamp

    utc = datetime(2026, 11, 13, 21, 58, 24, 717944, tzinfo=UTC)
    for sent in ("2026-11-13T21:58:24.717944+00:00", "2026-11-13T21:58:24.717944Z",
                 "2026-11-13T22:58:24.717944+01:00", "2026-11-13T21:58:24.717944"):  # fmt: skip
        cleaned = clean_timestamp(sent, "timestamp")
        assert cleaned == utc and cleaned.utcoffset() == timedelta(0), sent
    for refused in ("2026-11-13T21:58:24" + " " * 60, "2026-11-13T21:58:24\x00+00:00", "soon", True):
        with pytest.raises(RowError):
            clean_timestamp(refused, "timestamp")
