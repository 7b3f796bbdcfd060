"""Impressions: drained from the Redis stream the serving path appends to, into PostgreSQL.

Every answer served appends its impression to `rc:impressions` in the same write as the answer's cache
entry (core/answer_cache.py), without waiting for a reply. A worker drains it in batches: the entries it
reads stay pending until they are stored (COPY into a temporary table, then one INSERT that skips a
recommendation id already stored), then are acknowledged and deleted. A drainer that dies leaves its
entries pending; the next one claims them after `STALE_MS`. So each impression is written at least once
and stored once. With Redis down an answer's impression is lost (the answer is still served)."""

from __future__ import annotations

import logging
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core import answer_cache, erasure
from events.models import EventType
from events.selectors import AttributableEvent, attributable_events, shown_answers
from tenants.models import Store

logger = logging.getLogger(__name__)
BATCH = 5000
STALE_MS = 60_000


def _copy_text(value: str) -> str:
    """A value as COPY's text format writes it (backslash, tab and line breaks escaped; NUL, which no text
    value may hold and the API refuses, dropped rather than failing the batch)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\x00" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        value = value.replace("\r", "\\r").replace("\x00", "")
    return value


def _array_element(value: str) -> str:
    """One element of a PostgreSQL array literal, quoted."""
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def _answer_columns(body: bytes) -> bytes:
    """The columns an impression takes from its answer, in COPY's text format: variant, source, items and
    the experiment, tab-separated."""
    answer = orjson.loads(body)
    items = "{" + ",".join(_array_element(str(item["id"])) for item in answer.get("items", [])) + "}"
    experiment = answer.get("experiment")
    return "\t".join(
        (
            _copy_text(str(answer.get("variant") or "")[:64]),
            _copy_text(str(answer.get("source") or "")[:200]),
            _copy_text(items),
            str(int(experiment)) if experiment is not None else "\\N",
        )
    ).encode()


_ESCAPED = re.compile(rb"[\\\t\n\r\x00]")


def _copy_field(value: bytes, limit: int) -> bytes:
    """A stream field (UTF-8) as COPY's text format writes it, at most `limit` characters: as it came,
    nearly always (at most `limit` bytes, nothing to escape)."""
    if len(value) <= limit and _ESCAPED.search(value) is None:
        return value
    return _copy_text(value.decode()[:limit]).encode()


def _line(fields: dict[bytes, bytes], answers: dict[bytes, bytes] | None = None) -> bytes | None:
    """One impression as a line of COPY's text format (IMPRESSION_ROW's columns; written whole: psycopg's
    per-value adaptation of the items array cost more than the rest of the drain), built from the stream's
    bytes. `answers`: the answer columns of bodies seen in this batch, by body (a cached answer is served,
    and drained, many times over)."""
    answers = {} if answers is None else answers
    try:
        body = fields[b"b"]
        columns = answers.get(body)
        if columns is None:
            columns = answers[body] = _answer_columns(body)
        return b"\t".join(
            (
                _copy_field(fields[b"r"], 64),
                b"%d" % int(fields[b"s"]),
                _copy_field(fields[b"f"], 32),
                _copy_field(fields.get(b"u", b""), 256),
                b"%d" % int(fields[b"t"]),  # served, in ms since the epoch (the database makes it a time)
                columns,
            )
        )
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        return None  # not an impression this code wrote: dropped (and logged)


_FIGURES = (
    "impressions, shown, clicks, add_to_carts, purchases, revenue, view_through_purchases, "
    "view_through_revenue"
)
# Adds a query's figures (columns: store_id, date, surface, variant, then _FIGURES) to the daily rows, in
# key order (two writers lock rows in the same order: no deadlock).
_ADD_TO_DAILY = (
    f"INSERT INTO outcomes_dailymetric (store_id, date, surface, variant, {_FIGURES}) "
    f"SELECT store_id, date, surface, variant, {_FIGURES} FROM {{source}} ORDER BY 1, 2, 3, 4 "
    "ON CONFLICT (store_id, date, surface, variant) DO UPDATE SET "
    + ", ".join(f"{name} = outcomes_dailymetric.{name} + EXCLUDED.{name}" for name in _FIGURES.split(", "))
    + " RETURNING 1"
)

_ADD_IMPRESSIONS = _ADD_TO_DAILY.format(source="counted")
_ADD_ATTRIBUTED = _ADD_TO_DAILY.format(source="summed")
_ADD_SHOWN = _ADD_TO_DAILY.format(source="counted")


# A line of the drain's COPY (_line), in the staging table's columns
IMPRESSION_ROW = (
    "recommendation_id, store_id, surface, user_id, served_ms, variant, source, items, experiment_id"
)


def _store(lines: list[bytes]) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS impression_rows (recommendation_id text, store_id bigint, "
            "surface text, user_id text, served_ms bigint, variant text, source text, items text[], "
            "experiment_id bigint) ON COMMIT DELETE ROWS"
        )
        with cursor.cursor.copy(f"COPY impression_rows ({IMPRESSION_ROW}) FROM STDIN") as copy:
            copy.write(b"\n".join(lines) + b"\n")
        # the impressions new here (not stored before) count in the day's figures, in the same transaction
        cursor.execute(
            f"""
            WITH stored AS (
                INSERT INTO outcomes_impression (recommendation_id, store_id, surface, user_id, variant,
                                                 source, items, served_at, experiment_id)
                SELECT recommendation_id, store_id, surface, user_id, variant, source, items,
                       timestamptz 'epoch' + served_ms * interval '1 millisecond', experiment_id
                FROM impression_rows
                ON CONFLICT (store_id, recommendation_id) DO NOTHING  -- (twice in a batch: one skipped)
                RETURNING store_id, served_at, surface, variant
            ), counted AS (
                SELECT store_id, (served_at AT TIME ZONE 'UTC')::date AS date, surface, variant,
                       count(*) AS impressions, 0 AS shown, 0 AS clicks, 0 AS add_to_carts,
                       0 AS purchases, 0 AS revenue,
                       0 AS view_through_purchases, 0 AS view_through_revenue
                FROM stored GROUP BY 1, 2, 3, 4
            ), added AS ({_ADD_IMPRESSIONS})
            SELECT coalesce(sum(impressions), 0) FROM counted
            """
        )
        return int(cursor.fetchone()[0])


def impressions_drain(*, max_seconds: float = 20.0, stale_ms: int = STALE_MS) -> int:
    """Store what the stream holds, in batches, for at most `max_seconds`. Answers how many were new."""
    consumer = f"{socket.gethostname()}-{id(connection)}"
    stored = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        entries = answer_cache.impressions_claim(consumer, count=BATCH, stale_ms=stale_ms)
        if not entries:
            break
        answers: dict[bytes, bytes] = {}
        lines = [line for _, fields in entries if (line := _line(fields, answers)) is not None]
        if len(lines) < len(entries):
            logger.warning("dropped %d stream entries that are not impressions", len(entries) - len(lines))
        if lines:
            stored += _store(lines)
        answer_cache.impressions_ack([entry_id for entry_id, _ in entries])
        if len(entries) < BATCH:
            break
    return stored


# An impression served up to this long after a purchase's own timestamp still counts for it (clocks differ).
CLOCK_SKEW = timedelta(minutes=5)
CURSOR = "events"


def outcomes_rollup(*, now: datetime | None = None, lag_seconds: float | None = None) -> int:
    """Credit the clicks, add-to-carts and purchases received since the last run to the answers shown, and
    add them to the daily figures: one transaction, so a run counts each event once (a second run at the
    same time waits, then finds nothing new). Answers how many events were credited.

    - direct: the event cites a recommendation id whose answer showed the event's product; it is credited
      to that answer's surface, variant, model version and the product's position;
    - view-through: a purchase without an id, of a product shown to the shopper (any of their ids) within
      the store's attribution window (default 24 h) before it; credited to the latest such answer.

    Events are read up to `lag_seconds` (OUTCOMES_ROLLUP_LAG_SECONDS) ago, so that a request still
    storing its events commits first, and never past the oldest impression still waiting in Redis (an
    event cannot be matched with an answer not stored yet)."""
    now = now or timezone.now()
    lag = settings.OUTCOMES_ROLLUP_LAG_SECONDS if lag_seconds is None else lag_seconds
    until = now - timedelta(seconds=lag)
    waiting = answer_cache.impressions_oldest_ms()
    if waiting is not None:
        until = min(until, datetime.fromtimestamp(waiting / 1000, tz=UTC) - timedelta(milliseconds=1))
    with transaction.atomic(), connection.cursor() as cursor:
        # nothing received before the first answer was shown can be credited: the cursor starts there
        cursor.execute(
            "INSERT INTO outcomes_rollupcursor (name, received_until) "
            "SELECT %s, min(served_at) - interval '1 millisecond' FROM outcomes_impression "
            "HAVING min(served_at) IS NOT NULL ON CONFLICT (name) DO NOTHING",
            [CURSOR],
        )
        cursor.execute(
            "SELECT received_until FROM outcomes_rollupcursor WHERE name = %s FOR UPDATE", [CURSOR]
        )
        row = cursor.fetchone()
        if row is None or until <= row[0]:
            return 0
        events = attributable_events(received_after=row[0], received_until=until)
        credited = _credit(cursor, events) if events else 0
        shown = shown_answers(received_after=row[0], received_until=until)
        if shown:
            _mark_shown(cursor, shown)
        cursor.execute(
            "UPDATE outcomes_rollupcursor SET received_until = %s WHERE name = %s", [until, CURSOR]
        )
    return credited


def _credit(cursor: Any, events: list[AttributableEvent]) -> int:
    cursor.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS attributable_staging (id bigint, store_id bigint, "
        "user_id text, type smallint, quantity int, price numeric, timestamp timestamptz, "
        "recommendation_id text, product_id text, identities text[]) ON COMMIT DELETE ROWS"
    )
    cursor.execute("TRUNCATE attributable_staging")
    with cursor.cursor.copy("COPY attributable_staging FROM STDIN") as copy:
        for event in events:
            copy.write_row(event)
    cursor.execute(
        f"""
        WITH direct AS (
            SELECT ev.*, 'direct' AS kind, i.recommendation_id AS shown, i.surface, i.variant, i.source,
                   array_position(i.items, ev.product_id) - 1 AS position
            FROM attributable_staging AS ev
            JOIN outcomes_impression AS i
              ON i.recommendation_id = ev.recommendation_id AND i.store_id = ev.store_id
            WHERE ev.recommendation_id <> '' AND ev.product_id = ANY (i.items)
        ), view_through AS (
            SELECT ev.*, 'view_through' AS kind, i.recommendation_id AS shown, i.surface, i.variant, i.source,
                   array_position(i.items, ev.product_id) - 1 AS position
            FROM attributable_staging AS ev
            JOIN tenants_storesettings AS ss ON ss.store_id = ev.store_id
            CROSS JOIN LATERAL (
                SELECT i.* FROM outcomes_impression AS i
                WHERE i.store_id = ev.store_id AND i.user_id = ANY (ev.identities)
                  AND i.served_at > ev.timestamp - make_interval(hours => ss.attribution_window_hours)
                  AND i.served_at <= ev.timestamp + %(skew)s AND ev.product_id = ANY (i.items)
                ORDER BY i.served_at DESC LIMIT 1
            ) AS i
            WHERE ev.recommendation_id = '' AND ev.type = %(purchase)s
        ), credited AS (
            INSERT INTO outcomes_attribution (event_id, store_id, kind, type, recommendation_id, surface,
                variant, source, position, user_id, product_id, revenue, date)
            SELECT id, store_id, kind, type, shown, surface, variant, source, position, user_id, product_id,
                   CASE WHEN type = %(purchase)s THEN coalesce(price, 0) * quantity ELSE 0 END,
                   (timestamp AT TIME ZONE 'UTC')::date
            FROM (SELECT * FROM direct UNION ALL SELECT * FROM view_through) AS found
            ON CONFLICT (store_id, event_id) DO NOTHING
            RETURNING store_id, date, surface, variant, kind, type, revenue
        ), summed AS (
            SELECT store_id, date, surface, variant, 0 AS impressions, 0 AS shown,
                   count(*) FILTER (WHERE kind = 'direct' AND type = %(click)s) AS clicks,
                   count(*) FILTER (WHERE kind = 'direct' AND type = %(add_to_cart)s) AS add_to_carts,
                   count(*) FILTER (WHERE kind = 'direct' AND type = %(purchase)s) AS purchases,
                   coalesce(sum(revenue) FILTER (WHERE kind = 'direct'), 0) AS revenue,
                   count(*) FILTER (WHERE kind = 'view_through') AS view_through_purchases,
                   coalesce(sum(revenue) FILTER (WHERE kind = 'view_through'), 0) AS view_through_revenue
            FROM credited GROUP BY 1, 2, 3, 4
        ), added AS ({_ADD_ATTRIBUTED})
        SELECT (SELECT count(*) FROM credited), (SELECT count(*) FROM added)
        """,
        {
            "skew": CLOCK_SKEW,
            "click": int(EventType.CLICK),
            "add_to_cart": int(EventType.ADD_TO_CART),
            "purchase": int(EventType.PURCHASE),
        },
    )
    return int(cursor.fetchone()[0])


def _mark_shown(cursor: Any, shown: list[tuple[int, str, datetime]]) -> int:
    """Mark the answers reported shown (their first report only) and count them on their day's figures."""
    cursor.execute(
        f"""
        WITH marked AS (
            UPDATE outcomes_impression AS i SET shown_at = s.shown_at
            FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[])
                 AS s(store_id, recommendation_id, shown_at)
            WHERE i.recommendation_id = s.recommendation_id AND i.store_id = s.store_id AND i.shown_at IS NULL
            RETURNING i.store_id, i.served_at, i.surface, i.variant
        ), counted AS (
            SELECT store_id, (served_at AT TIME ZONE 'UTC')::date AS date, surface, variant,
                   0 AS impressions, count(*) AS shown, 0 AS clicks, 0 AS add_to_carts, 0 AS purchases,
                   0 AS revenue, 0 AS view_through_purchases, 0 AS view_through_revenue
            FROM marked GROUP BY 1, 2, 3, 4
        ), added AS ({_ADD_SHOWN})
        SELECT coalesce(sum(shown), 0) FROM counted
        """,
        [[row[0] for row in shown], [row[1] for row in shown], [row[2] for row in shown]],
    )
    return int(cursor.fetchone()[0])


def shopper_erase(store: Store, identities: list[str]) -> dict[str, int]:
    """The shopper's impressions and the credit of their events; the daily figures (aggregates) stay."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM outcomes_impression WHERE store_id = %s AND user_id = ANY(%s)",
            [store.id, identities],
        )
        impressions = cursor.rowcount
        cursor.execute(
            "DELETE FROM outcomes_attribution WHERE store_id = %s AND user_id = ANY(%s)",
            [store.id, identities],
        )
        return {"impressions": impressions, "attributions": cursor.rowcount}


def store_erase(store_id: int) -> dict[str, int]:
    return erasure.store_rows_delete(
        store_id,
        {
            "impressions": "outcomes_impression",
            "attributions": "outcomes_attribution",
            "daily_metrics": "outcomes_dailymetric",
        },
    )
