"""Writes of the recommendations app: training runs (create, execute), model activation and rollback.

Training reads a store's events and catalog, fits outside any transaction, then writes the new version
and activates it in one short transaction."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow.compute as pc
import scipy.sparse as sp
from django.conf import settings as django_settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Max, Q
from django.utils import timezone

from catalog.models import CONTENT_DIMENSIONS
from catalog.services import product_content_vectors_write
from core import answer_cache, erasure, tenancy
from core.db.binary import binary_update
from core.errors import ApiError, NotFound
from core.json import jsonb_dict
from core.observability import TRAINING_RUNS, TRAINING_SECONDS
from events.models import EventType
from events.selectors import shopper_codes, store_aliases, training_events
from recommendations.artifacts import CATEGORY_SEPARATOR, artifact_dump
from recommendations.engine.baskets import CategoryCompatibility, bought_together
from recommendations.engine.coldstart import ContentToBehaviour, popularity_prior
from recommendations.engine.content import (
    CONTENT_NEIGHBOURS,
    CONTENT_WHEN_FEWER_THAN,
    ContentEmbedding,
    nearest_in_groups,
    product_document,
)
from recommendations.engine.interactions import IdIndex, sorted_interactions
from recommendations.engine.ranker import item_counts, item_stats
from recommendations.engine.recommender import decayed_popularity
from recommendations.engine.training import fit_store_model
from recommendations.models import (
    GlobalModel,
    ModelKind,
    NetworkSlice,
    RunStatus,
    TrainedModel,
    TrainingRun,
)
from recommendations.selectors import event_type_weights
from tenants.models import Store, StoreSettings
from tenants.services import audit_record

logger = logging.getLogger(__name__)

# warm products a store needs before its products without events get neighbours mapped from content
COLD_MIN_WARM = 20
# two categories go together (complete-the-look) once bought in this many baskets together, above chance
COMPATIBILITY_MIN_SUPPORT = 3
# A new version whose validation NDCG@10 falls below this share of the active one's is kept, not activated.
CLEARLY_WORSE = 0.8
MIN_USERS_TO_COMPARE = 30
TRENDING_HALF_LIFE_DAYS = 7.0
INTERACTION_HALF_LIFE_DAYS = 180.0  # co-occurrence: an event half a year old counts half


TRAINING_OPTIONS = frozenset({"activate", "global_share", "ranker"})


def training_options_clean(body: Any) -> dict[str, Any]:
    """A training request's options: {"activate": bool (default true), "global_share": 0..1, "ranker": bool
    (default true: learn the ranking stage, which serves when it beats the first stage on validation)}."""
    if not isinstance(body, dict):
        raise ApiError(
            "invalid", 'the body must be an object: {"activate", "global_share", "ranker"}, all optional'
        )
    unknown = sorted(set(body) - TRAINING_OPTIONS)
    if unknown:
        raise ApiError("unknown_field", f"unknown fields: {unknown}", details=unknown)
    options: dict[str, Any] = {}
    for name in ("activate", "ranker"):
        if name in body:
            if not isinstance(body[name], bool):
                raise ApiError("invalid", f"{name} must be true or false")
            options[name] = body[name]
    if "global_share" in body:
        share = body["global_share"]
        if (
            share is None
            or isinstance(share, bool)
            or not isinstance(share, int | float)
            or not 0 <= share <= 1
        ):
            raise ApiError("invalid", "global_share must be a number from 0 to 1")
        options["global_share"] = float(share)
    return options


def training_run_create(
    *,
    store: Store,
    kind: str = ModelKind.STORE,
    trigger: str = "api",
    options: dict[str, Any] | None = None,
) -> TrainingRun:
    """Queue a run; the task is enqueued only once the row is committed. One open run per store and kind.
    `options` (training_options_clean): whether to activate the new version, a fixed global share."""
    from recommendations.tasks import train_store_task

    training_runs_recover(store=store)  # a run whose worker died must not block the store for ever
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(store=store, kind=kind, trigger=trigger, options=options or {})
            transaction.on_commit(lambda: train_store_task.delay(run.id))
    except IntegrityError as exc:
        open_run = TrainingRun.objects.filter(
            store=store, kind=kind, status__in=["queued", "running"]
        ).first()
        raise ApiError(
            "training_in_progress",
            "a training run of this store is already queued or running",
            details={"run_id": open_run.id if open_run else None},
            status_code=409,
        ) from exc
    return run


class TrainingRunBusy(Exception):
    """Another worker holds the run and its heartbeat is fresh: look again in `retry_in` seconds (it either
    finishes, or its heartbeat goes stale and the run can be taken over)."""

    def __init__(self, run_id: int, retry_in: float):
        super().__init__(f"training run {run_id} is running elsewhere; look again in {retry_in:.0f} s")
        self.retry_in = retry_in


class TrainingRunLost(Exception):
    """This worker's claim on the run was taken over (its heartbeat went stale): it must write nothing."""


