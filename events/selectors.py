"""Reads of shopper histories, across the user's aliases."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import connection
from pyarrow import csv as pa_csv

from core.db import TEXT_IDS, prepared_cursor, text_ids
from events import archive
from events.models import Channel, EventType
from events.profiles import session_key
from tenants.models import Store


def user_identities(*, store: Store, user_id: str) -> list[str]:
    """The user's own id first (an alias resolves to its user), then every alias."""
    canonical, aliases = _identities(store=store, user_ids={user_id})[user_id]
    return [canonical, *sorted(aliases - {canonical})]


class HistoryRow(NamedTuple):
    id: int
    product_id: int
    type: int
    session_id: str
    timestamp: datetime


# A shopper's ids in SQL, for the statement that rebuilds a profile: the user an alias belongs to (else the
# id itself) and that user's aliases. The same ids as user_identities (aliases are one level deep: an
# alias of an alias points at the user), resolved inside the history's own statement, so that a profile
# rebuilt on the serving path is one round trip; tests/test_realtime.py checks both against each other.
_IDS_OF_SHOPPER = (
    "WITH canonical AS (SELECT coalesce((SELECT user_id FROM events_useralias "
    "WHERE store_id = %(store)s AND alias_id = %(user)s), %(user)s) AS id), "
    "ids AS (SELECT id FROM canonical UNION SELECT alias_id FROM events_useralias "
    "WHERE store_id = %(store)s AND user_id = (SELECT id FROM canonical)) "
)


# The latest events of the shopper's ids: each id's own latest (an equality on the index's second column,
# so each reads the month partitions newest first and stops once it has enough, whatever plan is cached:
# `user_id = ANY(...)` would read and sort every partition), then the latest of those.
HISTORY = (
    f"{_IDS_OF_SHOPPER}SELECT e.id, e.product_id, e.type, e.session_id, e.timestamp FROM ids, LATERAL ("
    "SELECT id, product_id, type, session_id, timestamp FROM events_event "
    "WHERE store_id = %(store)s AND user_id = ids.id ORDER BY timestamp DESC, id DESC LIMIT %(limit)s"
    ") AS e ORDER BY e.timestamp DESC, e.id DESC LIMIT %(limit)s"
)


def user_history(*, store: Store, user_id: str, limit: int) -> list[HistoryRow]:
    """The user's latest events across their aliases, oldest first, as stored now. Ordered by time, then
    row id, as the real-time profile orders them. One prepared statement (the ids resolved in it)."""
    with prepared_cursor() as cursor:  # (a profile rebuilt on the serving path)
        cursor.execute(HISTORY, {"store": store.id, "user": user_id, "limit": limit})
        rows = cursor.fetchall()
    return [HistoryRow(*row) for row in reversed(rows)]


def user_identities_in_sql(*, store: Store, user_id: str) -> list[str]:
    """The ids `user_history` resolves in its statement (for the test that holds them to
    user_identities)."""
    with prepared_cursor() as cursor:
        cursor.execute(f"{_IDS_OF_SHOPPER}SELECT id FROM ids", {"store": store.id, "user": user_id})
        return sorted(row[0] for row in cursor.fetchall())


def identity_groups(
    *, store: Store, user_ids: set[str], alias_rows: list[tuple[str, str]] | None = None
) -> dict[str, set[str]]:
    """For each of these shoppers, every id of their profile: the id, the user an alias belongs to, and
    that user's aliases. An answer asked about any of them reads all of their events. `alias_rows`: what
    ALIAS_ROWS gave for these ids (or more), read by the caller's own statement."""
    return {
        user_id: {user_id, canonical, *aliases}
        for user_id, (canonical, aliases) in _identities(
            store=store, user_ids=user_ids, alias_rows=alias_rows
        ).items()
    }


# The alias links that name any of the given ids (parameters: the store, then the ids twice, each as one
# text: core.db.text_ids): the first step of resolving them (_identities), which ingestion's statement
# appends to its insert (one round trip fewer an event). Columns (alias_id, user_id).
ALIAS_ROWS = (
    "SELECT alias_id, user_id FROM events_useralias "
    f"WHERE store_id = %s AND (alias_id = ANY({TEXT_IDS}) OR user_id = ANY({TEXT_IDS}))"
)


