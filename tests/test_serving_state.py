"""The computed path's state: the real-time profile equals the events table, answers are the same with
Redis up, down or hung, catalog changes reach the very next computed answer, and loaded models are held
by bytes and never loaded twice while they fit."""

from __future__ import annotations

import gc
import mmap
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core import answer_cache
from events.profiles import History, profile_entry
from events.selectors import user_history
from recommendations.serving.state import serving_state
from tests.conftest import ApiClient, make_tenant, product
from tests.test_recommendations import ids, trained  # noqa: F401 - the fixture

BASE = datetime(2026, 11, 1, tzinfo=UTC)
SHOPPERS = ["ann", "bob", "ann-phone", "bob-card", "cid"]

event_streams = st.lists(
    st.one_of(
        st.tuples(
            st.just("events"),
            st.lists(
                st.tuples(
                    st.sampled_from(SHOPPERS),
                    st.integers(0, 5),  # product
                    st.sampled_from(["view", "click", "add_to_cart", "purchase"]),
                    st.sampled_from(["web", "app", "in_store"]),
                    st.sampled_from(["", "s1", "s2"]),
                    st.integers(0, 40),  # minutes after BASE: ties and events out of order
                    st.booleans(),  # resend the previous event id
                ),
                min_size=1,
                max_size=12,
            ),
        ),
        st.tuples(st.just("ask"), st.sampled_from(SHOPPERS)),  # a computed answer (may rebuild)
        st.tuples(st.just("alias"), st.sampled_from([("ann", "ann-phone"), ("bob", "bob-card")])),
    ),
    min_size=1,
    max_size=10,
)


def _redis_profile(store, user_id: str) -> History | None:
    found = answer_cache.lookup(store, f"profile-check-{time.time_ns()}", user_id=user_id, with_profile=True)
    return None if found.profile is None else History.from_records(found.profile)


def _sql_profile(store, user_id: str) -> History:
    rows = user_history(store=store, user_id=user_id, limit=answer_cache.PROFILE_EVENTS)
    return History.from_entries(
        [profile_entry(r.id, r.product_id, r.type, r.session_id, r.timestamp) for r in rows]
    )


@pytest.mark.django_db(transaction=True)  # real commits: small batches append, large ones append on commit
@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=event_streams)
def test_the_redis_profile_equals_the_events_table(stream):
    tenant = make_tenant(f"profile-{time.time_ns()}")
    api, store = tenant.api, tenant.store
    api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(6)])
    counter = 0
    for step in stream:
        if step[0] == "events":
            batch = []
            for user, item, kind, channel, session, minutes, resend in step[1]:
                counter += 1
                row = {
                    "event_id": f"e{counter - 1 if resend and counter > 1 else counter}",
                    "user_id": user, "product_id": f"p{item}", "type": kind, "channel": channel,
                    "timestamp": (BASE + timedelta(minutes=minutes)).isoformat(),
                }  # fmt: skip
                batch.append({**row, "session_id": session} if session else row)
            assert api.post("/api/v1/events", batch).status_code == 200
        elif step[0] == "ask":
            assert api.get(f"/api/v1/users/{step[1]}/recommendations").status_code == 200
        else:
            user, alias = step[1]
            assert api.post(f"/api/v1/users/{user}/aliases", {"alias_id": alias}).status_code in (200, 201)
        for user in SHOPPERS:  # every profile Redis holds is the table's, whatever happened in between
            held = _redis_profile(store, user)
            if held is not None:
                expected = _sql_profile(store, user)
                assert held.product_ids.tolist() == expected.product_ids.tolist(), user
                assert held.types.tolist() == expected.types.tolist(), user
                assert held.sessions.tolist() == expected.sessions.tolist(), user


