"""What the product surfaces share: the anchor product (a 404 when it is not this store's), its place in
the model, and the fallback for a product the model does not know yet (its category's trending)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from core.errors import NotFound
from recommendations.serving.options import Options
from recommendations.serving.pipeline import Answer, finish
from recommendations.serving.request import ServingRequest
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