def _claimed(run: TrainingRun) -> Any:
    """The run's row, only while this worker's claim holds."""
    return TrainingRun.objects.filter(pk=run.pk, attempt=run.attempt, status=RunStatus.RUNNING)


def _progress(run: TrainingRun, progress: float, message: str) -> None:
    now = timezone.now()
    if not _claimed(run).update(progress=progress, message=message, heartbeat_at=now, updated_at=now):
        raise TrainingRunLost(f"training run {run.pk} was taken over by another worker")


class _Heartbeat:
    """A thread that writes the run's heartbeat every TRAINING_HEARTBEAT_SECONDS while it trains (a
    phase may take minutes without progress to report). It stops when the run ends or is taken over."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run.pk}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        tenancy.set_store(self.run.store_id)  # a thread starts with no scope (core/tenancy.py)
        try:
            while not self.stop.wait(django_settings.TRAINING_HEARTBEAT_SECONDS):
                now = timezone.now()
                if not _claimed(self.run).update(heartbeat_at=now):
                    return  # taken over: the final write will find out and write nothing
        except Exception:  # noqa: BLE001 - a heartbeat missed is a takeover at worst, never a crash
            logger.warning("the heartbeat of training run %s failed", self.run.pk, exc_info=True)
        finally:
            connection.close()  # this thread's own connection


def _claim(run_id: int) -> TrainingRun | None:
    """Move the run to running under a new claim: a queued run, or a running one whose worker was lost
    (its heartbeat is stale). None when it is finished; TrainingRunBusy while another worker holds it."""
    now = timezone.now()
    stale_seconds = django_settings.TRAINING_STALE_SECONDS
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().select_related("store").filter(pk=run_id).first()
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            return None
        if run.status == RunStatus.RUNNING:
            beat = run.heartbeat_at or run.updated_at
            age = (now - beat).total_seconds()
            if age < stale_seconds:
                raise TrainingRunBusy(run_id, stale_seconds - age + 1)
        if run.attempt >= django_settings.TRAINING_MAX_ATTEMPTS:
            run.status, run.finished_at = RunStatus.FAILED, now
            run.message = f"gave up after {run.attempt} attempts (workers lost or transient errors)"
            run.save(update_fields=["status", "finished_at", "message", "updated_at"])
            TRAINING_RUNS.labels("failed").inc()
            return None
        took_over = run.status == RunStatus.RUNNING
        run.status, run.attempt, run.heartbeat_at, run.started_at = (
            RunStatus.RUNNING,
            run.attempt + 1,
            now,
            now,
        )
        run.progress = 0.01
        run.message = (
            f"loading events (attempt {run.attempt}, after a lost worker)" if took_over else "loading events"
        )
        run.save(
            update_fields=[
                "status",
                "attempt",
                "heartbeat_at",
                "started_at",
                "progress",
                "message",
                "updated_at",
            ]
        )
    return run


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run a queued training run, or take over one whose worker was lost. Safe to call twice: only the
    call that claims it does the work; a call while another worker holds it raises TrainingRunBusy (the
    task looks again later), and a finished run returns None."""
    run = _claim(run_id)
    if run is None:
        return None
    started = time.monotonic()
    try:
        with _Heartbeat(run), tenancy.store_scope(run.store_id):  # the store's rows only
            _train(run)
    except TrainingRunLost:
        logger.warning("training run %s was taken over by another worker; this one stops", run_id)
        return None
    except (OperationalError, InterfaceError) as exc:
        # the database went away for a moment: queue the run again; the task retries with backoff
        logger.warning("training run %s hit a transient database error: %s", run_id, exc)
        _claimed(run).update(
            status=RunStatus.QUEUED, progress=0.0, message=f"retrying after {type(exc).__name__}"
        )
        raise
    except Exception as exc:
        logger.exception("training run %s failed", run_id)
        TRAINING_RUNS.labels("failed").inc()
        _claimed(run).update(
            status=RunStatus.FAILED, finished_at=timezone.now(), message=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    run.refresh_from_db()
    seconds = time.monotonic() - started
    TRAINING_SECONDS.observe(seconds)
    TRAINING_RUNS.labels(run.status).inc()
    run.metrics = {**run.metrics, "seconds": round(seconds, 2)}
    run.save(update_fields=["metrics", "updated_at"])
    return run


def training_runs_recover(*, store: Store | None = None) -> int:
    """Queue again the running runs whose heartbeat is older than TRAINING_STALE_SECONDS (their worker
    was killed; with Redis as the broker its message comes back only after the visibility timeout), and
    enqueue them: a worker takes them over within a minute or two. The active model is untouched. Answers
    how many were queued again."""
    from recommendations.tasks import train_store_task

    cutoff = timezone.now() - timedelta(seconds=django_settings.TRAINING_STALE_SECONDS)
    stale = TrainingRun.objects.filter(status=RunStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, updated_at__lt=cutoff)
    )
    if store is not None:
        stale = stale.filter(store=store)
    with transaction.atomic():
        ids = list(stale.select_for_update(skip_locked=True).values_list("pk", flat=True))
        if not ids:
            return 0
        TrainingRun.objects.filter(pk__in=ids).update(
            status=RunStatus.QUEUED,
            message=f"the worker was lost (no heartbeat for {django_settings.TRAINING_STALE_SECONDS:g} s); "
            "queued again",
        )
        transaction.on_commit(lambda: [train_store_task.delay(run_id) for run_id in ids])
    logger.warning("queued again %d training runs whose worker was lost: %s", len(ids), ids)
    return len(ids)


