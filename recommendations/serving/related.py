"""Similar items: the model's collaborative neighbours, and for a product with few of them its nearest
products by content (pgvector)."""

from __future__ import annotations

from catalog.selectors import product_content_neighbours
from recommendations.engine.content import CONTENT_NEIGHBOURS, CONTENT_WHEN_FEWER_THAN
from recommendations.serving.options import Options
from recommendations.serving.pipeline import Answer, Ranked, finish
from recommendations.serving.products import (
    POPULARITY_CONTROL,
    anchor_get,
    category_fallback,
    matrix_row,
    neighbours_source,
    ranked_neighbours,
    ranks_neighbours,
)
from recommendations.serving.request import ServingRequest

CONTENT_WEIGHT = 0.5
# a product with no events: its mapped neighbours come first, in their order, and its content ones only
# after them (bench/coldstart.py's validation split: adding the content's scores, at a quarter or a
# sixteenth of the mapped ones', did no better than the mapped order alone, and at a quarter worse); its
# scores start above any content score
COLD_BASE = CONTENT_WEIGHT


def related(request: ServingRequest, external_id: str, options: Options) -> Answer:
    anchor = anchor_get(request, external_id, options)
    model = request.model
    if request.strategy == "popularity":  # an experiment's control
        return category_fallback(request, anchor, options, "related", POPULARITY_CONTROL)
    if model is None or anchor.position < 0:
        return category_fallback(request, anchor, options, "related")
    scores: dict[int, float] = {}  # by internal product id
    reasons: dict[int, str] = {}
    cf_items, cf_scores = matrix_row(model.similar, anchor.position)
    ranked = len(cf_items) > 1 and ranks_neighbours(request, "related")
    if ranked:
        cf_items, cf_scores = ranked_neighbours(model, model.similar, anchor.position)
    if len(cf_scores):
        for item, score in zip(cf_items.tolist(), (cf_scores / cf_scores.max()).tolist(), strict=True):
            product = int(model.products.ids[item])
            scores[product] = score
            reasons[product] = f"shoppers who viewed {external_id} also viewed this"
    mapped: set[int] = set()  # a cold product's neighbours mapped from its content
    if not len(cf_items):
        # no events yet: the products shoppers treat like the products it reads like (its content's
        # predicted behaviour, learned at training)
        cold_items, cold_scores = model.cold_neighbours(anchor.position, CONTENT_NEIGHBOURS)
        for item, score in zip(cold_items.tolist(), cold_scores.tolist(), strict=True):
            product = int(model.products.ids[item])
            scores[product] = COLD_BASE + score
            reasons[product] = f"shoppers of products like {external_id} chose this"
            mapped.add(product)
    if len(cf_items) < max(options.limit, CONTENT_WHEN_FEWER_THAN):
        # few collaborative neighbours (a cold product): its nearest products by content (after a cold
        # product's mapped ones, which they do not reorder)
        for product, similarity in _content_neighbours(
            request, anchor.product_id, anchor.position, len(cf_items)
        ):
            if product in mapped:
                continue
            scores[product] = scores.get(product, 0.0) + CONTENT_WEIGHT * similarity
            reasons.setdefault(product, f"similar to {external_id}")
    if not scores:
        return category_fallback(request, anchor, options, "related")
    answer = Ranked.from_dict(scores, reasons, f"similar to {external_id}")
    return finish(catalog=request.catalog, settings=request.settings, surface="related", ranked=answer,
                  options=options, model=model,
                  source=neighbours_source(request, "related", ranked, model.source))  # fmt: skip


def _content_neighbours(
    request: ServingRequest, product_id: int, position: int, collaborative: int
) -> list[tuple[int, float]]:
    """From the model when training worked them out (the items with fewer than CONTENT_WHEN_FEWER_THAN
    collaborative neighbours), else from pgvector: products of the catalog newer than the model, or asked
    with a limit above what the model holds."""
    model = request.model
    content = model.content if model is not None else None
    if content is not None and model is not None and collaborative < CONTENT_WHEN_FEWER_THAN:
        items, similarities = matrix_row(content, position)
        return list(zip(model.products.ids[items].tolist(), similarities.tolist(), strict=True))
    return product_content_neighbours(store=request.store, product_id=product_id, limit=CONTENT_NEIGHBOURS)