def _identities(
    *, store: Store, user_ids: set[str], alias_rows: list[tuple[str, str]] | None = None
) -> dict[str, tuple[str, set[str]]]:
    """Each shopper's user (itself, or the user its alias belongs to) and that user's aliases: the one
    place aliases are resolved. Aliases are one level deep (an alias of an alias points at the user), so
    one plain query (ALIAS_ROWS, or rows the caller read with it) answers for shoppers that are users or
    have no alias at all (nearly always), and a second one fetches the aliases of users named only
    through an alias."""
    if not user_ids:
        return {}
    if alias_rows is None:
        given = text_ids(user_ids)
        with prepared_cursor() as cursor:  # (an experiment's assignment, a history surface, a large batch)
            cursor.execute(ALIAS_ROWS, [store.id, given, given])
            alias_rows = cursor.fetchall()
    rows = list(alias_rows)
    canonical_of = {alias: user for alias, user in rows if alias in user_ids}
    unseen = set(canonical_of.values()) - user_ids
    if unseen:
        with prepared_cursor() as cursor:
            cursor.execute(
                "SELECT alias_id, user_id FROM events_useralias "
                f"WHERE store_id = %s AND user_id = ANY({TEXT_IDS})",
                [store.id, text_ids(unseen)],
            )
            rows += cursor.fetchall()
    aliases_of: dict[str, set[str]] = {}
    for alias, user in rows:
        aliases_of.setdefault(user, set()).add(alias)
    out = {}
    for user_id in user_ids:
        canonical = canonical_of.get(user_id, user_id)
        out[user_id] = (canonical, aliases_of.get(canonical, set()))
    return out


def recently_viewed(*, store: Store, identities: list[str], limit: int) -> list[dict[str, Any]]:
    """Distinct active products the user viewed or clicked, latest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.external_id, v.last_seen FROM (
                SELECT product_id, max(timestamp) AS last_seen FROM (
                    SELECT product_id, timestamp FROM events_event
                    WHERE store_id = %s AND user_id = ANY(%s) AND type = ANY(%s)
                    ORDER BY timestamp DESC LIMIT 500
                ) AS latest GROUP BY product_id
            ) AS v JOIN catalog_product AS p ON p.store_id = %s AND p.id = v.product_id AND p.is_active
            ORDER BY v.last_seen DESC LIMIT %s
            """,
            [store.id, identities, [EventType.VIEW, EventType.CLICK], store.id, limit],
        )
        return [{"id": external_id, "last_seen": seen} for external_id, seen in cursor.fetchall()]


def buy_again(*, store: Store, identities: list[str], limit: int, now: datetime) -> list[dict[str, Any]]:
    """Products the user buys on a cycle (two purchases or more), due now: the time since the last
    purchase is at least 80% of the user's mean interval for that product; most overdue first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH purchases AS (
                SELECT product_id, count(DISTINCT date_trunc('day', timestamp)) AS days,
                       min(timestamp) AS first_at, max(timestamp) AS last_at
                FROM events_event
                WHERE store_id = %s AND user_id = ANY(%s) AND type = %s
                GROUP BY product_id
            )
            SELECT p.external_id, c.last_at,
                   extract(epoch FROM (c.last_at - c.first_at)) / (c.days - 1) AS cycle_seconds
            FROM purchases AS c
            JOIN catalog_product AS p ON p.store_id = %s AND p.id = c.product_id AND p.is_active
            WHERE c.days >= 2
            """,
            [store.id, identities, EventType.PURCHASE, store.id],
        )
        rows = cursor.fetchall()
    due = []
    for external_id, last_at, cycle_seconds in rows:
        cycle = float(cycle_seconds or 0)
        if cycle <= 0:
            continue
        overdue = (now - last_at).total_seconds() / cycle
        if overdue >= 0.8:
            due.append({"id": external_id, "score": round(overdue, 4), "cycle_days": round(cycle / 86400, 2),
                        "last_purchase": last_at})  # fmt: skip
    due.sort(key=lambda item: -item["score"])
    return due[:limit]