@dataclass(frozen=True)
class TrainingData:
    product_ids: IdIndex  # internal product ids, in model index order
    user_ids: IdIndex
    interactions: Any
    documents: list[str]
    n_events: int
    category_paths: np.ndarray  # per product, its category path joined by CATEGORY_SEPARATOR
    tags: sp.csr_matrix  # products x tags (category levels, brand, attributes): the ranker's affinities
    prices: np.ndarray  # per product; 0 where unknown
    style: np.ndarray | None  # the merchant's product embeddings, unit rows (None: none given)


def _load(store: Store, settings: StoreSettings) -> TrainingData:
    type_weight = event_type_weights(settings.event_weights)
    # the training window (None: every event), read from the partitions it reaches and from the archive
    since = (
        timezone.now() - timedelta(days=settings.training_window_days)
        if settings.training_window_days
        else None
    )
    events = training_events(store_id=store.id, since=since)
    canonical = {alias: user for _, alias, user in store_aliases(store_ids=[store.id])}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, title, description, category_path, brand, attributes, price, embedding "
            "FROM catalog_product "
            "WHERE store_id = %s AND is_active ORDER BY id",
            [store.id],
        )
        catalog = cursor.fetchall()
    catalog_ids = np.array([row[0] for row in catalog], dtype=np.int64)
    shoppers, user_codes = shopper_codes(events, canonical)
    user_index = IdIndex(ids=shoppers)
    # products: each distinct id once (Arrow's dictionary), placed in the index, then per event
    product_codes = pc.dictionary_encode(events.column("product_id")).combine_chunks()
    event_products = product_codes.dictionary.to_numpy(zero_copy_only=False)
    types = events.column("type").to_numpy()
    times = events.column("t").to_numpy()
    product_index = IdIndex(ids=np.union1d(catalog_ids, event_products))
    positions = product_index.positions(event_products)[product_codes.indices.to_numpy(zero_copy_only=False)]
    weights = type_weight[types] if len(types) else np.zeros(0, np.float32)
    keep = weights > 0
    purchases = np.isin(types, [EventType.PURCHASE, EventType.ADD_TO_CART])
    # each event's session as a code (0: none), by the sorted session ids: the ranking stage's session
    # features compare them
    # (1 + its rank among the distinct ids; 0: none), ranked by Arrow (no Python string per id)
    sessions = pc.dictionary_encode(events.column("session_id")).combine_chunks()
    session_names = sessions.dictionary
    code_of_name = np.asarray(pc.rank(session_names, sort_keys="ascending"), dtype=np.int64)
    code_of_name[np.asarray(pc.equal(session_names, ""), dtype=bool)] = 0
    session_codes = code_of_name[sessions.indices.to_numpy(zero_copy_only=False)]
    # a basket: the session when the event carries one, otherwise the shopper's day (codes after the
    # sessions' own)
    day = (times // 86400).astype(np.int64)
    baskets = session_codes.copy()
    daily = baskets == 0
    if daily.any():
        span = int(day[daily].max() - day[daily].min()) + 1
        _, day_codes = np.unique(
            user_codes[daily].astype(np.int64) * span + (day[daily] - day[daily].min()), return_inverse=True
        )
        baskets[daily] = len(session_names) + 1 + day_codes
    interactions = sorted_interactions(
        users=user_codes[keep], items=positions[keep], weights=weights[keep],
        times=times[keep], n_users=len(user_index), n_items=len(product_index),
        baskets=baskets[keep], purchases=purchases[keep], sessions=session_codes[keep],
    )  # fmt: skip
    documents_by_id = {
        row[0]: product_document(row[1], row[2] or "", list(row[3] or []), row[4] or "", jsonb_dict(row[5]))
        for row in catalog
    }
    documents = [documents_by_id.get(int(pid), "") for pid in product_index.ids]
    paths_by_id = {row[0]: CATEGORY_SEPARATOR.join(row[3] or []) for row in catalog}
    category_paths = np.array([paths_by_id.get(int(pid), "") for pid in product_index.ids], dtype=str)
    tags = _product_tags(catalog, product_index)
    prices_by_id = {row[0]: float(row[6]) for row in catalog if row[6] is not None}
    prices = np.array([prices_by_id.get(int(pid), 0.0) for pid in product_index.ids], dtype=np.float32)
    return TrainingData(
        product_index, user_index, interactions, documents, len(events), category_paths, tags, prices,
        _style_vectors(catalog, product_index),
    )  # fmt: skip


def _style_vectors(catalog: list[tuple], product_index: IdIndex) -> np.ndarray | None:
    """The merchant's product embeddings as unit rows (products x dimensions; zero where a product has
    none, or has another dimension than most), or None when no product has one."""
    given = [(row[0], row[7]) for row in catalog if row[7]]
    if not given:
        return None
    dimensions = int(np.argmax(np.bincount([len(vector) for _, vector in given])))
    kept = [(product_id, vector) for product_id, vector in given if len(vector) == dimensions]
    positions = product_index.positions(np.array([product_id for product_id, _ in kept], dtype=np.int64))
    vectors = np.array([vector for _, vector in kept], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    style = np.zeros((len(product_index), dimensions), np.float32)
    style[positions] = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return style


def _product_tags(catalog: list[tuple], product_index: IdIndex) -> sp.csr_matrix:
    """Products x tags, binary: each level of a product's category path, its brand, and each attribute
    whose value is a string, a number or a list of those (as "name=value")."""
    codes: dict[str, int] = {}
    rows: list[int] = []
    columns: list[int] = []
    positions = product_index.positions(np.array([row[0] for row in catalog], dtype=np.int64))
    for position, row in zip(positions.tolist(), catalog, strict=True):
        tags = {f"category={level}" for level in row[3] or []}
        if row[4]:
            tags.add(f"brand={row[4]}")
        for name, value in jsonb_dict(row[5]).items():
            for one in value if isinstance(value, list) else [value]:
                if isinstance(one, str | int | float) and not isinstance(one, bool):
                    tags.add(f"{name}={one}")
        for tag in tags:
            rows.append(position)
            columns.append(codes.setdefault(tag, len(codes)))
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, columns)), shape=(len(product_index), max(len(codes), 1))
    )


