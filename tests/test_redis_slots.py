"""Redis Cluster: every script and every command that names several keys names keys of one hash slot (a
store's keys carry its shard's hash tag), and an answer's own key, which the lookup script makes from its
arguments, is in that slot too. Recorded over a storefront's traffic through the production WSGI app: the
fast path and Django, cached and computed answers, rate limits, quotas, profiles, aliases, settings, keys
and the impressions drain."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.crc import key_slot

from core import answer_cache
from outcomes.services import impressions_drain
from tests.conftest import ApiClient
from tests.test_recommendations import trained  # noqa: F401 - the fixture

MULTI_KEY = {"DEL", "UNLINK", "MGET", "EXISTS", "TOUCH"}


def _keys_of(args: tuple[Any, ...]) -> list[bytes]:
    name = str(args[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        count = int(args[2])
        return [_bytes(key) for key in args[3 : 3 + count]]
    if name in MULTI_KEY and len(args) > 2:
        return [_bytes(key) for key in args[1:]]
    return []


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture
def commands(monkeypatch: Any) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    command = answer_cache._command
    execute = redis.Redis.execute_command

    def recording_command(client: Any, *args: Any) -> Any:
        seen.append(args)
        return command(client, *args)

    def recording_execute(self: Any, *args: Any, **options: Any) -> Any:
        seen.append(args)
        return execute(self, *args, **options)

    monkeypatch.setattr(answer_cache, "_command", recording_command)
    monkeypatch.setattr(redis.Redis, "execute_command", recording_execute)
    monkeypatch.setattr(ApiClient, "through_wsgi", True)
    return seen


def test_every_script_and_multi_key_command_stays_in_one_slot(trained, tenant, commands):  # noqa: F811
    api = ApiClient(tenant.raw_key)
    for _ in range(2):  # computed, then cached
        assert api.get("/api/v1/users/u1/recommendations", limit=3).status_code == 200
        assert api.get("/api/v1/products/p0/related", limit=3).status_code == 200
        assert api.get("/api/v1/trending").status_code == 200
    assert api.post("/api/v1/events", {"user_id": "u1", "product_id": "p3", "type": "view"}).status_code in (
        200,
        201,
    )
    assert api.post("/api/v1/users/u1/aliases", {"alias_id": "device-9"}).status_code in (200, 201)
    assert api.get("/api/v1/users/device-9/recommendations").status_code == 200
    assert api.patch("/api/v1/store", {"settings": {"include_purchased": True}}).status_code == 200
    assert api.post("/api/v1/keys", {"name": "second"}).status_code in (200, 201)
    assert api.get("/api/v1/users/u1/recommendations").status_code == 200
    assert impressions_drain() > 0

    multi = [(args[0], keys) for args in commands if len(keys := _keys_of(args)) > 1]
    assert len(multi) > 10  # the lookups, appends, gates and erasures were seen
    crossing = [(name, keys) for name, keys in multi if len({key_slot(key) for key in keys}) > 1]
    assert crossing == []
    # every key the scripts named is the store's (or its shard's stream), in the store's slot
    slot = key_slot(answer_cache._namespace(tenant.store).encode())
    assert {key_slot(key) for _, keys in multi for key in keys} == {slot}


def test_an_answer_s_key_is_in_its_store_s_slot(trained, tenant):  # noqa: F811
    found = answer_cache.lookup(tenant.store, "/api/v1/trending?", user_id="u1", with_profile=True)
    assert found.key is not None
    assert key_slot(found.key.encode()) == key_slot(answer_cache._namespace(tenant.store).encode())
    stream = answer_cache.impressions_stream(answer_cache.shard(tenant.store.id))
    assert key_slot(stream.encode()) == key_slot(found.key.encode())
