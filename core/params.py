"""Query-string parameters: parsed one way everywhere, each bad value a 400 `invalid_parameter`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.errors import ApiError
from core.validation import RowError, clean_timestamp


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError("invalid_parameter", f"{name} {message}", details={"parameter": name})


def query_int(raw: Any, name: str, *, low: int, high: int, default: int | None) -> int | None:
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise bad_parameter(name, "must be an integer") from exc
    if not low <= value <= high:
        raise bad_parameter(name, f"must be between {low} and {high}")
    return value


def query_float(raw: Any, name: str, *, low: float, high: float, default: float | None) -> float | None:
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise bad_parameter(name, "must be a number") from exc
    if not low <= value <= high:
        raise bad_parameter(name, f"must be between {low} and {high}")
    return value


def query_bool(raw: Any, name: str) -> bool | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise bad_parameter(name, "must be true or false")


def query_text(raw: Any, name: str, *, max_length: int = 200) -> str | None:
    if raw in (None, ""):
        return None
    value = str(raw)
    if len(value) > max_length or "\x00" in value:
        raise bad_parameter(name, f"must be at most {max_length} characters without NUL")
    return value


def query_time(raw: Any, name: str, *, iso_only: bool = False) -> datetime | None:
    if raw is None:
        return None
    try:
        if iso_only:  # (the schema's date-time: digits are not epoch seconds here)
            if not isinstance(raw, str) or not raw[:1].isdigit() or "T" not in raw.upper():
                raise RowError(name, "invalid_timestamp", "not an ISO 8601 date and time")
            return clean_timestamp(raw, name)
        return clean_timestamp(raw, name)
    except RowError as error:
        raise bad_parameter(name, "must be an ISO 8601 time or epoch seconds") from error