def events_per_day(*, store: Store, days: int = 60) -> list[tuple[str, int]]:
    """(day, events) for the store's last `days` days, for the operator's chart."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_char(date_trunc('day', timestamp), 'YYYY-MM-DD'), count(*) FROM events_event "
            "WHERE store_id = %s AND timestamp > now() - make_interval(days => %s) GROUP BY 1 ORDER BY 1",
            [store.id, days],
        )
        return [(day, int(count)) for day, count in cursor.fetchall()]


def popular_products(*, store: Store, days: int = 30, limit: int = 5000) -> list[tuple[int, int]]:
    """(internal product id, events) of the store's most taken products over the last `days` days."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT product_id, count(*) FROM events_event WHERE store_id = %s "
            "AND timestamp > now() - make_interval(days => %s) "
            "GROUP BY product_id ORDER BY count(*) DESC LIMIT %s",
            [store.id, days, limit],
        )
        return [(int(pid), int(count)) for pid, count in cursor.fetchall()]


def shopper_export(store: Store, identities: list[str]) -> dict[str, Any]:
    """What is stored about a shopper (every id of their profile): their aliases and every event, oldest
    first, as the merchant sent them (the product's id, the event type and channel by name)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT alias_id, user_id, created_at FROM events_useralias "
            "WHERE store_id = %s AND (user_id = ANY(%s) OR alias_id = ANY(%s)) ORDER BY created_at, alias_id",
            [store.id, identities, identities],
        )
        aliases = [
            {"alias_id": alias_id, "user_id": user_id, "created_at": created}
            for alias_id, user_id, created in cursor.fetchall()
        ]
        cursor.execute(
            """
            SELECT e.event_id, e.user_id, e.session_id, p.external_id, e.type, e.quantity, e.price, e.rating,
                   e.channel, e.timestamp, e.recommendation_id, e.received_at
            FROM (
                SELECT id, event_id, store_id, user_id, session_id, product_id, type, quantity, price, rating,
                       channel, timestamp, recommendation_id, received_at
                FROM events_event WHERE store_id = %(store)s AND user_id = ANY(%(ids)s)
                UNION ALL  -- `impression` events, kept apart
                SELECT id, event_id, store_id, user_id, session_id, product_id, 0, 1, NULL, NULL,
                       channel, timestamp, recommendation_id, received_at
                FROM events_shownitem WHERE store_id = %(store)s AND user_id = ANY(%(ids)s)
            ) AS e
            LEFT JOIN catalog_product AS p ON p.store_id = e.store_id AND p.id = e.product_id
            ORDER BY e.timestamp, e.type, e.id
            """,
            {"store": store.id, "ids": identities},
        )
        type_names, channel_names = {**dict(EventType.choices), 0: "impression"}, dict(Channel.choices)
        events = [
            {
                "event_id": event_id,
                "user_id": user_id,
                "session_id": session_id,
                "product_id": product_id,
                "type": type_names.get(kind, str(kind)),
                "quantity": quantity,
                "price": price,
                "rating": rating,
                "channel": channel_names.get(channel, str(channel)),
                "timestamp": timestamp,
                "recommendation_id": recommendation_id or None,
                "received_at": received_at,
            }
            for (event_id, user_id, session_id, product_id, kind, quantity, price, rating, channel, timestamp,
                 recommendation_id, received_at) in cursor.fetchall()
        ]  # fmt: skip
        archived = archive.shopper_export(store.id, identities)
        if archived:  # events past the store's retention, from the Parquet archive
            cursor.execute(
                "SELECT id, external_id FROM catalog_product WHERE store_id = %s AND id = ANY(%s)",
                [store.id, list({row["product_id"] for row in archived})],
            )
            external = dict(cursor.fetchall())
            events = [
                *(
                    {
                        "event_id": row["event_id"],
                        "user_id": row["user_id"],
                        "session_id": row["session_id"],
                        "product_id": external.get(row["product_id"]),
                        "type": type_names.get(row["type"], str(row["type"])),
                        "quantity": row["quantity"],
                        "price": row["price"],
                        "rating": row["rating"],
                        "channel": channel_names.get(row["channel"], str(row["channel"])),
                        "timestamp": row["timestamp"],
                        "recommendation_id": row["recommendation_id"] or None,
                        "received_at": row["received_at"],
                    }
                    for row in sorted(archived, key=lambda row: (row["timestamp"], row["type"], row["id"]))
                ),
                *events,
            ]
    return {"aliases": aliases, "events": events}


class AttributableEvent(NamedTuple):
    id: int
    store_id: int
    user_id: str
    type: int
    quantity: int
    price: Any  # Decimal: the event's unit price, else the catalog's; None when neither is known
    timestamp: datetime
    recommendation_id: str
    product_id: str  # the product's id in the store's catalog
    identities: list[str]  # for a purchase without a recommendation id: the shopper's ids, aliases too


ATTRIBUTABLE_TYPES = (EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE)


def attributable_events(*, received_after: datetime, received_until: datetime) -> list[AttributableEvent]:
    """Clicks, add-to-carts and purchases of every store received in (received_after, received_until]:
    what the attribution rollup (outcomes/) credits to the answers shown. A purchase without a
    recommendation id comes with the shopper's every id, for view-through."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT e.id, e.store_id, e.user_id, e.type, e.quantity, coalesce(e.price, p.price), e.timestamp,
                   e.recommendation_id, p.external_id,
                   CASE WHEN e.type = %(purchase)s AND e.recommendation_id = '' THEN ARRAY(
                       SELECT who.canonical UNION
                       SELECT a.alias_id FROM events_useralias AS a
                       WHERE a.store_id = e.store_id AND a.user_id = who.canonical
                   ) END
            FROM events_event AS e
            JOIN catalog_product AS p ON p.store_id = e.store_id AND p.id = e.product_id
            CROSS JOIN LATERAL (
                SELECT coalesce(
                    (SELECT a.user_id FROM events_useralias AS a
                     WHERE a.store_id = e.store_id AND a.alias_id = e.user_id),
                    e.user_id
                ) AS canonical
            ) AS who
            WHERE e.received_at > %(after)s AND e.received_at <= %(until)s AND e.type = ANY(%(types)s)
              AND (e.recommendation_id <> '' OR e.type = %(purchase)s)
            ORDER BY e.id
            """,
            {
                "after": received_after,
                "until": received_until,
                "types": [int(kind) for kind in ATTRIBUTABLE_TYPES],
                "purchase": int(EventType.PURCHASE),
            },
        )
        return [AttributableEvent._make((*row[:9], row[9] or [])) for row in cursor.fetchall()]


def shown_answers(*, received_after: datetime, received_until: datetime) -> list[tuple[int, str, datetime]]:
    """(store id, recommendation id, first time shown) of the answers that `impression` events received in
    (received_after, received_until] report shown: what the outcomes rollup counts."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT store_id, recommendation_id, min(timestamp) FROM events_shownitem "
            "WHERE received_at > %s AND received_at <= %s GROUP BY 1, 2 ORDER BY 1, 2",
            [received_after, received_until],
        )
        return [
            (int(store), str(recommendation), shown) for store, recommendation, shown in cursor.fetchall()
        ]


