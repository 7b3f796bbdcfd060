"""Impressions: drained from the Redis stream the serving path appends to, into PostgreSQL.

Every answer served appends its impression to `rc:impressions` in the same write as the answer's cache
entry (core/answer_cache.py), without waiting for a reply. A worker drains it in batches: the entries it
reads stay pending until they are stored (COPY into a temporary table, then one INSERT that skips a
recommendation id already stored), then are acknowledged and deleted. A drainer that dies leaves its
entries pending; the next one claims them after `STALE_MS`. So each impression is written at least once
and stored once. With Redis down an answer's impression is lost (the answer is still served)."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection, transaction

from core import answer_cache
from tenants.models import Store

logger = logging.getLogger(__name__)
BATCH = 5000
STALE_MS = 60_000


def _row(fields: dict[bytes, bytes]) -> tuple[Any, ...] | None:
    try:
        body = orjson.loads(fields[b"b"])
        items = [str(item["id"]) for item in body.get("items", [])]
        return (
            fields[b"r"].decode(),
            int(fields[b"s"]),
            fields[b"f"].decode()[:32],
            fields.get(b"u", b"").decode()[:256],
            str(body.get("variant") or "")[:64],
            str(body.get("source") or "")[:200],
            items,
            datetime.fromtimestamp(int(fields[b"t"]) / 1000, tz=UTC),
        )
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        return None  # not an impression this code wrote: dropped (and logged)


def _store(rows: list[tuple[Any, ...]]) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS impression_staging "
            "(LIKE outcomes_impression INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cursor.cursor.copy(
            "COPY impression_staging (recommendation_id, store_id, surface, user_id, variant, source, items, "
            "served_at) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            "INSERT INTO outcomes_impression "
            "SELECT DISTINCT ON (recommendation_id) * FROM impression_staging "
            "ON CONFLICT (recommendation_id) DO NOTHING"
        )
        return cursor.rowcount


def impressions_drain(*, max_seconds: float = 20.0, stale_ms: int = STALE_MS) -> int:
    """Store what the stream holds, in batches, for at most `max_seconds`. Answers how many were new."""
    consumer = f"{socket.gethostname()}-{id(connection)}"
    stored = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        entries = answer_cache.impressions_claim(consumer, count=BATCH, stale_ms=stale_ms)
        if not entries:
            break
        rows = [row for _, fields in entries if (row := _row(fields)) is not None]
        if len(rows) < len(entries):
            logger.warning("dropped %d stream entries that are not impressions", len(entries) - len(rows))
        if rows:
            stored += _store(rows)
        answer_cache.impressions_ack([entry_id for entry_id, _ in entries])
        if len(entries) < BATCH:
            break
    return stored


def shopper_erase(store: Store, identities: list[str]) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM outcomes_impression WHERE store_id = %s AND user_id = ANY(%s)",
            [store.id, identities],
        )
        return {"impressions": cursor.rowcount}


def store_erase(store_id: int) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM outcomes_impression WHERE store_id = %s", [store_id])
        return {"impressions": cursor.rowcount}
