"""Every answer served is an impression: from the cache or computed, by the fast path or Django, rank and
network answers too. Appended to a Redis stream in the answer's own write, drained into PostgreSQL by a
worker task, stored once per recommendation id however often it is delivered."""

from __future__ import annotations

import orjson

from core import answer_cache
from outcomes.models import Impression
from outcomes.services import impressions_drain
from outcomes.tasks import impressions_drain_task
from tests.conftest import ApiClient, product
from tests.test_recommendations import trained  # noqa: F401 - the fixture


def test_cached_and_computed_answers_of_both_paths_are_impressions(trained, tenant, api):  # noqa: F811
    answers = [
        api.get("/api/v1/products/p0/related", limit=3),  # computed, through Django
        api.get("/api/v1/products/p0/related", limit=3),  # the same, from the cache
        api.get("/api/v1/users/u1/recommendations", limit=4),
        api.get("/api/v1/trending"),
    ]
    ApiClient.through_wsgi = True
    try:
        fast = ApiClient(tenant.raw_key)
        answers.append(fast.get("/api/v1/users/u2/recommendations", limit=2))  # the fast path
        answers.append(fast.get("/api/v1/users/u2/recommendations", limit=2))
    finally:
        ApiClient.through_wsgi = False
    answers.append(api.post("/api/v1/users/u1/rank", {"product_ids": ["p3", "p1", "nope"]}))
    assert {a.headers.get("X-Answer-Cache") for a in answers[:2]} == {"miss", "hit"}
    assert impressions_drain_task.apply().get() == len(answers)
    for answer in answers:
        body = answer.json()
        stored = Impression.objects.get(recommendation_id=body["recommendation_id"])
        assert stored.store_id == tenant.store.id
        assert stored.items == [item["id"] for item in body["items"]]
        assert stored.source == body["source"]
    by_id = {a.json()["recommendation_id"]: a for a in answers}
    surfaces = dict(Impression.objects.values_list("recommendation_id", "surface"))
    assert [surfaces[rid] for rid in by_id] == [
        "related", "related", "for_user", "trending", "for_user", "for_user", "rank"
    ]  # fmt: skip
    users = dict(Impression.objects.values_list("recommendation_id", "user_id"))
    assert [users[rid] for rid in by_id] == ["", "", "u1", "", "u2", "u2", "u1"]


def test_a_drain_that_died_is_taken_over_and_nothing_is_stored_twice(trained, api):  # noqa: F811
    served = [api.get("/api/v1/trending", limit=n).json()["recommendation_id"] for n in (1, 2, 3)]
    # a drainer reads the entries and dies before acknowledging them
    assert len(answer_cache.impressions_claim("dead", count=10, stale_ms=60_000)) == 3
    assert impressions_drain(stale_ms=60_000) == 0  # still its own, for a minute
    assert impressions_drain(stale_ms=0) == 3  # then claimed by another
    assert sorted(Impression.objects.values_list("recommendation_id", flat=True)) == sorted(served)
    # delivered again (an acknowledgement lost): stored once
    client = answer_cache._redis()
    assert client is not None
    again = answer_cache.Impression(served[0], trained.store_id, "trending", "", b'{"source":"x","items":[]}')
    answer_cache.put(None, b"", impression=again)
    assert impressions_drain() == 0
    assert Impression.objects.count() == 3
    stream = answer_cache.impressions_stream(answer_cache.shard(trained.store_id))
    assert client.xlen(stream) == 0  # drained entries are deleted


def test_entries_that_are_not_impressions_are_dropped(db):
    client = answer_cache._redis()
    assert client is not None
    stream = answer_cache.impressions_stream(7)
    client.xadd(stream, {"r": "x", "b": "not json"})
    assert impressions_drain() == 0
    assert client.xlen(stream) == 0


def test_with_redis_off_answers_are_served_without_impressions(api, settings):
    api.post("/api/v1/products/bulk", [product("p1")])
    settings.ANSWER_CACHE_URL = ""
    assert api.get("/api/v1/trending").status_code == 200
    assert impressions_drain() == 0


def test_an_operator_may_turn_impressions_off(api, settings):
    api.post("/api/v1/products/bulk", [product("p1")])
    settings.RECORD_IMPRESSIONS = False
    for _ in range(2):  # computed, then cached: neither recorded
        answer = api.get("/api/v1/trending")
        assert answer.status_code == 200 and answer.json()["recommendation_id"]
    assert impressions_drain() == 0
    settings.RECORD_IMPRESSIONS = True
    api.get("/api/v1/trending")
    assert impressions_drain() == 1


