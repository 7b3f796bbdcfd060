"""A personal order of the products a storefront gives (a category page, search results)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import ApiError
from recommendations.serving.for_user import personal_scores
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
    scores, reason = None, "kept in the given order"
    source = "fallback:input order (no model yet)"
    if model is not None and request.strategy == "popularity":  # an experiment's control
        scores, reason, source = model.popularity, "popularity", f"trending:{model.source} (popularity)"
    elif model is not None:
        history = history_get(store=request.store, user_id=user_id, lookup=request.lookup)
        personal = personal_scores(request.settings, model, history, include_purchased=False)
        if personal is None:
            scores, reason, source = model.popularity, "popularity", f"trending:{model.source} (unknown user)"
        else:
            full = model.parameter("popularity_weight") * model.popularity.astype(np.float32)
            full[personal.indices] += personal.values
            scores, reason, source = full, "personal score", model.source
    items = []
    for position_in_input, external_id in enumerate(pid for pid in wanted if pid in found):
        score = 0.0
        if scores is not None and model is not None:
            index = int(model.products.positions(np.array([found[external_id]]))[0])
            score = float(scores[index]) if index >= 0 else 0.0
        items.append((-score, position_in_input, external_id, score, reason))
    items.sort()
    return Answer(
        source,
        [
            {"id": external_id, "score": round(score, 6), "reason": reason}
            for _, _, external_id, score, reason in items
        ],
        extra={"unknown_ids": unknown},
    )
