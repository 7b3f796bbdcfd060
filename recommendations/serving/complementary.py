"""Frequently bought together (by lift; ordered by the ranking stage where training judged it better),
then what shoppers choose next."""

from __future__ import annotations

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


def complementary(request: ServingRequest, external_id: str, options: Options) -> Answer:
    anchor = anchor_get(request, external_id, options)
    model = request.model
    if request.strategy == "popularity":  # an experiment's control
        return category_fallback(request, anchor, options, "complementary", POPULARITY_CONTROL)
    if model is None or anchor.position < 0:
        return category_fallback(request, anchor, options, "complementary")
    scores: dict[int, float] = {}
    reasons: dict[int, str] = {}
    together_items, together_scores = matrix_row(model.together, anchor.position)
    by_ranker = len(together_items) > 1 and ranks_neighbours(request, "complementary")
    if by_ranker:
        together_items, together_scores = ranked_neighbours(model, model.together, anchor.position)
    if len(together_scores):
        for item, score in zip(
            together_items.tolist(), (together_scores / together_scores.max()).tolist(), strict=True
        ):
            scores[item] = 1.0 + score  # bought together outranks browsed next
            reasons[item] = f"bought together with {external_id}"
    next_items, next_scores = matrix_row(model.transitions, anchor.position)
    for item, score in zip(next_items.tolist(), next_scores.tolist(), strict=True):
        if item not in scores:
            scores[item] = score
            reasons[item] = f"often chosen after {external_id}"
    if not scores:
        return category_fallback(request, anchor, options, "complementary")
    plain = model.source if len(together_scores) else f"{model.source} (sequences, no co-purchases yet)"
    source = neighbours_source(request, "complementary", by_ranker, plain)
    ranked = Ranked.from_dict(
        {int(model.products.ids[i]): v for i, v in scores.items()},
        {int(model.products.ids[i]): v for i, v in reasons.items()},
        f"often chosen with {external_id}",
    )
    return finish(catalog=request.catalog, settings=request.settings, surface="complementary",
                  ranked=ranked, options=options, model=model, source=source)  # fmt: skip
