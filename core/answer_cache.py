"""A shared cache (Redis) of answers that do not depend on who asks: related, complementary and trending.

Each store has a generation counter that every write which can change such an answer bumps (catalog
writes, settings, model activation); the generation is part of the key, so an old answer is never read
again and simply expires. For-user answers are not cached: they follow the shopper's latest events.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any

import orjson
import redis
from django.conf import settings

logger = logging.getLogger(__name__)
TTL_SECONDS = 300

_client: redis.Redis | None = None


def _redis() -> redis.Redis | None:
    global _client
    if not settings.ANSWER_CACHE_URL:
        return None
    if _client is None:
        _client = redis.Redis.from_url(
            settings.ANSWER_CACHE_URL, socket_timeout=0.2, socket_connect_timeout=0.2
        )
    return _client


def _namespace(store: Any) -> str:
    # the creation time keeps stores of different databases (and re-created test databases) apart
    return f"rc:{store.id}.{int(store.created_at.timestamp() * 1_000_000)}"


def store_changed(store: Any) -> None:
    """Every cached answer of the store is stale from now on."""
    client = _redis()
    if client is None:
        return
    try:
        client.incr(f"{_namespace(store)}:gen")
    except redis.RedisError:
        logger.warning("answer cache unreachable; could not invalidate store %s", store.id)


def _key(store: Any, client: redis.Redis, request_key: str) -> str:
    generation = client.get(f"{_namespace(store)}:gen") or b"0"
    digest = hashlib.sha1(request_key.encode(), usedforsecurity=False).hexdigest()
    return f"{_namespace(store)}:{generation.decode()}:{digest}"


def answer_get(store: Any, request_key: str) -> tuple[str | None, dict | None]:
    """(the key to store under, the cached answer or None). A cache that is down is a miss."""
    client = _redis()
    if client is None:
        return None, None
    try:
        key = _key(store, client, request_key)
        raw = client.get(key)
    except redis.RedisError:
        return None, None
    return key, (orjson.loads(raw) if raw else None)


def answer_put(key: str | None, answer: dict) -> None:
    client = _redis()
    if client is None or key is None:
        return
    with contextlib.suppress(redis.RedisError):  # a cache that is down only costs speed
        client.set(key, orjson.dumps(answer), ex=TTL_SECONDS)