class _PhaseClock:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 3)
        self.last = now


def _train(run: TrainingRun) -> TrainedModel:
    from recommendations.network import network_slice_for

    store = run.store
    settings, _ = StoreSettings.objects.get_or_create(store=store)
    repeats = settings.include_purchased
    clock = _PhaseClock()
    data = _load(store, settings)
    network, global_version = network_slice_for(store=store, product_ids=data.product_ids.ids)
    clock.lap("load")
    interactions = data.interactions
    _progress(run, 0.2, f"loaded {data.n_events} events over {len(data.product_ids)} products; tuning")

    # Weights are tuned, the global share chosen and the version evaluated on a time split (the last
    # tenth of the store's time); with too few shoppers spanning the cut, on each shopper's last event.
    fixed_share = (run.options or {}).get("global_share", (settings.blend_weights or {}).get("global"))
    network_ranker = _network_ranker() if settings.share_network else None
    fitted = fit_store_model(
        interactions,
        repeats=repeats,
        network=network,
        fixed_share=None if fixed_share is None else float(fixed_share),
        interaction_half_life_days=INTERACTION_HALF_LIFE_DAYS,
        ranker=(run.options or {}).get("ranker", True),
        tags=data.tags,
        prices=data.prices,
        serving_half_life_days=TRENDING_HALF_LIFE_DAYS,
        fallback_ranker=network_ranker[1] if network_ranker else None,
        progress=lambda fraction, message: _progress(run, fraction, message),
    )
    model, metrics = fitted.model, fitted.metrics
    clock.lap("tune_evaluate_fit")
    model.popularity_ = decayed_popularity(
        interactions, half_life_days=TRENDING_HALF_LIFE_DAYS, now=datetime.now(tz=UTC).timestamp()
    )
    if not model.popularity_.any() and network is not None and network.nnz:
        # no shoppers of its own yet: how much the network's shoppers engage with its products (each
        # product's co-occurrence in the slice) stands in for trending until its own events arrive
        reach = np.asarray(network.sum(axis=0)).ravel() + np.asarray(network.sum(axis=1)).ravel()
        model.popularity_ = (reach / reach.max()).astype(model.popularity_.dtype)
    purchase_rows = interactions.purchases if interactions.purchases is not None else np.zeros(0, bool)
    together = bought_together(interactions)
    compatibility = _category_compatibility(interactions, purchase_rows, data.category_paths)
    clock.lap("baskets")
    _progress(run, 0.75, "content embeddings and cold items")
    embedding = ContentEmbedding(dimensions=CONTENT_DIMENSIONS)
    features = embedding.text_features(data.documents)
    # the cold items' map (the longest step left) is learned beside the content vectors and their
    # writing to the catalog (on another core: numpy, scipy and PostgreSQL leave the interpreter lock)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cold-items") as pool:
        learning_cold = pool.submit(_cold_neighbours, model.similar_, features, interactions)
        vectors = embedding.reduce(features, len(data.documents))
        content = _content_neighbours(model.similar_, vectors, data.category_paths)
        clock.lap("content")
        product_content_vectors_write(store=store, product_ids=data.product_ids.ids, vectors=vectors)
        clock.lap("store_vectors")
        cold = learning_cold.result()
    clock.lap("cold_items")  # what it took beyond the steps beside it
    if cold:
        metrics["cold_items_mapped"] = int((np.diff(cold["cold"].indptr) > 0).sum())
    artifact = artifact_dump(
        {
            **({"content": content} if content is not None else {}),
            **cold,
            "product_ids": data.product_ids.ids,
            "neighbours": model.neighbours_,
            "similar": model.similar_,
            "transitions": model.transitions_,
            "together": together,
            "vectors": vectors.astype(np.float16),
            "popularity": model.popularity_,
            "category_paths": data.category_paths,
            **compatibility,
            **_ranker_arrays(fitted.ranker, interactions, data, model.transitions_),
            **({"style": data.style.astype(np.float16)} if data.style is not None else {}),
        }
    )
    clock.lap("artifact")
    _progress(run, 0.9, "storing the new version")
    metrics["seconds_by_phase"] = clock.laps
    parameters = dict(fitted.parameters)
    if fitted.ranker is not None and fitted.ranker.text is None:  # serving's `source` says why
        parameters["ranking_stage_off"] = fitted.ranker.metrics.get("why", "")
    if fitted.ranker is not None and fitted.ranker.text:  # related answers too, where it judged better
        for surface in ("related", "complementary"):
            parameters[f"ranker_{surface}"] = bool(fitted.ranker.metrics.get(surface, {}).get("used"))
    if fitted.ranker is not None and fitted.ranker.text and fitted.ranker.metrics.get("from") == "network":
        assert network_ranker is not None
        parameters["ranker_from"] = f"global-model:v{network_ranker[0]}"
    # a sharing store's lessons teach the network's ranker (global_model_train)
    lessons = fitted.ranker.lessons_sample if fitted.ranker is not None and settings.share_network else None
    if fitted.global_share is not None:
        parameters.update(
            global_version=global_version,
            global_share=fitted.global_share,
            global_share_chosen_by=fitted.share_chosen_by,
            global_shares_tried={f"{share:g}": round(ndcg, 5) for share, ndcg in fitted.shares_tried.items()},
        )
    return _save_and_maybe_activate(run, artifact, metrics, parameters, data, lessons)