@dataclass(frozen=True)
class ShopperEvents:
    """Events as arrays, sorted by shopper, then time (then id): each shopper's run of events in order."""

    users: np.ndarray  # int64 codes, one per shopper id
    product_ids: np.ndarray  # int64 internal ids
    types: np.ndarray  # int64 EventType values
    sessions: np.ndarray  # uint64 session keys (events.profiles.session_key)
    timestamps: np.ndarray  # float64 epoch seconds


def events_of_recent_shoppers(*, store: Store, since: datetime, history: int) -> ShopperEvents:
    """Every shopper with an event since `since`: those events, and up to `history` events of theirs before
    it (the history serving would have had), in order. What a replay of the last days reads."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH recent AS (
                SELECT DISTINCT user_id FROM events_event
                WHERE store_id = %(store)s AND timestamp >= %(since)s
            )
            SELECT e.user_id, e.product_id, e.type, e.session_id, date_part('epoch', e.timestamp)
            FROM recent
            CROSS JOIN LATERAL (
                (SELECT user_id, product_id, type, session_id, timestamp, id FROM events_event
                 WHERE store_id = %(store)s AND user_id = recent.user_id AND timestamp < %(since)s
                 ORDER BY timestamp DESC, id DESC LIMIT %(history)s)
                UNION ALL
                SELECT user_id, product_id, type, session_id, timestamp, id FROM events_event
                WHERE store_id = %(store)s AND user_id = recent.user_id AND timestamp >= %(since)s
            ) AS e
            ORDER BY e.user_id, e.timestamp, e.id
            """,
            {"store": store.id, "since": since, "history": history},
        )
        rows = cursor.fetchall()
    codes: dict[str, int] = {}
    return ShopperEvents(
        users=np.fromiter((codes.setdefault(row[0], len(codes)) for row in rows), np.int64, len(rows)),
        product_ids=np.fromiter((row[1] for row in rows), np.int64, len(rows)),
        types=np.fromiter((row[2] for row in rows), np.int64, len(rows)),
        sessions=np.fromiter((session_key(row[3]) for row in rows), np.uint64, len(rows)),
        timestamps=np.fromiter((float(row[4]) for row in rows), np.float64, len(rows)),
    )


