"""Reads of the recommendations app: the serving path. It reads only what training stored (the active
model's artifact, cached per process by model id) plus the user's recent events and the candidates'
catalog rows; nothing is trained on the request path. Every answer says which source served it."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import connection
from django.utils import timezone

from core import answer_cache
from core.errors import ApiError, NotFound
from core.params import query_bool, query_float, query_int, query_text
from events.models import EventType
from events.selectors import buy_again, recently_viewed, user_history, user_identities
from recommendations.artifacts import CATEGORY_SEPARATOR, artifact_load
from recommendations.engine.interactions import DEFAULT_EVENT_WEIGHTS, IdIndex
from recommendations.engine.recommender import (
    add_sparse,
    gather_rows,
    history_row,
    personal_scores_sparse,
    row_entries,
)
from recommendations.models import ModelKind, TrainedModel, TrainingRun
from tenants.models import Store, StoreSettings
from tenants.selectors import store_settings_get

HISTORY_LIMIT = 200
TOP_CANDIDATES = 5000
SESSION_BOOST = 2.0  # events of the current session count twice
RECENT_FOR_COMPLEMENTS = 20  # carts and purchases among the latest events pull in their complements
COMPLEMENT_WEIGHT = 0.5
CONTENT_WHEN_FEWER_THAN = 10  # collaborative neighbours; below this, related asks pgvector too
CONTENT_NEIGHBOURS = 50
CONTENT_WEIGHT = 0.5
MAX_LIMIT = 100


@dataclass
class ServingModel:
    model_id: int
    version: int
    parameters: dict[str, Any]
    products: IdIndex
    neighbours: sp.csr_matrix
    similar: sp.csr_matrix
    transitions: sp.csr_matrix
    together: sp.csr_matrix
    vectors: np.ndarray
    popularity: np.ndarray
    category_paths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    popularity_order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category_items: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        order = np.argsort(-self.popularity, kind="stable")
        self.popularity_order = order[self.popularity[order] > 0]
        # category level -> its items, so that a category's trending is a numpy mask, not SQL round trips
        members: dict[str, list[int]] = {}
        for index, path in enumerate(self.category_paths.tolist()):
            for level in path.split(CATEGORY_SEPARATOR) if path else ():
                members.setdefault(level, []).append(index)
        self.category_items = {level: np.array(items, dtype=np.int64) for level, items in members.items()}

    def trending_order(self, category: str | None) -> np.ndarray:
        if not category or not self.category_items:  # (an artifact without category paths: SQL filters)
            return self.popularity_order[:TOP_CANDIDATES]
        items = self.category_items.get(category)
        if items is None:
            return np.zeros(0, np.int64)
        return self.popularity_order[np.isin(self.popularity_order, items)][:TOP_CANDIDATES]

    @property
    def source(self) -> str:
        """Which model answers, and how the global one was blended in (its share of the neighbours)."""
        own = f"store-model:v{self.version}"
        global_version, share = self.parameters.get("global_version"), self.parameters.get("global_share")
        if global_version is None or share is None:
            return own
        how = self.parameters.get("global_share_chosen_by", "")
        return (
            f"blend:{own}+global-model:v{global_version} (global share {share:g}{', ' + how if how else ''})"
        )

    @classmethod
    def from_artifact(cls, model_id: int, version: int, parameters: dict, blob: bytes) -> ServingModel:
        arrays = artifact_load(blob)
        return cls(
            model_id=model_id, version=version, parameters=parameters,
            products=IdIndex(ids=np.asarray(arrays["product_ids"], dtype=np.int64)),
            neighbours=arrays["neighbours"], similar=arrays["similar"], transitions=arrays["transitions"],
            together=arrays["together"],
            vectors=np.asarray(arrays["vectors"], dtype=np.float32),
            popularity=np.asarray(arrays["popularity"]),
            category_paths=np.asarray(arrays.get("category_paths", np.zeros(0, dtype=str))),
        )  # fmt: skip


class _ModelCache:
    """Per-process cache of loaded models, keyed by model id: a new activation is a new id, so nothing
    needs invalidating; old entries age out."""

    def __init__(self, size: int = 16):
        self.size = size
        self.entries: OrderedDict[int, ServingModel] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, model_id: int) -> ServingModel | None:
        with self.lock:
            model = self.entries.get(model_id)
            if model is not None:
                self.entries.move_to_end(model_id)
            return model

    def put(self, model: ServingModel) -> None:
        with self.lock:
            self.entries[model.model_id] = model
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


model_cache = _ModelCache()


_active_by_store: dict[int, tuple[bytes, ServingModel | None]] = {}


def active_model_get(*, store: Store, kind: str = ModelKind.STORE) -> ServingModel | None:
    """The store's active model. No query when this process saw it under the store's current generation
    (read with the request's cache lookup; every activation bumps it)."""
    generation = answer_cache.request_generation.get()
    if generation is not None and generation[0] == store.id and kind == ModelKind.STORE:
        seen = _active_by_store.get(store.id)
        if seen is not None and seen[0] == generation[1]:
            return seen[1]
        model = _active_model_load(store, kind)
        if len(_active_by_store) > 10_000:
            _active_by_store.clear()
        _active_by_store[store.id] = (generation[1], model)
        return model
    return _active_model_load(store, kind)


def _active_model_load(store: Store, kind: str) -> ServingModel | None:
    row = (
        TrainedModel.objects.filter(store=store, kind=kind, is_active=True)
        .values_list("id", "version", "parameters")
        .first()
    )
    if row is None:
        return None
    model_id, version, parameters = row
    cached = model_cache.get(model_id)
    if cached is not None:
        return cached
    blob = TrainedModel.objects.filter(pk=model_id).values_list("artifact", flat=True).first()
    if blob is None:
        return None
    try:
        model = ServingModel.from_artifact(model_id, version, parameters, blob)
    except (ValueError, KeyError, OSError):
        return None  # a broken artifact falls back like a missing one
    model_cache.put(model)
    return model


# --- request options ----------------------------------------------------------------------------
@dataclass
class Options:
    limit: int = 10
    category: str | None = None
    brand: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None
    exclude: set[str] = field(default_factory=set)
    include_purchased: bool | None = None
    max_per_category: int | None = None
    diversity: float = 0.0  # maximal marginal relevance: 0 is off, 1 is all diversity
    settings: StoreSettings | None = None  # the store's, read once per request
    exclude_product_ids: set[int] = field(default_factory=set)  # internal ids (purchased items)


def options_from_query(query: Any, settings: StoreSettings) -> Options:
    merged = {**(settings.default_filters or {}), **(settings.diversity or {})}
    merged.update({key: query.get(key) for key in query})
    options = Options(settings=settings)
    options.limit = query_int(merged.get("limit"), "limit", low=1, high=MAX_LIMIT, default=10) or 10
    options.category = query_text(merged.get("category"), "category")
    options.brand = query_text(merged.get("brand"), "brand")
    options.min_price = _price(merged.get("min_price"), "min_price")
    options.max_price = _price(merged.get("max_price"), "max_price")
    options.in_stock = query_bool(merged.get("in_stock"), "in_stock")
    options.include_purchased = query_bool(merged.get("include_purchased"), "include_purchased")
    exclude = merged.get("exclude") or ""
    if isinstance(exclude, list):
        exclude = ",".join(str(item) for item in exclude)
    options.exclude = {item for item in str(exclude).split(",") if item}
    options.max_per_category = query_int(
        merged.get("max_per_category"), "max_per_category", low=1, high=MAX_LIMIT, default=None
    )
    options.diversity = (
        query_float(merged.get("diversity"), "diversity", low=0.0, high=1.0, default=0.0) or 0.0
    )
    return options


def _price(raw: Any, name: str) -> Decimal | None:
    value = query_float(raw, name, low=0.0, high=1e10, default=None)
    return None if value is None else Decimal(str(value))


# --- catalog reads --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    product_id: int  # internal id
    score: float
    reason: str


class Ranked:
    """Candidates in rank order as arrays; Candidate objects are made only for the slices looked at."""

    def __init__(
        self,
        product_ids: np.ndarray,
        scores: np.ndarray,
        default_reason: str,
        reasons: dict[int, str] | None = None,
    ):
        self.product_ids = np.asarray(product_ids, dtype=np.int64)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.default_reason = default_reason
        self.reasons = reasons or {}

    @classmethod
    def from_dict(cls, scores: dict[int, float], reasons: dict[int, str], default_reason: str) -> Ranked:
        ordered = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
        return cls(
            np.array([pid for pid, _ in ordered], dtype=np.int64),
            np.array([score for _, score in ordered]),
            default_reason,
            reasons,
        )

    def __len__(self) -> int:
        return len(self.product_ids)

    def __getitem__(self, window: slice) -> list[Candidate]:
        ids, scores = self.product_ids[window].tolist(), self.scores[window].tolist()
        return [
            Candidate(pid, score, self.reasons.get(pid, self.default_reason))
            for pid, score in zip(ids, scores, strict=True)
        ]


@dataclass(frozen=True)
class Hydrated:
    product_id: int
    external_id: str
    category: str
    brand: str
    score: float
    reason: str


def catalog_filters(options: Options, table: str = "") -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for the request's catalog filters, on `table.` columns."""
    prefix = f"{table}." if table else ""
    clauses: list[str] = []
    params: list[Any] = []
    for wanted, condition in (
        (options.category, f"{prefix}category_path @> ARRAY[%s]::varchar[]"),
        (options.brand, f"{prefix}brand = %s"),
        (options.min_price, f"{prefix}price >= %s"),
        (options.max_price, f"{prefix}price <= %s"),
        (options.in_stock, f"{prefix}in_stock = %s"),
    ):
        if wanted is not None and wanted != "":
            clauses.append(condition)
            params.append(wanted)
    return clauses, params


def _hydrate(store: Store, candidates: list[Candidate], options: Options) -> list[Hydrated]:
    """The candidates that are active and pass the filters, in candidate order (one query)."""
    if not candidates:
        return []
    clauses = ["store_id = %s", "id = ANY(%s)", "is_active"]
    params: list[Any] = [store.id, [c.product_id for c in candidates]]
    filter_sql, filter_params = catalog_filters(options)
    clauses += filter_sql
    params += filter_params
    if options.exclude:
        clauses.append("NOT (external_id = ANY(%s))")
        params.append(list(options.exclude))
    if options.exclude_product_ids:
        clauses.append("NOT (id = ANY(%s))")
        params.append(sorted(options.exclude_product_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, external_id, coalesce(category_path[1], ''), brand FROM catalog_product "
            f"WHERE {' AND '.join(clauses)}",
            params,
        )
        rows = {row[0]: row for row in cursor.fetchall()}
    out = []
    for candidate in candidates:
        row = rows.get(candidate.product_id)
        if row is not None:
            out.append(Hydrated(row[0], row[1], row[2], row[3], candidate.score, candidate.reason))
    return out


def _product_internal_id(store: Store, external_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM catalog_product WHERE store_id = %s AND external_id = %s", [store.id, external_id]
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("no such product")
    return row[0]


# --- the common tail: filters, boosts, diversity, pins ---------------------------------------------
def _finish(
    *,
    store: Store,
    settings: StoreSettings,
    surface: str,
    ranked: Ranked,
    options: Options,
    model: ServingModel | None,
    source: str,
    explain: Any = None,
) -> dict[str, Any]:
    wanted = options.limit
    picked: list[Hydrated] = []
    chunk = max(wanted * 5, 50)
    start = 0
    # narrow filters or a per-category cap may drop most candidates: look further down the list, a
    # bounded number of times (each look is one query)
    for _ in range(4):
        picked += _hydrate(store, ranked[start : start + chunk], options)
        start += chunk
        if len(_cap(picked, options.max_per_category)) >= wanted * 3 or start >= len(ranked):
            break
        chunk *= 4
    picked = _boost(picked, settings.boosts or {})
    picked = _diversify(picked, options, model, wanted)
    picked = _pin(store, settings.pins or {}, surface, picked, options)[:wanted]
    if explain is not None:  # reasons worked out for the few items answered, not every candidate
        reasons = explain([item.product_id for item in picked])
        picked = [
            Hydrated(
                i.product_id, i.external_id, i.category, i.brand, i.score, reasons.get(i.product_id, i.reason)
            )
            for i in picked
        ]
    return {
        "recommendation_id": uuid.uuid4().hex,
        "source": source,
        "items": [
            {"id": item.external_id, "score": round(float(item.score), 6), "reason": item.reason}
            for item in picked
        ],
    }


def _boost(items: list[Hydrated], boosts: dict[str, Any]) -> list[Hydrated]:
    """Merchant boosts multiply scores: {"brand": {"Acme": 1.5}, "category": {...}, "product": {...}}."""
    if not boosts or not items:
        return items
    by_brand, by_category, by_product = (
        boosts.get("brand", {}),
        boosts.get("category", {}),
        boosts.get("product", {}),
    )

    def factor(item: Hydrated) -> float:
        return (
            float(by_brand.get(item.brand, 1.0))
            * float(by_category.get(item.category, 1.0))
            * float(by_product.get(item.external_id, 1.0))
        )

    boosted = [
        Hydrated(i.product_id, i.external_id, i.category, i.brand, i.score * factor(i), i.reason)
        for i in items
    ]
    return sorted(boosted, key=lambda item: -item.score)


def _cap(items: list[Hydrated], per_category: int | None) -> list[Hydrated]:
    if not per_category:
        return items
    counts: dict[str, int] = {}
    capped = []
    for item in items:
        if counts.get(item.category, 0) < per_category:
            capped.append(item)
            counts[item.category] = counts.get(item.category, 0) + 1
    return capped


def _diversify(
    items: list[Hydrated], options: Options, model: ServingModel | None, wanted: int
) -> list[Hydrated]:
    items = _cap(items, options.max_per_category)
    if options.diversity <= 0 or model is None or len(items) <= 1:
        return items
    # maximal marginal relevance over the content vectors
    positions = model.products.positions(np.array([item.product_id for item in items]))
    vectors = np.where(positions[:, None] >= 0, model.vectors[np.maximum(positions, 0)], 0.0)
    relevance = np.array([item.score for item in items], dtype=np.float64)
    relevance = relevance / (np.abs(relevance).max() or 1.0)
    lam = options.diversity
    chosen: list[int] = []
    remaining = list(range(len(items)))
    while remaining and len(chosen) < wanted:
        if chosen:
            redundancy = (vectors[remaining] @ vectors[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(remaining))
        best = int(np.argmax((1 - lam) * relevance[remaining] - lam * redundancy))
        chosen.append(remaining.pop(best))
    return [items[i] for i in chosen]


def _pin(
    store: Store, pins: dict[str, Any], surface: str, items: list[Hydrated], options: Options
) -> list[Hydrated]:
    """Merchant pins: {"<surface>" or "*": [{"id": "sku", "position": 0}, ...]}; pinned products must be
    active and pass the request's filters."""
    wanted = [pin for pin in (pins.get(surface) or []) + (pins.get("*") or []) if isinstance(pin, dict)]
    if not wanted:
        return items
    external = [str(pin.get("id")) for pin in wanted]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM catalog_product WHERE store_id = %s AND external_id = ANY(%s)",
            [store.id, external],
        )
        internal_ids = [row[0] for row in cursor.fetchall()]
    eligible = {
        h.external_id: h
        for h in _hydrate(
            store, [Candidate(pid, 0.0, "pinned by the merchant") for pid in internal_ids], options
        )
    }
    out = [item for item in items if item.external_id not in eligible]
    for pin in sorted(wanted, key=lambda pin: int(pin.get("position", 0))):
        item = eligible.pop(str(pin.get("id")), None)
        if item is None:
            continue
        top = out[0].score if out else 1.0
        pinned = Hydrated(
            item.product_id, item.external_id, item.category, item.brand, top, "pinned by the merchant"
        )
        out.insert(min(max(int(pin.get("position", 0)), 0), len(out)), pinned)
    return out


# --- surfaces -----------------------------------------------------------------------------------
def event_type_weights(overrides: dict[str, Any] | None) -> np.ndarray:
    """The weight of each event type, indexed by its stored value: the defaults with the store's
    overrides (StoreSettings.event_weights). Training, global training and serving all read it."""
    merged = {**DEFAULT_EVENT_WEIGHTS, **(overrides or {})}
    weights = np.ones(max(EventType.values) + 1, dtype=np.float32)
    for value, label in EventType.choices:
        weights[value] = float(merged.get(label, 1.0))
    return weights


def _user_history(store: Store, user_id: str) -> list[tuple[int, int, str, datetime, str]]:
    """The user's latest events across their aliases, oldest first, as stored right now (one query)."""
    return user_history(store=store, user_id=user_id, limit=HISTORY_LIMIT)


def trending(*, store: Store, options: Options) -> dict[str, Any]:
    settings = options.settings or store_settings_get(store=store)
    model = active_model_get(store=store)
    ranked, source = _trending_candidates(store, model, options)
    return _finish(
        store=store,
        settings=settings,
        surface="trending",
        ranked=ranked,
        options=options,
        model=model,
        source=source,
    )


def _trending_candidates(store: Store, model: ServingModel | None, options: Options) -> tuple[Ranked, str]:
    reason = f"trending in {options.category}" if options.category else "trending now"
    if model is not None and model.popularity_order.size:
        order = model.trending_order(options.category)
        return Ranked(model.products.ids[order], model.popularity[order], reason), f"trending:{model.source}"
    # no model yet: the last 30 days of events, counted in the database
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT product_id, count(*) FROM events_event WHERE store_id = %s "
            "AND timestamp > now() - interval '30 days' "
            "GROUP BY product_id ORDER BY count(*) DESC LIMIT 5000",
            [store.id],
        )
        rows = cursor.fetchall()
    top = rows[0][1] if rows else 1
    ranked = Ranked(
        np.array([r[0] for r in rows], np.int64), np.array([r[1] / top for r in rows]), "popular now"
    )
    return ranked, "fallback:popularity"


def for_user(*, store: Store, user_id: str, options: Options) -> dict[str, Any]:
    settings = options.settings or store_settings_get(store=store)
    model = active_model_get(store=store)
    history = _user_history(store, user_id)
    include_purchased = (
        settings.include_purchased if options.include_purchased is None else options.include_purchased
    )
    purchased = {event[0] for event in history if event[1] == EventType.PURCHASE}
    if not include_purchased and purchased:
        options.exclude_product_ids |= purchased
    if model is None or not history:
        ranked, source = _trending_candidates(store, model, options)
        why = "no model yet" if model is None else "unknown user"
        return _finish(store=store, settings=settings, surface="for_user", ranked=ranked, options=options,
                       model=model, source=f"{source} ({why})")  # fmt: skip
    personal = _personal_scores(settings, model, history, include_purchased=include_purchased)
    if personal is None:
        ranked, source = _trending_candidates(store, model, options)
        return _finish(store=store, settings=settings, surface="for_user", ranked=ranked, options=options,
                       model=model, source=f"{source} (history unknown to the model)")  # fmt: skip
    scores, row = personal
    names = {event[0]: event[4] for event in history}
    ranked = _ranked_personal(model, scores, "popular with shoppers like you")
    return _finish(store=store, settings=settings, surface="for_user", ranked=ranked, options=options,
                   model=model, source=model.source,
                   explain=lambda answered: _because(model, row, answered, names))  # fmt: skip


def recently_viewed_answer(*, store: Store, user_id: str, limit: int) -> dict[str, Any]:
    identities = user_identities(store=store, user_id=user_id)
    viewed = recently_viewed(store=store, identities=identities, limit=limit)
    items = [
        {
            "id": item["id"],
            "score": round(1.0 / (rank + 1), 6),
            "reason": f"viewed {item['last_seen']:%Y-%m-%d %H:%M}",
        }
        for rank, item in enumerate(viewed)
    ]
    return {"recommendation_id": uuid.uuid4().hex, "source": "history:recently-viewed", "items": items}


def buy_again_answer(*, store: Store, user_id: str, limit: int) -> dict[str, Any]:
    identities = user_identities(store=store, user_id=user_id)
    due = buy_again(store=store, identities=identities, limit=limit, now=timezone.now())
    items = [
        {
            "id": item["id"],
            "score": item["score"],
            "reason": f"you buy it about every {item['cycle_days']:g} days",
        }
        for item in due
    ]
    return {"recommendation_id": uuid.uuid4().hex, "source": "history:buy-again", "items": items}


def _personal_scores(
    settings: StoreSettings, model: ServingModel, history: list[tuple], *, include_purchased: bool
) -> tuple[sp.csr_matrix, sp.csr_matrix] | None:
    """The personal part of every item's score for this history, sparse (the model's own scoring rule:
    add `popularity_weight * popularity` for the full score), and the history row; None when the model
    knows none of the history's products."""
    if not history:
        return None
    positions = model.products.positions(np.array([event[0] for event in history], dtype=np.int64))
    event_weights = event_type_weights(settings.event_weights)[
        np.array([event[1] for event in history], dtype=np.int64)
    ]
    # the shopper's current session (that of the latest event) weighs more than older visits
    current_session = history[-1][2]
    if current_session:
        event_weights *= np.array(
            [SESSION_BOOST if event[2] == current_session else 1.0 for event in history]
        )
    known = (positions >= 0) & (event_weights > 0)
    if not known.any():
        return None
    parameters = model.parameters
    row = history_row(
        positions[known], event_weights[known], n_items=len(model.products),
        decay=float(parameters.get("history_decay", 0.5)),
    )  # fmt: skip
    personal = personal_scores_sparse(
        row, model.neighbours,
        repeat_weight=float(parameters.get("repeat_weight", 0.0)) if include_purchased else 0.0,
    )  # fmt: skip
    # what is in the cart (or was just bought) steers its complements into the answer
    recent = history[-RECENT_FOR_COMPLEMENTS:]
    carted = [
        int(position)
        for event, position in zip(recent, positions[-len(recent) :], strict=True)
        if event[1] in (EventType.ADD_TO_CART, EventType.PURCHASE) and position >= 0
    ]
    if carted:
        indices, values = gather_rows(model.together, np.array(carted), np.ones(len(carted), np.float32))
        if values.size and values.max() > 0:
            indices, values = add_sparse(
                (personal.indices, personal.data), (indices, (COMPLEMENT_WEIGHT / values.max()) * values)
            )
            personal = sp.csr_matrix((values, indices, [0, indices.size]), shape=personal.shape)
    return personal, row


def _popularity_weight(model: ServingModel) -> float:
    return float(model.parameters.get("popularity_weight", 0.01))


def _ranked_personal(model: ServingModel, personal: sp.csr_matrix, default_reason: str) -> Ranked:
    """The best TOP_CANDIDATES items by full score. Only items with a personal score or among the
    TOP_CANDIDATES most popular can be there (the rest score popularity alone, below those), so only they
    are scored: a few thousand instead of the whole catalog."""
    personal.sum_duplicates()
    chosen = np.zeros(len(model.products), dtype=bool)  # a mask beats a sorted union here
    chosen[model.popularity_order[:TOP_CANDIDATES]] = True
    chosen[personal.indices] = True
    candidates = np.flatnonzero(chosen)
    scores = _popularity_weight(model) * model.popularity[candidates].astype(np.float32)
    scores[np.searchsorted(candidates, personal.indices)] += personal.data
    keep = np.isfinite(scores) & (scores > 0)
    candidates, scores = candidates[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:TOP_CANDIDATES]
    return Ranked(model.products.ids[candidates[order]], scores[order], default_reason)


def _because(
    model: ServingModel, row: sp.csr_matrix, product_ids: list[int], names: dict[int, str]
) -> dict[int, str]:
    """For the items answered, the history item that contributed most: "because you showed interest in X"."""
    history_positions = row.indices
    positions = model.products.positions(np.array(product_ids, dtype=np.int64))
    known = positions >= 0
    if history_positions.size == 0 or not known.any():
        return {}
    # a few hundred history rows by a few answered columns: small and dense
    answered_positions = positions[known]
    contributions = np.zeros((history_positions.size, answered_positions.size), dtype=np.float32)
    owner, columns, values = row_entries(model.neighbours, history_positions)
    order = np.argsort(answered_positions)
    at = np.minimum(np.searchsorted(answered_positions[order], columns), answered_positions.size - 1)
    hit = answered_positions[order][at] == columns
    contributions[owner[hit], order[at[hit]]] = values[hit] * row.data[owner[hit]]
    anchors = history_positions[contributions.argmax(axis=0)]
    has_anchor = contributions.max(axis=0) > 0
    out = {}
    answered = np.array(product_ids, dtype=np.int64)[known].tolist()
    for product_id, anchor, ok in zip(answered, anchors.tolist(), has_anchor.tolist(), strict=True):
        if ok:
            name = names.get(int(model.products.ids[anchor]), "a product")
            out[product_id] = f"because you showed interest in {name}"
        elif product_id in set(model.products.ids[history_positions].tolist()):
            out[product_id] = "you showed interest before"
    return out


def _anchor(
    store: Store, external_id: str, options: Options
) -> tuple[StoreSettings, int, ServingModel | None, int]:
    """For a product's surfaces: settings, the product's internal id (404 when not this store's), the
    active model and the product's place in it (-1 when the model does not know it)."""
    settings = options.settings or store_settings_get(store=store)
    product_id = _product_internal_id(store, external_id)
    options.exclude.add(external_id)  # never recommend a product to itself
    model = active_model_get(store=store)
    position = int(model.products.positions(np.array([product_id]))[0]) if model else -1
    return settings, product_id, model, position


def related(*, store: Store, external_id: str, options: Options) -> dict[str, Any]:
    settings, product_id, model, position = _anchor(store, external_id, options)
    if model is None or position < 0:
        return _category_fallback(store, settings, product_id, model, options, "related")
    scores: dict[int, float] = {}  # by internal product id
    reasons: dict[int, str] = {}
    cf_items, cf_scores = _row(model.similar, position)
    if len(cf_scores):
        for item, score in zip(cf_items.tolist(), (cf_scores / cf_scores.max()).tolist(), strict=True):
            product = int(model.products.ids[item])
            scores[product] = score
            reasons[product] = f"shoppers who viewed {external_id} also viewed this"
    if len(cf_items) < max(options.limit, CONTENT_WHEN_FEWER_THAN):
        # few collaborative neighbours (a cold product): its nearest products by content, from pgvector
        for product, similarity in _content_neighbours(store, product_id, CONTENT_NEIGHBOURS):
            scores[product] = scores.get(product, 0.0) + CONTENT_WEIGHT * similarity
            reasons.setdefault(product, f"similar to {external_id}")
    if not scores:
        return _category_fallback(store, settings, product_id, model, options, "related")
    ranked = Ranked.from_dict(scores, reasons, f"similar to {external_id}")
    return _finish(store=store, settings=settings, surface="related", ranked=ranked, options=options,
                   model=model, source=model.source)  # fmt: skip


def _content_neighbours(store: Store, product_id: int, limit: int) -> list[tuple[int, float]]:
    """Exact cosine search over the store's products in the product's top category (two queries: the
    category first, so that the GIN index on category_path bounds the scan)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT category_path[1], content_embedding IS NOT NULL FROM catalog_product "
            "WHERE store_id = %s AND id = %s",
            [store.id, product_id],
        )
        row = cursor.fetchone()
        if row is None or not row[1]:
            return []
        category = row[0]
        in_category = "AND p.category_path @> ARRAY[%s]::varchar[] " if category else ""
        cursor.execute(
            "WITH source AS "
            "(SELECT content_embedding AS v FROM catalog_product WHERE store_id = %s AND id = %s) "
            "SELECT p.id, 1 - (p.content_embedding <=> source.v) FROM catalog_product AS p, source "
            "WHERE p.store_id = %s AND p.is_active AND p.id <> %s AND p.content_embedding IS NOT NULL "
            + in_category
            + "ORDER BY p.content_embedding <=> source.v LIMIT %s",
            [store.id, product_id, store.id, product_id, *([category] if category else []), limit],
        )
        return [(pid, float(similarity)) for pid, similarity in cursor.fetchall() if similarity > 0]


def complementary(*, store: Store, external_id: str, options: Options) -> dict[str, Any]:
    settings, product_id, model, position = _anchor(store, external_id, options)
    if model is None or position < 0:
        return _category_fallback(store, settings, product_id, model, options, "complementary")
    scores: dict[int, float] = {}
    reasons: dict[int, str] = {}
    together_items, together_scores = _row(model.together, position)
    if len(together_scores):
        for item, score in zip(
            together_items.tolist(), (together_scores / together_scores.max()).tolist(), strict=True
        ):
            scores[item] = 1.0 + score  # bought together outranks browsed next
            reasons[item] = f"bought together with {external_id}"
    next_items, next_scores = _row(model.transitions, position)
    for item, score in zip(next_items.tolist(), next_scores.tolist(), strict=True):
        if item not in scores:
            scores[item] = score
            reasons[item] = f"often chosen after {external_id}"
    if not scores:
        return _category_fallback(store, settings, product_id, model, options, "complementary")
    source = model.source if len(together_scores) else f"{model.source} (sequences, no co-purchases yet)"
    ranked = Ranked.from_dict(
        {int(model.products.ids[i]): v for i, v in scores.items()},
        {int(model.products.ids[i]): v for i, v in reasons.items()},
        f"often chosen with {external_id}",
    )
    return _finish(
        store=store,
        settings=settings,
        surface="complementary",
        ranked=ranked,
        options=options,
        model=model,
        source=source,
    )


def _row(matrix: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    if row >= matrix.shape[0]:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return matrix.indices[start:end], matrix.data[start:end]


def _category_fallback(
    store: Store,
    settings: StoreSettings,
    product_id: int,
    model: ServingModel | None,
    options: Options,
    surface: str,
) -> dict[str, Any]:
    """A product the model does not know yet (added after training): trending in its category."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT category_path[1] FROM catalog_product WHERE id = %s AND store_id = %s",
            [product_id, store.id],
        )
        row = cursor.fetchone()
    category = row[0] if row else None
    if category and not options.category:
        options.category = category
    ranked, source = _trending_candidates(store, model, options)
    return _finish(store=store, settings=settings, surface=surface, ranked=ranked, options=options,
                   model=model,
                   source=f"{source} (product not in the model: its category's trending)")  # fmt: skip


def rank(*, store: Store, user_id: str, product_ids: Any) -> dict[str, Any]:
    """A personal order of the given products (all of them that exist and are active)."""
    if not isinstance(product_ids, list) or not product_ids or len(product_ids) > 1000:
        raise ApiError("invalid", "product_ids must be a list of 1 to 1000 product ids")
    if not all(isinstance(pid, str | int) and not isinstance(pid, bool) for pid in product_ids):
        raise ApiError("invalid", "product_ids must be strings")
    wanted = list(dict.fromkeys(str(pid) for pid in product_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT external_id, id FROM catalog_product "
            "WHERE store_id = %s AND external_id = ANY(%s) AND is_active",
            [store.id, wanted],
        )
        found = dict(cursor.fetchall())
    unknown = [pid for pid in wanted if pid not in found]
    settings = store_settings_get(store=store)
    model = active_model_get(store=store)
    scores, reason = None, "kept in the given order"
    source = "fallback:input order (no model yet)"
    if model is not None:
        personal = _personal_scores(settings, model, _user_history(store, user_id), include_purchased=False)
        if personal is None:
            scores, reason, source = model.popularity, "popularity", f"trending:{model.source} (unknown user)"
        else:
            full = personal[0].toarray().ravel() + _popularity_weight(model) * model.popularity
            scores, reason, source = full, "personal score", model.source
    items = []
    for position_in_input, external_id in enumerate(pid for pid in wanted if pid in found):
        score = 0.0
        if scores is not None:
            index = int(model.products.positions(np.array([found[external_id]]))[0])  # type: ignore[union-attr]
            score = float(scores[index]) if index >= 0 else 0.0
        items.append((-score, position_in_input, external_id, score, reason))
    items.sort()
    return {
        "recommendation_id": uuid.uuid4().hex,
        "source": source,
        "items": [
            {"id": external_id, "score": round(score, 6), "reason": reason}
            for _, _, external_id, score, reason in items
        ],
        "unknown_ids": unknown,
    }


def training_run_get(*, store: Store, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.filter(store=store, pk=run_id).select_related("model").first()
    if run is None:
        raise NotFound("no such training run")
    return run


def training_run_to_dict(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "progress": round(run.progress, 3),
        "message": run.message,
        "trigger": run.trigger,
        "metrics": run.metrics,
        "parameters": run.parameters,
        "model_version": run.model.version if run.model else None,
        "model_active": bool(run.model and run.model.is_active),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def trained_model_list(*, store: Store) -> list[dict[str, Any]]:
    rows = TrainedModel.objects.filter(store=store).order_by("-version").values(
        "version", "kind", "is_active", "metrics", "parameters", "n_items", "n_users", "n_events",
        "artifact_bytes", "created_at", "activated_at",
    )  # fmt: skip
    return list(rows)


def training_run_list(*, store: Store, limit: int = 20) -> list[TrainingRun]:
    return list(TrainingRun.objects.filter(store=store).order_by("-created_at")[:limit])