def _network_ranker() -> tuple[int, str] | None:
    """(version, LightGBM text) of the active global model's ranker, when it has one."""
    found = GlobalModel.objects.filter(is_active=True).exclude(ranker="").values_list("version", "ranker")
    return next(iter(found), None)


def _ranker_arrays(
    fitted: Any, interactions: Any, data: TrainingData, transitions: sp.csr_matrix
) -> dict[str, Any]:
    """What serving's ranking stage reads beyond the first stage's arrays: the LightGBM model as text,
    each product's count of events and its other statistics (item_stats), the products' tags and prices,
    and the transitions transposed. Empty when the ranker does not serve."""
    if fitted is None or fitted.text is None:
        return {}
    return {
        "ranker": np.array(fitted.text),
        "counts": item_counts(interactions),
        "stats": item_stats(interactions),
        "tags": data.tags,
        "prices": data.prices,
        "arrivals": sp.csr_matrix(transitions.T),
    }


def _category_compatibility(
    interactions: Any, purchase_rows: np.ndarray, category_paths: np.ndarray
) -> dict[str, np.ndarray]:
    """Complete-the-look's learned rules, for the artifact: which leaf categories are bought together
    (CategoryCompatibility), as category names."""
    leaves = [path.rsplit(CATEGORY_SEPARATOR, 1)[-1] if path else "" for path in category_paths.tolist()]
    names = sorted(set(leaves) - {""})
    codes = {name: code for code, name in enumerate(names)}
    item_categories = np.array([codes.get(leaf, -1) for leaf in leaves], dtype=np.int64)
    rows, cols, lift, support = (
        CategoryCompatibility(min_support=COMPATIBILITY_MIN_SUPPORT)
        .fit(
            interactions.baskets[purchase_rows],
            interactions.items[purchase_rows],
            item_categories,
            len(names),
        )
        .pairs_
    )
    named = np.array(names, dtype=str) if names else np.zeros(0, dtype=str)
    return {
        "compat_from": named[rows] if rows.size else np.zeros(0, dtype=str),
        "compat_to": named[cols] if cols.size else np.zeros(0, dtype=str),
        "compat_lift": lift,
        "compat_support": support,
    }


