"""Trending now (the model's time-decayed popularity), optionally in a category; before any model, the
last 30 days of events counted in the database."""

from __future__ import annotations

import numpy as np

from events.selectors import popular_products
from recommendations.serving.options import Options
from recommendations.serving.pipeline import Answer, Ranked, finish
from recommendations.serving.request import ServingRequest
from recommendations.serving.state import ServingModel
from tenants.models import Store


def trending(request: ServingRequest, options: Options) -> Answer:
    ranked, source = trending_candidates(request.store, request.model, options)
    return finish(catalog=request.catalog, settings=request.settings, surface="trending", ranked=ranked,
                  options=options, model=request.model, source=source)  # fmt: skip


def trending_candidates(store: Store, model: ServingModel | None, options: Options) -> tuple[Ranked, str]:
    reason = f"trending in {options.category}" if options.category else "trending now"
    if model is not None and model.popularity_order.size:
        order = model.trending_order(options.category)
        return Ranked(model.products.ids[order], model.popularity[order], reason), f"trending:{model.source}"
    rows = popular_products(store=store, days=30, limit=5000)
    top = rows[0][1] if rows else 1
    ranked = Ranked(
        np.array([r[0] for r in rows], np.int64), np.array([r[1] / top for r in rows]), "popular now"
    )
    return ranked, "fallback:popularity"
