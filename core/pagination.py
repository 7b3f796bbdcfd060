"""Keyset pagination over an increasing integer key: stable under inserts, O(1) per page."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from core.errors import ApiError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageRequest:
    after: int
    limit: int


def page_request_from_query(query: Any) -> PageRequest:
    limit = parse_limit(query.get("limit"), default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    cursor = query.get("cursor")
    after = 0
    if cursor:
        try:
            after = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError("invalid_cursor", "cursor is not one this API handed out") from exc
    return PageRequest(after=after, limit=limit)


def encode_cursor(last_key: int) -> str:
    return base64.urlsafe_b64encode(str(last_key).encode()).decode().rstrip("=")


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError("invalid_limit", "limit must be an integer") from exc
    if not 1 <= value <= maximum:
        raise ApiError("invalid_limit", f"limit must be between 1 and {maximum}")
    return value
