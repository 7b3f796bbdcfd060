"""Plain-code row validation for batch endpoints: fast, and every problem is reported as
`{"index", "field", "code", "message"}` so that a batch answers per row."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RowError(Exception):
    def __init__(self, field: str, code: str, message: str):
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message

    def as_dict(self, index: int | None) -> dict[str, Any]:
        return {"index": index, "field": self.field, "code": self.code, "message": self.message}


def clean_string(
    value: Any, field: str, *, max_length: int, required: bool = True, empty_ok: bool = False
) -> str:
    # nearly every value: printable ASCII (no control character, no NUL), not blank, not too long
    if (
        type(value) is str
        and value.isascii()
        and value.isprintable()
        and len(value) <= max_length
        and (empty_ok or value.strip())
    ):
        return value
    if value is None:
        if required:
            raise RowError(field, "required", f"{field} is required")
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool) and field.endswith("id"):
        value = str(value)  # ids sent as JSON numbers are accepted as their decimal string
    if not isinstance(value, str):
        raise RowError(field, "invalid_type", f"{field} must be a string")
    if "\x00" in value:
        raise RowError(field, "invalid_character", f"{field} must not contain NUL bytes")
    if field.endswith("id") and _CONTROL.search(value):  # ids appear in URLs, which refuse them
        raise RowError(field, "invalid_character", f"{field} must not contain control characters")
    if not value.strip() and not empty_ok:
        raise RowError(field, "blank", f"{field} must not be blank")
    if len(value) > max_length:
        raise RowError(field, "too_long", f"{field} is longer than {max_length} characters")
    return value


def clean_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise RowError(field, "invalid_type", f"{field} must be true or false")
    return value


def clean_int(value: Any, field: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RowError(field, "invalid_type", f"{field} must be an integer")
    if not minimum <= value <= maximum:
        raise RowError(field, "out_of_range", f"{field} must be between {minimum} and {maximum}")
    return value


def clean_money(value: Any, field: str, *, maximum: Decimal = Decimal("1e10")) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RowError(field, "invalid_type", f"{field} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError(field, "invalid_number", f"{field} must be a finite number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise RowError(field, "invalid_number", f"{field} must be a number") from exc
    if not amount.is_finite():
        raise RowError(field, "invalid_number", f"{field} must be a finite number")
    if amount < 0:
        raise RowError(field, "negative", f"{field} must not be negative")
    if amount >= maximum:
        raise RowError(field, "out_of_range", f"{field} must be below {maximum}")
    amount = amount.quantize(Decimal("0.0001"))  # as stored: 9999999999.99999 rounds up to the limit
    if amount >= maximum:
        raise RowError(field, "out_of_range", f"{field} must be below {maximum}")
    return amount


def clean_timestamp(value: Any, field: str) -> datetime:
    """ISO 8601 (a naive time is taken as UTC) or seconds since the epoch."""
    if type(value) is str and len(value) <= 64 and "\x00" not in value:  # nearly every value: ISO 8601 in UTC
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass  # (answered below)
        else:
            if parsed.tzinfo is UTC:
                return parsed
    if isinstance(value, bool):
        raise RowError(field, "invalid_timestamp", f"{field} must be ISO 8601 or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 32503680000:
            raise RowError(field, "invalid_timestamp", f"{field} is out of range")
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or len(value) > 64 or "\x00" in value:
        raise RowError(field, "invalid_timestamp", f"{field} must be ISO 8601 or epoch seconds")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RowError(field, "invalid_timestamp", f"{field} is not an ISO 8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:  # in UTC: PostgreSQL takes offsets of up to 15:59 only (ISO 8601 allows 23:59)
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise RowError(field, "invalid_timestamp", f"{field} is out of range") from exc


def check_no_nul(value: Any, field: str, depth: int = 0) -> None:
    """JSON values headed for PostgreSQL jsonb/text may not carry NUL characters anywhere."""
    if depth > 20:
        raise RowError(field, "too_deep", f"{field} is nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise RowError(field, "invalid_character", f"{field} must not contain NUL bytes")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_no_nul(key, field, depth + 1)
            check_no_nul(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_no_nul(item, field, depth + 1)


def without_nul(value: Any, field: str, depth: int = 0) -> Any:
    """A JSON value with every NUL character (which PostgreSQL's jsonb cannot hold) replaced by U+FFFD,
    in keys and strings alike: free-form attributes are kept, not refused, for one character."""
    if depth > 20:
        raise RowError(field, "too_deep", f"{field} is nested too deeply")
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k, field, depth + 1): without_nul(v, field, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(item, field, depth + 1) for item in value]
    return value
