"""The common tail of every surface: candidates in rank order, then the catalog's filters, merchant
boosts, diversity, merchant pins, and the rendered answer. Filters read the catalog's arrays (the loaded
catalog, or the rows SQL gave for these candidates), so both ways filter alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

from core.ids import time_ordered_id
from recommendations.engine.interactions import IdIndex
from recommendations.serving.options import Options
from recommendations.serving.state import CatalogSource, LoadedCatalog, ServingModel
from tenants.models import StoreSettings


class Ranked:
    """Candidates in rank order: score descending, ties by `tiebreak` ascending (by default the order
    given). Given unsorted, only the prefix a request looks at is ordered (a partition, then a sort of that
    prefix: the order a full sort gives). Read in windows of arrays; items are made only of what is kept."""

    def __init__(
        self,
        product_ids: np.ndarray,
        scores: np.ndarray,
        default_reason: str,
        reasons: dict[int, str] | None = None,
        *,
        presorted: bool = True,
        at_most: int | None = None,
        tiebreak: np.ndarray | None = None,
        ordered: int = 0,
    ):
        """`ordered` (given unsorted): how many leading candidates are already in rank order, every one
        ahead of all the rest (a ranking stage's list, then what it did not order)."""
        self.product_ids = np.asarray(product_ids, dtype=np.int64)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.default_reason = default_reason
        self.reasons = reasons or {}
        self.tiebreak = np.arange(len(self.product_ids)) if tiebreak is None else np.asarray(tiebreak)
        self._ordered = len(self.product_ids) if presorted else min(ordered, len(self.product_ids))
        self._length = len(self.product_ids) if at_most is None else min(at_most, len(self.product_ids))

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
        return self._length

    def _order_prefix(self, end: int) -> None:
        """Put the best `end` candidates first, in order; the rest stay behind them, unordered."""
        end = min(end, self._length)
        if end <= self._ordered:
            return
        begin = self._ordered
        rest_scores = self.scores[begin:]
        rest_ties = self.tiebreak[begin:]
        wanted = end - begin
        if wanted < rest_scores.size:
            # every score above the wanted-th best, then the ties at it that come first
            threshold = -np.partition(-rest_scores, wanted - 1)[wanted - 1]
            above = np.flatnonzero(rest_scores > threshold)
            ties = np.flatnonzero(rest_scores == threshold)
            ties = ties[np.argsort(rest_ties[ties], kind="stable")][: wanted - above.size]
            chosen = np.concatenate([above, ties])
        else:
            chosen = np.arange(rest_scores.size)
        chosen = chosen[np.lexsort((rest_ties[chosen], -rest_scores[chosen]))]
        others = np.ones(rest_scores.size, dtype=bool)
        others[chosen] = False
        order = begin + np.concatenate([chosen, np.flatnonzero(others)])
        self.product_ids[begin:] = self.product_ids[order]
        self.scores[begin:] = self.scores[order]
        self.tiebreak[begin:] = self.tiebreak[order]
        self._ordered = end

    def window(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(product ids, scores) of ranks start to stop."""
        stop = min(stop, self._length)
        self._order_prefix(stop)
        return self.product_ids[start:stop], self.scores[start:stop]

    def reason(self, product_id: int) -> str:
        return self.reasons.get(product_id, self.default_reason)


class Hydrated(NamedTuple):  # (a tuple: a computed answer makes a few dozen)
    product_id: int
    external_id: str
    category: str
    brand: str
    score: float
    reason: str


@dataclass
class Answer:
    """A surface's answer before it is rendered: its source, its items and any extra top-level fields
    (rank's `unknown_ids`). The recommendation id is added at rendering, once per answer served."""

    source: str
    items: list[dict[str, Any]]
    extra: dict[str, Any] | None = None


def answer_body(answer: Answer) -> bytes:
    """The answer as JSON without its recommendation id: what the answer cache keeps."""
    return orjson.dumps({"source": answer.source, "items": answer.items, **(answer.extra or {})})


def rendered(body: bytes, recommendation_id: str | None = None) -> bytes:
    """The JSON served: `recommendation_id` first, then the body's fields."""
    head = b'{"recommendation_id":"' + (recommendation_id or time_ordered_id()).encode() + b'"'
    return head + (b"," + body[1:] if len(body) > 2 else b"}")


def answer_dict(answer: Answer) -> dict[str, Any]:
    """The served answer as a dict (for callers that embed it)."""
    return orjson.loads(rendered(answer_body(answer)))


def eligible(catalog: LoadedCatalog, positions: np.ndarray, options: Options) -> np.ndarray:
    """Which of these catalog positions (-1: not in the catalog) may be answered under the options."""
    known = positions >= 0
    at = np.where(known, positions, 0)
    keep = known & catalog.active[at]
    if options.category:
        keep &= catalog.in_category(options.category, at)
    if options.brand:
        code = catalog.brand_index.get(options.brand)
        keep &= catalog.brand_codes[at] == (-1 if code is None else code)
    if options.min_price is not None:
        keep &= catalog.price[at] >= float(options.min_price)
    if options.max_price is not None:
        keep &= catalog.price[at] <= float(options.max_price)
    if options.in_stock is not None:
        keep &= catalog.in_stock[at] == options.in_stock
    if options.exclude_product_ids:
        excluded = IdIndex(ids=np.unique(np.fromiter(options.exclude_product_ids, np.int64)))
        keep &= excluded.positions(catalog.ids[at]) < 0
    if options.exclude:
        keep &= np.fromiter(
            (catalog.external_ids[p] not in options.exclude for p in at.tolist()), bool, len(at)
        )
    return keep


def hydrate(
    source: CatalogSource,
    ids: np.ndarray,
    scores: np.ndarray,
    reason: Callable[[int], str],
    options: Options,
    at_most: int | None = None,
) -> list[Hydrated]:
    """The candidates that are active and pass the filters, in candidate order (the first `at_most`)."""
    if not len(ids):
        return []
    catalog = source.covering(ids)
    positions = catalog.positions(ids)
    kept = np.flatnonzero(eligible(catalog, positions, options))[:at_most]
    out = []
    for product_id, position, score in zip(
        ids[kept].tolist(), positions[kept].tolist(), scores[kept].tolist(), strict=True
    ):
        out.append(
            Hydrated(product_id, catalog.external_ids[position], catalog.top_category[position],
                     catalog.brands_of(position), score, reason(product_id))
        )  # fmt: skip
    return out


def finish(
    *,
    catalog: CatalogSource,
    settings: StoreSettings,
    surface: str,
    ranked: Ranked,
    options: Options,
    model: ServingModel | None,
    source: str,
    explain: Callable[[list[int]], dict[int, str]] | None = None,
) -> Answer:
    wanted = options.limit
    picked: list[Hydrated] = []
    chunk = max(wanted * 5, 50)
    start = 0
    # without boosts, a cap, diversity or pins the answer is the first `wanted` eligible candidates: the
    # rest of a chunk need not be made into items
    plain = not (settings.boosts or options.max_per_category or options.diversity > 0 or settings.pins)
    # narrow filters or a per-category cap may drop most candidates: look further down the list, a
    # bounded number of times
    for _ in range(4):
        at_most = wanted - len(picked) if plain else None
        ids, scores = ranked.window(start, start + chunk)
        picked += hydrate(catalog, ids, scores, ranked.reason, options, at_most)
        start += chunk
        if plain and len(picked) >= wanted:
            break
        if len(_cap(picked, options.max_per_category)) >= wanted * 3 or start >= len(ranked):
            break
        chunk *= 4
    picked = _boost(picked, settings.boosts or {})
    picked = _diversify(picked, options, model, wanted)
    picked = _pin(catalog, settings.pins or {}, surface, picked, options)[:wanted]
    if explain is not None:  # reasons worked out for the few items answered, not every candidate
        reasons = explain([item.product_id for item in picked])
        picked = [
            Hydrated(
                i.product_id, i.external_id, i.category, i.brand, i.score, reasons.get(i.product_id, i.reason)
            )
            for i in picked
        ]
    return Answer(
        source,
        [
            {"id": item.external_id, "score": round(float(item.score), 6), "reason": item.reason}
            for item in picked
        ],
    )


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

    boosted = [item._replace(score=item.score * factor(item)) for item in items]
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
    rows = np.asarray(model.vectors[np.maximum(positions, 0)], dtype=np.float32)
    vectors = np.where(positions[:, None] >= 0, rows, np.float32(0.0))
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
    catalog: CatalogSource, pins: dict[str, Any], surface: str, items: list[Hydrated], options: Options
) -> list[Hydrated]:
    """Merchant pins: {"<surface>" or "*": [{"id": "sku", "position": 0}, ...]}; pinned products must be
    active and pass the request's filters."""
    wanted = [pin for pin in (pins.get(surface) or []) + (pins.get("*") or []) if isinstance(pin, dict)]
    if not wanted:
        return items
    internal_ids = catalog.internal_ids([str(pin.get("id")) for pin in wanted])
    pinned_ids = np.fromiter(internal_ids.values(), np.int64, len(internal_ids))
    eligible_pins = {
        h.external_id: h
        for h in hydrate(
            catalog, pinned_ids, np.zeros(pinned_ids.size), lambda _: "pinned by the merchant", options
        )
    }
    out = [item for item in items if item.external_id not in eligible_pins]
    for pin in sorted(wanted, key=lambda pin: int(pin.get("position", 0))):
        item = eligible_pins.pop(str(pin.get("id")), None)
        if item is None:
            continue
        top = out[0].score if out else 1.0
        pinned = item._replace(score=top, reason="pinned by the merchant")
        out.insert(min(max(int(pin.get("position", 0)), 0), len(out)), pinned)
    return out
