"""What the product surfaces share: the anchor product (a 404 when it is not this store's), its place in
the model, and the fallback for a product the model does not know yet (its category's trending)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from django.conf import settings as django_settings

from core.errors import NotFound
from recommendations.engine.ranker import candidate_features
from recommendations.engine.two_stage import neighbour_candidates
from recommendations.serving.options import Options
from recommendations.serving.pipeline import Answer, finish
from recommendations.serving.request import ServingRequest
from recommendations.serving.state import ServingModel
from recommendations.serving.trending import trending_candidates

POPULARITY_CONTROL = "popularity control: its category's trending"


@dataclass(frozen=True)
class Anchor:
    product_id: int  # internal id
    external_id: str
    category: str  # top level of its category path
    position: int  # in the model; -1 when the model does not know it
    path: list[str]  # its whole category path, top level first


def anchor_get(request: ServingRequest, external_id: str, options: Options) -> Anchor:
    found = request.catalog.internal_ids([external_id], active_only=True)
    if external_id not in found:
        raise NotFound("no such product (or it was deleted)")
    product_id = found[external_id]
    options.exclude.add(external_id)  # never recommend a product to itself
    catalog = request.catalog.covering(np.array([product_id]))
    at = int(catalog.positions(np.array([product_id]))[0])
    model = request.model
    position = int(model.products.positions(np.array([product_id]))[0]) if model else -1
    return Anchor(
        product_id, external_id, catalog.top_category[at], position, list(catalog.category_paths[at])
    )


def category_fallback(
    request: ServingRequest,
    anchor: Anchor,
    options: Options,
    surface: str,
    why: str = "product not in the model: its category's trending",
) -> Answer:
    """A product the model does not know yet (added after training), or an experiment's popularity
    control: trending in its category."""
    if anchor.category and not options.category:
        options.category = anchor.category
    ranked, source = trending_candidates(request.store, request.model, options)
    return finish(catalog=request.catalog, settings=request.settings, surface=surface, ranked=ranked,
                  options=options, model=request.model,
                  source=f"{source} ({why})")  # fmt: skip


def matrix_row(matrix: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    if row >= matrix.shape[0]:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return np.asarray(matrix.indices[start:end]), np.asarray(matrix.data[start:end])


def ranks_neighbours(request: ServingRequest, surface: str) -> bool:
    """Whether the version's ranking stage orders this `surface` (related, complementary) answer: it has
    one, training judged it better there than the matrix alone (two_stage.judge_neighbours), and neither
    the operator (RANKING_STAGE=0) nor the shopper's experiment variant ("ranker": false) turned it off."""
    model = request.model
    return (
        model is not None
        and model.ranker is not None
        and bool(model.parameters.get(f"ranker_{surface}"))
        and bool(django_settings.RANKING_STAGE)
        and bool(request.variant_config.get("ranker", True))
    )


def neighbours_source(request: ServingRequest, surface: str, ranked: bool, plain: str) -> str:
    """`source` of a related or complementary answer: ranked, or `plain` (saying so where this variant
    turned the version's ranking stage off)."""
    model = request.model
    assert model is not None
    if ranked:
        return model.ranked_source
    judged_better = model.ranker is not None and model.parameters.get(f"ranker_{surface}")
    if judged_better and not request.variant_config.get("ranker", True):
        return f"{plain} (ranking stage off in this variant)"
    return plain


def ranked_neighbours(
    model: ServingModel, matrix: sp.csr_matrix, anchor: int
) -> tuple[np.ndarray, np.ndarray]:
    """A product's neighbours in `matrix` ordered by the ranking stage, the product alone as the history
    (as training judged it: two_stage.neighbour_candidates, its best DEPTH), then the rest of its row by
    the matrix. Each keeps a score of the matrix: the i-th by the ranker gets the i-th best (falling by a
    hair where they tie: answers sort by score), so merchant boosts still multiply a positive number."""
    assert model.features is not None and model.ranker is not None
    top, stage = neighbour_candidates(matrix, anchor)
    items, scores = matrix_row(matrix, anchor)
    if top.size > 1:
        features = candidate_features(model.features, np.array([anchor]), top, stage)[:, : model.ranker_width]
        top = top[np.argsort(-model.ranker.predict(features), kind="stable")]
    rest = ~np.isin(items, top) & (items != anchor)
    kept = stage.astype(np.float64) * (1.0 - 1e-9 * np.arange(top.size))
    return np.concatenate([top, items[rest]]), np.concatenate([kept, scores[rest]])
