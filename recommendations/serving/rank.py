"""A personal order of the products a storefront gives (a category page, search results)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import ApiError
from recommendations.engine.ranker import DEPTH
from recommendations.serving.for_user import personal_scores, second_stage, served_source, uses_ranker
from recommendations.serving.pipeline import Answer
from recommendations.serving.profile import history_get
from recommendations.serving.request import ServingRequest

MAX_PRODUCTS = 1000


def rank(request: ServingRequest, user_id: str, product_ids: Any) -> Answer:
    """Every given product that exists and is active, best first for this shopper."""
    if not isinstance(product_ids, list) or not product_ids or len(product_ids) > MAX_PRODUCTS:
        raise ApiError("invalid", f"product_ids must be a list of 1 to {MAX_PRODUCTS} product ids")
    product_ids = [int(pid) if isinstance(pid, float) and pid.is_integer() else pid for pid in product_ids]
    if not all(
        (isinstance(pid, str) and len(pid) <= 256 and "\x00" not in pid)
        or (isinstance(pid, int) and not isinstance(pid, bool))
        for pid in product_ids
    ):
        raise ApiError("invalid", "product_ids must be strings of at most 256 characters, without NUL")
    wanted = list(dict.fromkeys(str(pid) for pid in product_ids))
    found = request.catalog.internal_ids(wanted, active_only=True)
    unknown = [pid for pid in wanted if pid not in found]
    model = request.model
    scores, reason, personal = None, "kept in the given order", None
    source = "fallback:input order (no model yet)"
    if model is not None and request.strategy == "popularity":  # an experiment's control
        scores, reason, source = model.popularity, "popularity", f"trending:{model.source} (popularity)"
    elif model is not None:
        history = history_get(store=request.store, user_id=user_id, lookup=request.lookup)
        personal = personal_scores(
            request.settings, model, history, include_purchased=False, boosts=not uses_ranker(request)
        )
        if personal is None:
            scores, reason, source = model.popularity, "popularity", f"trending:{model.source} (unknown user)"
        else:
            full = model.parameter("popularity_weight") * model.popularity.astype(np.float32)
            full[personal.indices] += personal.values
            scores, reason, source = full, "personal score", served_source(request)
    given = [pid for pid in wanted if pid in found]
    indices = (
        model.products.positions(np.array([found[pid] for pid in given], dtype=np.int64))
        if model is not None and given
        else np.full(len(given), -1, np.int64)
    )
    item_scores = [
        float(scores[index]) if scores is not None and index >= 0 else 0.0 for index in indices.tolist()
    ]
    # the ranking stage orders the products the first stage scores (its best DEPTH); the rest follow
    by_ranker: dict[int, tuple[int, float]] = {}
    if model is not None and personal is not None and uses_ranker(request):
        known = np.flatnonzero(indices >= 0)
        ranked = second_stage(
            model, personal.sequence, indices[known], np.array(item_scores)[known], reason,
            session=personal.session,
        )  # fmt: skip
        ids, ranked_scores = ranked.window(0, min(DEPTH, len(ranked)))
        by_ranker = {
            pid: (rank_at, score)
            for rank_at, (pid, score) in enumerate(zip(ids.tolist(), ranked_scores.tolist(), strict=True))
        }
    items = []
    for position_in_input, (external_id, score) in enumerate(zip(given, item_scores, strict=True)):
        rank_at, score = by_ranker.get(found[external_id], (len(by_ranker), score))
        items.append((rank_at, -score, position_in_input, external_id, score, reason))
    items.sort()
    return Answer(
        source,
        [
            {"id": external_id, "score": round(score, 6), "reason": reason}
            for _, _, _, external_id, score, reason in items
        ],
        extra={"unknown_ids": unknown},
    )