TRAINING_COLUMNS = ("user_id", "product_id", "type", "t", "session_id")


def store_aliases(*, store_ids: list[int]) -> list[tuple[int, str, str]]:
    """(store id, alias id, user id) of every alias of these stores: what training resolves events by."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT store_id, alias_id, user_id FROM events_useralias WHERE store_id = ANY(%s)", [store_ids]
        )
        return cursor.fetchall()


def training_events(*, store_id: int, since: datetime | None) -> pa.Table:
    """Every event of the store (at `since` or later) as Arrow columns: user_id, product_id, type,
    t (epoch seconds) and session_id; from PostgreSQL (the partitions the window reaches) and from the
    archive. Read as one COPY of CSV, spooled to a temporary file and parsed by Arrow: no Python object per
    event, so that a store of tens of millions of events loads in seconds and in the memory of its columns."""
    query = (
        "SELECT user_id, product_id, type, date_part('epoch', timestamp), session_id "
        "FROM events_event WHERE store_id = %s" + ("" if since is None else " AND timestamp >= %s")
    )
    params: list[Any] = [store_id] if since is None else [store_id, since]
    with tempfile.TemporaryFile() as spool, connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT CSV)", params) as copy:
            for chunk in copy:
                spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        if size:
            table = pa_csv.read_csv(
                spool,
                read_options=pa_csv.ReadOptions(column_names=list(TRAINING_COLUMNS), block_size=1 << 24),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(
                    column_types={
                        "user_id": pa.string(),
                        "product_id": pa.int64(),
                        "type": pa.int64(),
                        "t": pa.float64(),
                        "session_id": pa.string(),
                    },
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        else:
            table = _empty_training_table()
    archived = archive.read_archived(
        store_id=store_id, columns=["user_id", "product_id", "type", "timestamp", "session_id"], since=since
    )
    if archived.num_rows:
        seconds = pc.divide(pc.cast(pc.cast(archived.column("timestamp"), pa.int64()), pa.float64()), 1e6)
        archived = pa.table(
            {
                "user_id": archived.column("user_id"),
                "product_id": archived.column("product_id"),
                "type": pc.cast(archived.column("type"), pa.int64()),
                "t": seconds,
                "session_id": archived.column("session_id"),
            }
        )
        table = pa.concat_tables([table, archived])
    return table


def shopper_codes(events: pa.Table, canonical: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct shoppers, sorted; each event's shopper as its position among them) of a table of
    `training_events`, an alias resolved to its user (`canonical`: alias -> user). Each distinct id is
    handled once (Arrow's dictionary), not once per event."""
    users = pc.dictionary_encode(events.column("user_id")).combine_chunks()
    names = users.dictionary.to_numpy(zero_copy_only=False).astype(str)
    if canonical:  # events sent under an alias belong to its user
        names = np.array([canonical.get(name, name) for name in names.tolist()], dtype=str)
    shoppers, name_codes = np.unique(names, return_inverse=True)
    if not len(events):
        return shoppers, np.zeros(0, np.int32)
    return shoppers, name_codes.astype(np.int32)[users.indices.to_numpy(zero_copy_only=False)]


def _empty_training_table() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([], pa.string()),
            "product_id": pa.array([], pa.int64()),
            "type": pa.array([], pa.int64()),
            "t": pa.array([], pa.float64()),
            "session_id": pa.array([], pa.string()),
        }
    )
