"""The fast path's handler for event ingestion (core/fast_path.py): a storefront posts an event on every
page view, so `POST /api/v1/events` is taken before Django when its key is remembered with the write
scope. It calls the service the view calls and answers as the view would. It declines (the body put back
for Django) whenever nothing was stored: a body that is not JSON, an error of the whole request, or every
row rejected. Once something may have been stored it answers itself, failures included, so that a batch
is never stored twice."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.urls import ResolverMatch

from core import rate_limit
from core.errors import DATABASE_UNAVAILABLE, ApiError, error_body
from core.fast_path import FastResponse, allowed_methods, database_request
from core.json import render_json
from core.observability import store_var
from events.apis import EventIngestApi, ingest_counted
from events.services import event_ingest, event_rows
from tenants.authentication import bearer_token, recent_keys, remembered_key
from tenants.models import ApiKeyScope

logger = logging.getLogger(__name__)


def fast_ingest(environ: dict[str, Any], match: ResolverMatch) -> FastResponse | None:
    if getattr(match.func, "view_class", None) is not EventIngestApi:
        return None
    if not environ.get("CONTENT_TYPE", "").startswith("application/json"):
        return None
    # the key as remembered; its generation is checked in the gate's round trip, before anything is stored
    entry = remembered_key(environ, ApiKeyScope.WRITE)
    if entry is None:
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length <= 0 or length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return None  # Django answers the 413, before reading it
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)  # for Django, should this path decline
    try:
        payload = orjson.loads(body)
        rows = len(event_rows(payload))
    except (orjson.JSONDecodeError, ApiError):
        return None
    # the keys generation, the key's rate limit and the store's daily quota, in one round trip
    gate = rate_limit.ingest_gate(entry[0], rows, entry[1])
    if gate is None:
        return None  # Redis unavailable: nothing is trusted, Django looks the key up
    bucket, reserved, keys_generation = gate
    if keys_generation != entry[1]:  # keys or stores changed since (nothing taken): Django looks it up
        recent_keys.forget(bearer_token(environ) or "")
        return None
    if bucket is not None:
        environ[rate_limit.ENVIRON_KEY] = bucket  # taken: Django, should it answer instead, takes no other
        if not bucket.allowed:
            return None  # Django answers the 429
    if reserved is False:
        return None  # Django answers the quota's 429
    if reserved:
        environ[rate_limit.QUOTA_ENVIRON_KEY] = True  # (and Django, should it answer, reserves none)
    store = entry[0].store
    store_var.set(store.slug)
    try:
        with database_request(environ):
            result = event_ingest(store=store, payload=payload, quota_reserved=bool(reserved))
    except ApiError:
        return None  # raised before anything was stored
    except (OperationalError, InterfaceError):  # the database is down or restarting: a retry will do
        logger.warning("event ingestion found the database unavailable", exc_info=True)
        body = render_json(error_body("database_unavailable", DATABASE_UNAVAILABLE))
        return FastResponse(body, [("Retry-After", "1")], status="503 Service Unavailable")
    except Exception:  # noqa: BLE001 - something may be stored: answer here, never twice through Django
        logger.exception("event ingestion failed on the fast path")
        body = render_json(
            error_body("internal_error", "ingestion failed; send the batch again (with event ids)")
        )
        return FastResponse(body, status="500 Internal Server Error")
    if result.errors and not (result.accepted or result.duplicate):
        return None  # nothing stored: Django answers the 400 with every row's error
    ingest_counted(result)
    headers = [("Allow", allowed_methods(EventIngestApi)), *(bucket.headers() if bucket is not None else [])]
    return FastResponse(render_json(result.as_dict()), headers)
