"""Keyset pagination over an increasing integer key: stable under inserts, O(1) per page."""

from __future__ import annotations

import base64
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
    if cursor:
        try:
            after = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError("invalid_cursor", "cursor is not one this API handed out") from exc
    return PageRequest(after=after, limit=limit or DEFAULT_PAGE_SIZE)


def encode_cursor(last_key: int) -> str:
    return base64.urlsafe_b64encode(str(last_key).encode()).decode().rstrip("=")
