"""The events table's partitions: one a month in UTC (one for every time before 2000), made by the
database function `recsys_event_partition` (migration 0006) ahead of time by the maintenance task, and on
ingest for a month that has none yet (a historical import). Each process remembers the months it knows
exist, so an ingest of this month's events asks nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import OperationalError, connection, transaction

FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
BEFORE_FLOOR = "events_event_before2000"
PARENT = "events_event"

_known: set[str] = set()  # partitions this process has seen exist (committed)


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: datetime | None  # None: every time before the next bound
    upper: datetime


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(at: datetime) -> str:
    """The partition that holds events at this time."""
    if at < FLOOR:
        return BEFORE_FLOOR
    at = at.astimezone(UTC)
    return f"{PARENT}_p{at.year:04d}{at.month:02d}"


def bounds(name: str) -> Partition:
    if name == BEFORE_FLOOR:
        return Partition(name, None, FLOOR)
    stamp = name.removeprefix(f"{PARENT}_p")
    lower = datetime(int(stamp[:4]), int(stamp[4:]), 1, tzinfo=UTC)
    return Partition(name, lower, next_month(lower))


def partitions() -> list[Partition]:
    """Every partition of the events table, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        names = [row[0] for row in cursor.fetchall()]
    return sorted((bounds(name) for name in names), key=lambda part: part.upper)


def ensure_for(times: list[datetime] | set[datetime]) -> None:
    """Make sure a partition holds each of these times (an ingest's batch). Asks the database only for
    months this process has not seen exist; a partition made inside a transaction counts as known once it
    commits (a rollback takes it away again)."""
    if not times:
        return
    # the months from the earliest time to the latest (a batch spans one or two): a name each, not a name
    # for each of a large batch's times
    earliest, latest = min(times), max(times)
    if earliest >= FLOOR and all(name in _known for name in _months(earliest, latest)):
        return
    missing: dict[str, datetime] = {}
    for at in times:
        name = partition_name(at)
        if name not in _known and name not in missing:
            missing[name] = at
    if not missing:
        return
    if not _known:
        _known.update(part.name for part in partitions())
        missing = {name: at for name, at in missing.items() if name not in _known}
        if not missing:
            return
    with connection.cursor() as cursor:
        for at in missing.values():
            cursor.execute("SELECT recsys_event_partition(%s)", [at])
    transaction.on_commit(lambda: _known.update(missing))


def _months(earliest: datetime, latest: datetime) -> list[str]:
    """The partitions' names from the month of `earliest` to that of `latest` (both from FLOOR on)."""
    names = []
    start, end = month_start(earliest), month_start(latest)
    while start <= end:
        names.append(partition_name(start))
        start = next_month(start)
    return names


def forget() -> None:
    """Forget what this process knows (a partition was dropped: the next ingest asks again)."""
    _known.clear()


def ensure_ahead(now: datetime, months: int = 2) -> list[str]:
    """This month's partition and the next `months` ones (the maintenance task, ahead of the events)."""
    start = month_start(now)
    names = []
    with connection.cursor() as cursor:
        for _ in range(months + 1):
            cursor.execute("SELECT recsys_event_partition(%s)", [start])
            names.append(cursor.fetchone()[0])
            start = next_month(start)
    return names


def drop(name: str, *, expected_rows: int | None = None) -> bool:
    """Detach and drop a partition that holds exactly `expected_rows` rows (the rows the caller archived
    from it, in its transaction; the database raises otherwise, and the caller's transaction rolls back),
    or, without, one that holds none (answers False, nothing done, when it holds some)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT recsys_event_partition_drop(%s, %s)", [name, expected_rows])
            dropped = bool(cursor.fetchone()[0])
    except OperationalError as error:  # object_not_in_prerequisite_state: rows it should not drop
        if expected_rows is not None or "not dropped" not in str(error):
            raise
        return False
    if dropped:
        transaction.on_commit(lambda: _known.discard(name))
    return dropped
