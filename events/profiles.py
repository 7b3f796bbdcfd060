"""A shopper's events as their real-time profile holds them: one fixed-size record per event, so that a
profile of 200 events is read into arrays in one step. The record leads with the event's row id (big
endian), which makes the same event one member however often it is written, and orders events of the same
time as the events table does. Sessions are kept as a 64-bit digest: serving only asks whether an event
belongs to the shopper's current session."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

RECORD = np.dtype([("id", ">i8"), ("product", ">i8"), ("type", "u1"), ("session", ">u8")])
_PACK = struct.Struct(">qqBQ")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def session_key(session_id: str) -> int:
    """A session id as 64 bits; 0 is "no session"."""
    if not session_id:
        return 0
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "big") or 1


def profile_entry(
    event_id: int, product_id: int, event_type: int, session_id: str, timestamp: datetime
) -> tuple[int, bytes]:
    """(score, member) of one stored event: its time in whole microseconds, and its record."""
    return (
        (timestamp - _EPOCH) // _MICROSECOND,
        _PACK.pack(event_id, product_id, event_type, session_key(session_id)),
    )


@dataclass(frozen=True)
class History:
    """A shopper's latest events, oldest first, as arrays."""

    product_ids: np.ndarray  # int64, internal product ids
    types: np.ndarray  # int64, EventType values
    sessions: np.ndarray  # uint64 session keys

    def __len__(self) -> int:
        return len(self.product_ids)

    @property
    def current_session(self) -> int:
        """The session of the latest event (0: none)."""
        return int(self.sessions[-1]) if len(self.sessions) else 0

    @classmethod
    def from_records(cls, joined: bytes) -> History:
        """From the profile's records joined into one string (as the cache lookup reads them; the empty
        marker of a profile with no events adds nothing)."""
        records = np.frombuffer(joined, dtype=RECORD)
        return cls(
            records["product"].astype(np.int64),
            records["type"].astype(np.int64),
            records["session"].astype(np.uint64),
        )

    @classmethod
    def from_entries(cls, entries: list[tuple[int, bytes]]) -> History:
        return cls.from_records(b"".join(member for _, member in entries))
