"""Keyset pagination over an increasing integer key: stable under inserts, O(1) per page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import ApiError
from core.params import query_int

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageRequest:
    after: int
    limit: int


def page_request_from_query(query: Any) -> PageRequest:
    limit = query_int(query.get("limit"), "limit", low=1, high=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
    cursor = query.get("cursor")
    after = 0
    if cursor is not None:
        # the last key of the previous page, as decimal digits (the schema's pattern)
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise ApiError("invalid_cursor", "cursor is not one this API handed out")
        after = int(cursor)
    return PageRequest(after=after, limit=limit or DEFAULT_PAGE_SIZE)


def encode_cursor(last_key: int) -> str:
    return str(last_key)