def _cold_neighbours(
    similar: sp.csr_matrix, features: sp.csr_matrix | None, interactions: Any
) -> dict[str, sp.csr_matrix]:
    """What serving needs to relate a product no shopper has touched yet: a ridge map from content
    (TF-IDF) to the warm items' co-occurrence factors (ContentToBehaviour) predicts the cold products'
    factors, and each one's nearest warm items by them (`cold`, items x items). Empty when there are no
    cold products with content, or too few warm items to learn from."""
    if features is None or similar.shape[0] != features.shape[0]:
        return {}
    counts = np.bincount(interactions.items, minlength=similar.shape[0])[: similar.shape[0]]
    cold_rows = np.flatnonzero((counts == 0) & (np.diff(features.indptr) > 0))
    warm = counts > 0
    if cold_rows.size == 0 or warm.sum() < COLD_MIN_WARM:
        return {}
    mapper = ContentToBehaviour().fit(features, similar, warm)  # (factors and penalty: the engine's)
    if not mapper.fitted_:
        return {}
    # worked out here for every cold product: nearest among all warm items' factors is a pass over them
    # (50 MB for 50,000 items), which on the request path halved computed related answers/s
    cold = mapper.neighbours(features, cold_rows, k=CONTENT_NEIGHBOURS, prior=popularity_prior(counts))
    return {"cold": cold.astype(np.float32)}


