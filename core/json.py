"""orjson parser and renderer for DRF: the API's hot paths spend most of their time in JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer

from core.errors import ApiError


class OrjsonParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if not raw:
            raise ApiError("empty_body", "the request body is empty; send JSON")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError("malformed_json", f"the body is not valid JSON: {exc}") from exc


class OrjsonRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        return render_json(data)


def render_json(data: Any) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=_default)
    except orjson.JSONEncodeError:
        # an integer past 64 bits, which a merchant's jsonb attributes may hold (PostgreSQL reads a number
        # like 1.8446744073709552e+19 back as an integer): the standard library writes any size
        return json.dumps(data, default=_default, ensure_ascii=False, separators=(",", ":")).encode()


def _default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot render {type(value).__name__}")


def json_body(request: Any) -> Any:
    """The parsed JSON body; an empty body is an error rather than an empty object."""
    length = request.META.get("CONTENT_LENGTH")
    if length in (None, "", "0"):
        raise ApiError("empty_body", "the request body is empty; send JSON")
    return request.data


def json_body_or_empty(request: Any) -> Any:
    """The parsed JSON body, or {} when there is none (calls whose every field is optional)."""
    if request.META.get("CONTENT_LENGTH") in (None, "", "0"):
        return {}
    return request.data


def jsonb_dict(value: Any) -> dict:
    """A jsonb object read through Django's raw cursor (which hands jsonb back as text)."""
    if isinstance(value, str):
        value = orjson.loads(value)
    return value if isinstance(value, dict) else {}