@pytest.mark.django_db(transaction=True)
def test_a_profile_is_trimmed_to_the_latest_events_in_the_tables_order(api, store):
    api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(3)])
    api.post("/api/v1/events", {"user_id": "u", "product_id": "p0", "type": "view"})
    api.get("/api/v1/users/u/recommendations")  # rebuilds the profile from SQL
    # then more events than a profile keeps, some older than what it holds
    events = [
        {"user_id": "u", "product_id": f"p{i % 3}", "type": "view",
         "timestamp": (BASE + timedelta(seconds=(i * 7919) % 400)).isoformat()}
        for i in range(answer_cache.PROFILE_EVENTS + 50)
    ]  # fmt: skip
    api.post("/api/v1/events", events)  # a large batch: appended once it commits, trimmed
    held = _redis_profile(store, "u")
    assert held is not None and len(held) == answer_cache.PROFILE_EVENTS
    assert held.product_ids.tolist() == _sql_profile(store, "u").product_ids.tolist()
    # small batches append to it, older events than it holds included, and it keeps the latest ones
    for i in range(30):
        minute = BASE + timedelta(seconds=(i * 104729) % 450)
        api.post("/api/v1/events", {"user_id": "u", "product_id": f"p{i % 3}", "type": "click",
                                    "timestamp": minute.isoformat()})  # fmt: skip
    held = _redis_profile(store, "u")
    expected = _sql_profile(store, "u")
    assert held is not None and len(held) == answer_cache.PROFILE_EVENTS
    assert held.product_ids.tolist() == expected.product_ids.tolist()
    assert held.types.tolist() == expected.types.tolist()