def _content_neighbours(
    similar: sp.csr_matrix, vectors: np.ndarray, category_paths: np.ndarray
) -> sp.csr_matrix | None:
    """For the items with few collaborative neighbours, their nearest items by content within their top
    category (as the vectors stored in pgvector would give them), so that serving reads them from the
    model instead of querying. None when the catalog makes that too costly (serving then asks pgvector)."""
    counts = np.diff(similar.indptr) if similar.shape[0] == len(vectors) else np.zeros(len(vectors), int)
    # the stored vectors are half precision: the same neighbours pgvector finds
    rounded = vectors.astype(np.float16).astype(np.float32)
    present = np.linalg.norm(rounded, axis=1) > 0
    rows = np.flatnonzero((counts < CONTENT_WHEN_FEWER_THAN) & present)
    top = [path.split(CATEGORY_SEPARATOR, 1)[0] for path in category_paths.tolist()]
    codes = {name: code for code, name in enumerate(sorted(set(top) - {""}))}
    groups = np.array([codes.get(name, -1) for name in top], dtype=np.int64)
    norms = np.linalg.norm(rounded, axis=1, keepdims=True)
    unit = np.divide(rounded, norms, out=np.zeros_like(rounded), where=norms > 0)
    return nearest_in_groups(unit, groups, rows=rows, k=CONTENT_NEIGHBOURS, candidates=present)


def _save_and_maybe_activate(
    run: TrainingRun,
    artifact: bytes,
    metrics: dict,
    parameters: dict,
    data: TrainingData,
    ranker_lessons: bytes | None = None,
) -> TrainedModel:
    store = run.store
    with transaction.atomic():
        Store.objects.select_for_update().get(pk=store.pk)  # serialise version numbers per store
        if not _claimed(run).select_for_update().exists():
            raise TrainingRunLost(f"training run {run.pk} was taken over by another worker")
        latest = TrainedModel.objects.filter(store=store, kind=run.kind).aggregate(v=Max("version"))["v"] or 0
        model = TrainedModel.objects.create(
            store=store, kind=run.kind, version=latest + 1, metrics=metrics, parameters=parameters,
            n_items=len(data.product_ids), n_users=len(data.user_ids), n_events=data.n_events,
            artifact=b"", artifact_bytes=len(artifact), ranker_lessons=ranker_lessons,
        )  # fmt: skip
        binary_update(TrainedModel, model.pk, "artifact", artifact)  # bound as binary: see core/db/binary.py
        model.artifact = artifact
        active = (
            TrainedModel.objects.filter(store=store, kind=run.kind, is_active=True)
            .defer(*TrainedModel.LARGE_FIELDS)
            .first()
        )
        reason = _worse_than(metrics, active)
        if (run.options or {}).get("activate") is False:
            reason = "a candidate, as asked (activate: false): try it in an experiment or a replay"
        if reason is None:
            _activate(model)
            message = f"version {model.version} trained and activated"
        else:
            message = f"version {model.version} kept but not activated: {reason}"
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED, progress=1.0, finished_at=timezone.now(), model=model,
            metrics=metrics, parameters=parameters, message=message,
        )  # fmt: skip
    return model