def test_any_text_in_an_impression_is_stored_as_it_was(store):
    """The drain writes COPY's text format itself: backslashes, quotes, tabs, line breaks, commas and
    braces in shopper and product ids come back unchanged (and a NUL, which the API refuses, is dropped)."""
    items = ['a"b', "c\\d", "e,f", "{g}", "h\ti", "j\nk", "NULL", "", 'l\\"m', "n\x00o"]
    user = 'shop\\per\t"1"\r\n'
    body = orjson.dumps({"source": "store-model:v1\\x", "items": [{"id": item} for item in items],
                         "variant": "b\tc", "experiment": 7})  # fmt: skip
    answer_cache.put(None, b"", impression=answer_cache.Impression("rid-1", store.id, "for_user", user, body))
    assert impressions_drain() == 1
    row = Impression.objects.get(recommendation_id="rid-1")
    assert row.items == [*items[:-1], "no"]
    assert (row.user_id, row.source, row.variant, row.experiment_id) == (user, "store-model:v1\\x", "b\tc", 7)


def test_an_impression_twice_in_one_batch_is_stored_once(store):
    body = orjson.dumps({"source": "s", "items": [{"id": "p1"}]})
    for _ in range(2):
        answer_cache.put(
            None, b"", impression=answer_cache.Impression("rid-2", store.id, "trending", "", body)
        )
    assert impressions_drain() == 1
    assert Impression.objects.filter(recommendation_id="rid-2").count() == 1


def test_recommendation_ids_are_unique_and_in_time_order(api):
    """32 hex digits, as before; the first 12 the time in ms, so that the impressions' key is appended in
    order rather than at random places."""
    import re
    import time as clock

    from core.ids import time_ordered_id

    made = [time_ordered_id() for _ in range(50_000)]
    assert len(set(made)) == len(made) and all(re.fullmatch("[0-9a-f]{32}", value) for value in made[:1000])
    earlier = time_ordered_id()
    clock.sleep(0.002)
    answered = api.get("/api/v1/trending", limit=3).json()["recommendation_id"]
    clock.sleep(0.002)
    assert earlier < answered < time_ordered_id()
    assert abs(int(answered[:12], 16) - clock.time() * 1000) < 60_000


def test_a_drain_batch_reads_each_answer_body_once_and_keeps_each_impression_its_own():
    """Impressions of one cached answer share its body: the drain parses it once a batch, and each line
    still has its own id, shopper and time; another body gets its own columns."""
    from outcomes.services import _array_element, _copy_text, _line

    def fields(rid: str, user: str, body: bytes, ms: int) -> dict[bytes, bytes]:
        return {b"r": rid.encode(), b"s": b"7", b"f": b"for_user", b"u": user.encode(),
                b"t": str(ms).encode(), b"b": body}  # fmt: skip

    cached = orjson.dumps({"source": "store-model:v2", "variant": "B", "experiment": 3,
                           "items": [{"id": "p1"}, {"id": "p\\t2"}]})  # fmt: skip
    other = orjson.dumps({"source": "trending", "items": [{"id": "q9"}]})
    answers: dict[bytes, bytes] = {}
    lines = [
        _line(fields("r1", "u1", cached, 1_700_000_000_000), answers),
        _line(fields("r2", "u2", cached, 1_700_000_000_500), answers),
        _line(fields("r3", "u3", other, 1_700_000_001_000), answers),
    ]
    assert len(answers) == 2
    assert lines == [_line(fields(rid, user, body, ms)) for rid, user, body, ms in (
        ("r1", "u1", cached, 1_700_000_000_000), ("r2", "u2", cached, 1_700_000_000_500),
        ("r3", "u3", other, 1_700_000_001_000))]  # fmt: skip
    first, second, third = (line.decode().split("\t") for line in lines if line is not None)
    assert first[:5] == ["r1", "7", "for_user", "u1", "1700000000000"]
    assert second[:5] == ["r2", "7", "for_user", "u2", "1700000000500"]
    items = _copy_text("{" + ",".join(_array_element(item) for item in ("p1", "p\\t2")) + "}")
    assert first[5:8] == second[5:8] == ["B", "store-model:v2", items]
    assert first[8] == second[8] == "3" and third[5:8] == ["", "trending", '{"q9"}'] and third[8] == "\\N"
    # a field to escape, or longer than its column, is escaped and cut as text; one not written here, dropped
    odd = _line(fields("r4", "tab\there\\" + "é" * 300, other, 1))
    assert odd is not None and odd.decode().split("\t")[3] == ("tab\\there\\\\" + "é" * 300)[: 256 + 2]
    assert _line({b"r": b"r5", b"s": b"x", b"f": b"f", b"t": b"1", b"b": other}) is None