@pytest.mark.django_db(transaction=True)
def test_a_large_batch_with_resent_events_appends_only_what_it_stored(api, store):
    """The staged path committed on its own (production's): resent event ids are stored once, and only the
    events stored join the profiles of every id of the shopper."""
    from events.services import SMALL_BATCH

    api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(3)])
    api.post("/api/v1/events", {"user_id": "u", "product_id": "p0", "type": "view"})
    api.post("/api/v1/users/u/aliases", {"alias_id": "a"})  # "a" is "u" too
    for shopper in ("u", "a"):
        api.get(f"/api/v1/users/{shopper}/recommendations")  # rebuilds the profile from SQL
    size = SMALL_BATCH + 20

    def batch(numbers: range) -> list[dict]:
        return [
            {"event_id": f"e{n}", "user_id": "ua"[n % 2], "product_id": f"p{n % 3}", "type": "view",
             "timestamp": (BASE + timedelta(seconds=n)).isoformat()}
            for n in numbers
        ]  # fmt: skip

    assert api.post("/api/v1/events", batch(range(size))).json()["accepted"] == size
    answer = api.post("/api/v1/events", batch(range(size // 2, size + size // 2))).json()
    assert (answer["accepted"], answer["duplicate"]) == (size // 2, size - size // 2)
    expected = _sql_profile(store, "u")
    assert len(expected) == 1 + size + size // 2
    for shopper in ("u", "a"):  # the batch's events joined both ids' profiles, the alias's and the user's
        held = _redis_profile(store, shopper)
        assert held is not None and held.product_ids.tolist() == expected.product_ids.tolist(), shopper
        assert held.sessions.tolist() == expected.sessions.tolist()


@pytest.mark.django_db(transaction=True)
def test_a_large_batch_leaves_profiles_redis_lacks_to_the_next_answer(api, store):
    """A large batch's events join only the profiles Redis holds; a shopper without one gets none made
    (rebuilt from SQL when next asked, with the batch), and no answer cached before the batch is served
    after it, for either shopper."""
    from events.services import SMALL_BATCH

    api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(4)])
    for shopper in ("held", "cold"):
        api.post("/api/v1/events", {"user_id": shopper, "product_id": "p0", "type": "view"})
    for shopper in ("held", "cold"):  # answers cached (and profiles rebuilt from SQL)
        api.get(f"/api/v1/users/{shopper}/recommendations")
    client = answer_cache._redis()
    namespace = answer_cache._namespace(store)
    cold_profile = answer_cache._shopper_keys_in(namespace, "cold")[1]
    client.delete(cold_profile)  # expired, say: "held" keeps the profile its answer rebuilt
    size = SMALL_BATCH + 20
    rows = [
        {"user_id": ("held", "cold")[n % 2], "product_id": f"p{1 + n % 3}", "type": "view",
         "timestamp": (BASE + timedelta(seconds=n)).isoformat()}
        for n in range(size)
    ]  # fmt: skip
    assert api.post("/api/v1/events", rows).json()["accepted"] == size
    held = _redis_profile(store, "held")
    assert held is not None and held.product_ids.tolist() == _sql_profile(store, "held").product_ids.tolist()
    assert not client.exists(cold_profile)
    api.get("/api/v1/users/cold/recommendations")  # computed, not the cached answer: it rebuilds the profile
    rebuilt = _redis_profile(store, "cold")
    expected = _sql_profile(store, "cold")
    assert rebuilt is not None and rebuilt.product_ids.tolist() == expected.product_ids.tolist()
    assert len(rebuilt) == 1 + size // 2


@pytest.fixture
def hung_port():
    """A port that accepts connections and never answers: a hung (SIGSTOPped) Redis or broker."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


SURFACE_REQUESTS = [
    ("/api/v1/users/u0/recommendations", {"limit": 5}),
    ("/api/v1/users/u1/recommendations", {"limit": 3, "in_stock": "true"}),
    ("/api/v1/products/p2/related", {"limit": 4}),
    ("/api/v1/products/p4/complementary", {"limit": 3}),
    ("/api/v1/trending", {"limit": 5, "max_per_category": 1}),
]


def _answers(api: ApiClient) -> list:
    return [
        (api.get(path, **query).json()["source"], ids(api.get(path, **query)))
        for path, query in SURFACE_REQUESTS
    ]


@pytest.mark.parametrize("outage", ["down", "hung"])
def test_answers_are_the_same_with_redis_down_or_hung(trained, tenant, outage, hung_port, settings):  # noqa: F811
    ApiClient.through_wsgi = True
    try:
        api = ApiClient(tenant.raw_key)
        api.post("/api/v1/events", {"user_id": "u1", "product_id": "p6", "type": "view"})
        with_redis = _answers(api)
        settings.ANSWER_CACHE_URL = f"redis://127.0.0.1:{1 if outage == 'down' else hung_port}/0"
        began = time.perf_counter()
        without = _answers(api)
        assert without == with_redis
        assert time.perf_counter() - began < 3.0  # one short timeout, then Redis is left alone a while
    finally:
        ApiClient.through_wsgi = False


def test_health_says_degraded_within_a_second_when_redis_hangs(api, hung_port, settings):
    settings.ANSWER_CACHE_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{hung_port}/0"
    began = time.perf_counter()
    body = api.get("/api/v1/health").json()
    assert time.perf_counter() - began < 2.0
    assert body["status"] == "degraded" and body["answer_cache"] == "down"
    assert body["broker"].startswith("down")


def test_a_catalog_change_reaches_the_very_next_computed_answer(trained, tenant):  # noqa: F811
    ApiClient.through_wsgi = True
    try:
        api = ApiClient(tenant.raw_key)
        first = ids(api.get("/api/v1/products/p0/related", limit=3))
        assert first[0] == "p1"
        api.patch("/api/v1/products/p1", {"in_stock": False})
        assert "p1" not in ids(api.get("/api/v1/products/p0/related", limit=3, in_stock="true"))
        api.patch("/api/v1/products/p1", {"price": 500})
        assert "p1" not in ids(api.get("/api/v1/products/p0/related", limit=3, max_price=100))
        assert "p1" in ids(api.get("/api/v1/products/p0/related", limit=3, min_price=400))
        api.delete("/api/v1/products/p1")
        assert "p1" not in ids(api.get("/api/v1/products/p0/related", limit=5))
        assert "p1" not in ids(api.get("/api/v1/users/u0/recommendations", limit=20))
    finally:
        ApiClient.through_wsgi = False


def test_models_are_loaded_once_and_evicted_by_bytes(trained, api, store, other_store):  # noqa: F811
    state = serving_state()
    loads = state.residency.loads
    for _ in range(5):
        api.get("/api/v1/users/u0/recommendations", limit=3, n=str(time.time_ns()))
    assert state.residency.loads == loads + 1
    model = next(iter(state.residency.models.entries.values()))
    assert state.residency.models.bytes == model.nbytes > 0
    # a budget smaller than two models keeps only the latest one
    state.residency.models.max_bytes = model.nbytes
    other = make_tenant("second-shop")
    other.api.post("/api/v1/products/bulk", [product(f"p{i}") for i in range(20)])
    from tests.test_recommendations import planted_events, train

    other.api.post("/api/v1/events", planted_events())
    train(other.store)
    other.api.get("/api/v1/users/u0/recommendations")
    assert len(state.residency.models.entries) == 1
    # the model is served from the local file cache, memory-mapped
    served = next(iter(state.residency.models.entries.values()))
    assert _memory_mapped(served.neighbours.data) and _memory_mapped(served.popularity)
    assert len(list(Path(settings.MODEL_CACHE_DIR).iterdir())) == 2  # one folder per version
    # one mapping a version, so one open file however many arrays it has (1,000 stores' models held
    # one a `.npy` array ran out of file descriptors)
    del model  # (the evicted model's mapping is closed once nothing refers to it)
    gc.collect()
    assert len(_open_files_under(Path(settings.MODEL_CACHE_DIR))) == len(state.residency.models.entries) == 1


@pytest.mark.parametrize("damage", ["short", "index", "old format"])
def test_a_damaged_file_cache_folder_is_fetched_again(trained, api, damage):  # noqa: F811
    """A version's folder that is torn (a short file, an unreadable index) or from an earlier format (one
    `.npy` an array) is removed and written again from the stored artifact: the same answers."""
    from recommendations.serving.state import ARRAYS_FILE, INDEX_FILE

    state = serving_state()
    expected = ids(api.get("/api/v1/users/u0/recommendations", limit=5, n="1"))
    (folder,) = Path(settings.MODEL_CACHE_DIR).iterdir()
    if damage == "short":
        data = (folder / ARRAYS_FILE).read_bytes()
        (folder / ARRAYS_FILE).write_bytes(data[: len(data) // 2])
    elif damage == "index":
        (folder / INDEX_FILE).write_text("{not json")
    else:
        (folder / INDEX_FILE).unlink()
        (folder / ARRAYS_FILE).rename(folder / "neighbours__data.npy")
    state.residency.clear()
    assert ids(api.get("/api/v1/users/u0/recommendations", limit=5, n="2")) == expected
    assert sorted(path.name for path in folder.iterdir()) == sorted([ARRAYS_FILE, INDEX_FILE])


def _open_files_under(folder: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder.resolve())):
            out.append(target)
    return out


def _memory_mapped(array) -> bool:
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = array.obj if isinstance(array, memoryview) else getattr(array, "base", None)
    return False


def test_ranked_orders_each_prefix_as_a_full_stable_sort_would():
    from recommendations.serving.pipeline import Ranked

    rng = np.random.default_rng(3)
    for _ in range(200):
        size = int(rng.integers(1, 400))
        scores = rng.choice([0.1, 0.2, 0.25, 0.5, 1.0], size=size).astype(np.float32)  # many ties
        positions = np.sort(rng.choice(10_000, size=size, replace=False))
        shuffled = rng.permutation(size)  # the order given need not be the tie order
        ranked = Ranked(
            positions[shuffled] + 7, scores[shuffled], "r", presorted=False, at_most=300,
            tiebreak=positions[shuffled],
        )  # fmt: skip
        expected = np.argsort(-scores, kind="stable")[:300]  # ties by position: positions are sorted
        got = []
        start = 0
        for width in (3, 17, 50, 1000):
            ids, got_scores = ranked.window(start, start + width)
            got += ids.tolist()
            start += width
        assert got == (positions[expected] + 7).tolist()
        assert len(ranked) == min(size, 300)


def test_content_neighbours_from_the_model_are_pgvectors(trained, store):  # noqa: F811
    """Training works out the nearest products by content of the products with few collaborative
    neighbours; they are the ones pgvector finds from the stored vectors."""
    from catalog.selectors import product_content_neighbours
    from recommendations.selectors import trained_model_active

    model = serving_state().residency.get(trained_model_active(store=store))
    assert model is not None and model.content is not None
    checked = 0
    for position in range(len(model.products)):
        start, end = model.content.indptr[position], model.content.indptr[position + 1]
        if np.diff(model.similar.indptr)[position] >= 10:
            assert start == end  # not needed: never asked
            continue
        held = dict(zip(model.products.ids[model.content.indices[start:end]].tolist(),
                        model.content.data[start:end].tolist(), strict=True))  # fmt: skip
        searched = dict(
            product_content_neighbours(store=store, product_id=int(model.products.ids[position]), limit=50)
        )
        assert held.keys() == searched.keys()
        assert all(abs(held[p] - searched[p]) < 2e-3 for p in held)
        checked += bool(held)
    assert checked > 0


@pytest.mark.django_db
def test_many_stores_stay_within_the_memory_budget():
    """However many stores a process serves, what it holds of models and catalogs stays within the
    budgets (SERVING_MODEL_MB, SERVING_CATALOG_MB), the least recently used going first."""
    from tests.test_recommendations import CATALOG, planted_events, train

    state = serving_state()
    tenants = []
    for index in range(12):
        tenant = make_tenant(f"budget-{index}")
        tenant.api.post("/api/v1/products/bulk", CATALOG)
        tenant.api.post("/api/v1/events", planted_events())
        train(tenant.store)
        tenants.append(tenant)
    tenants[0].api.get("/api/v1/products/p0/related")
    model_bytes = state.residency.models.bytes
    catalog_bytes = state.catalogs.bytes
    state.residency.models.max_bytes = 4 * model_bytes
    state.catalogs.max_bytes = 4 * catalog_bytes
    for tenant in tenants[1:]:
        assert tenant.api.get("/api/v1/products/p0/related").status_code == 200
        assert state.residency.models.bytes <= state.residency.models.max_bytes
        assert state.catalogs.bytes <= state.catalogs.max_bytes
    held = {entry[0] for entry in state.catalogs.entries.items()}
    assert held == {tenant.store.id for tenant in tenants[-4:]}  # the four most recently used
    assert len(state.residency.models.entries) == 4


def test_a_redis_that_lost_its_data_never_vouches_for_what_a_process_remembers(trained, api, store):  # noqa: F811
    """Generations Redis lacks start at the time, not at 0: after a restart without its data, what a
    process loaded under an old generation (a catalog, the active model) is not taken for current."""
    from core import answer_cache

    ApiClient.through_wsgi = True
    try:
        from catalog.models import Product

        def lose_data() -> None:  # this store's keys (the broker shares the database: not a FLUSHDB)
            redis = answer_cache._redis()
            redis.delete(*redis.keys(f"{answer_cache._namespace(store)}*"))

        client = ApiClient(api.raw_key)
        lose_data()  # the store's generation starts now, as for a new store
        assert "p1" in ids(client.get("/api/v1/products/p0/related", limit=3))
        loads = serving_state().catalog_loads
        # the catalog changes while Redis is away, and it comes back without its data
        lose_data()
        Product.objects.filter(store=store, external_id="p1").update(is_active=False)
        assert "p1" not in ids(client.get("/api/v1/products/p0/related", limit=3, n="after"))
        assert serving_state().catalog_loads == loads + 1
        # a write that finds no generation starts it at the time too, never at 1
        lose_data()
        answer_cache.store_changed(store)
        assert int(answer_cache._redis().get(f"{answer_cache._namespace(store)}:gen")) > 10**15
    finally:
        ApiClient.through_wsgi = False