def served_ndcg(metrics: dict) -> float | None:
    """A version's validation NDCG@10 as it serves: with its ranking stage when that serves."""
    ranker = metrics.get("ranker") or {}
    if ranker.get("used"):
        return ranker["two_stage"]["ndcg@10"]
    return metrics.get("ndcg@10")


def _worse_than(metrics: dict, active: TrainedModel | None) -> str | None:
    if active is None:
        return None
    new, old = served_ndcg(metrics), served_ndcg(active.metrics)
    if new is None or old is None:
        return None
    if (
        metrics.get("users", 0) < MIN_USERS_TO_COMPARE
        or active.metrics.get("users", 0) < MIN_USERS_TO_COMPARE
    ):
        return None
    if new < CLEARLY_WORSE * old:
        return f"NDCG@10 {new:.4f} is clearly below the active version {active.version}'s {old:.4f}"
    return None


def _activate(model: TrainedModel) -> None:
    TrainedModel.objects.filter(store_id=model.store_id, kind=model.kind, is_active=True).exclude(
        pk=model.pk
    ).update(is_active=False)
    model.is_active = True
    model.activated_at = timezone.now()
    model.save(update_fields=["is_active", "activated_at", "updated_at"])
    store = model.store
    audit_record(store=store, action="model_activated", target=f"{model.kind} v{model.version}")
    answer_cache.changed(answer_cache.store_changed, store)


def trained_model_activate(*, store: Store, version: int, kind: str = ModelKind.STORE) -> TrainedModel:
    """Activate (or roll back to) a version of this store's model, atomically."""
    with transaction.atomic():
        model = (
            TrainedModel.objects.select_for_update()
            .filter(store=store, kind=kind, version=version)
            .defer(*TrainedModel.LARGE_FIELDS)
            .first()
        )
        if model is None:
            raise NotFound("no such model version")
        _activate(model)
    return model


def stores_due_for_training(*, now: datetime | None = None) -> list[Store]:
    """Stores whose last run started longer ago than their retrain interval, and that have events, or
    share and have a network slice their latest version has not blended yet (so a sharing store with no
    shoppers of its own yet gets related products from the network, and every sharing store gets each
    new global version)."""
    now = now or timezone.now()
    due = []
    for settings in StoreSettings.objects.select_related("store").filter(store__is_active=True):
        last = TrainingRun.objects.filter(store=settings.store).order_by("-created_at").first()
        if last and (now - last.created_at).total_seconds() < settings.retrain_interval_hours * 3600:
            continue
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM events_event WHERE store_id = %s LIMIT 1", [settings.store_id])
            has_events = cursor.fetchone() is not None
        if has_events or (settings.share_network and _unblended_network_slice(settings.store)):
            due.append(settings.store)
    return due


def _unblended_network_slice(store: Store) -> bool:
    version = (
        NetworkSlice.objects.filter(store=store, global_model__is_active=True, n_pairs__gt=0)
        .values_list("global_model__version", flat=True)
        .first()
    )
    if version is None:
        return False
    latest = (
        TrainedModel.objects.filter(store=store, kind=ModelKind.STORE)
        .order_by("-version")
        .values_list("parameters", flat=True)
        .first()
    )
    return latest is None or (latest or {}).get("global_version") != version


def scheduled_training_enqueue() -> int:
    queued = 0
    for store in stores_due_for_training():
        try:
            training_run_create(store=store, trigger="schedule")
            queued += 1
        except ApiError:
            continue  # a run is already open
    return queued


def store_erase(store_id: int) -> dict[str, int]:
    """A store's training runs, model versions (their artifacts are in the row) and network slices. The
    global model stays: it is an aggregate over the stores that shared, with no shopper in it."""
    return erasure.store_rows_delete(
        store_id,
        {
            "training_runs": "recommendations_trainingrun",
            "network_slices": "recommendations_networkslice",
            "models": "recommendations_trainedmodel",
        },
    )
