"""Complete the look: one product from each category that goes with the product's.

Which categories go with it: the merchant's rules first (StoreSettings.compatibility, on any level of the
product's category path: added in their order, forbidden never), then those the model learned from
co-purchase (leaf categories bought in the same basket more often than chance: lift, with a minimum
support), best lift first. Within each category, the product that goes best with this one: bought
together with it (the model's co-purchase lift), else the nearest in style (content vectors), popularity
breaking near-ties. An experiment's popularity control takes each category's most popular product."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from recommendations.serving.options import Options
from recommendations.serving.pipeline import Answer, Ranked, finish, hydrate
from recommendations.serving.products import Anchor, anchor_get, matrix_row
from recommendations.serving.request import ServingRequest
from recommendations.serving.trending import trending_candidates

TOGETHER_WEIGHT = 2.0  # bought with this very product outranks looking like it
POPULARITY_WEIGHT = 0.2
CANDIDATES_PER_CATEGORY = 50  # the best by score looked at for one that passes the filters


def compatible_categories(
    rules: dict[str, Any], learned: dict[str, list[tuple[str, float, int]]], path: list[str]
) -> list[tuple[str, str]]:
    """(category, why) in the order answered: the merchant's added rules of the path's levels (the
    deepest first), then the learned ones of its leaf by lift; never a forbidden one or one of its own."""
    added: list[tuple[str, str]] = []
    forbidden: set[str] = set(path)
    for level in reversed(path):
        rule = rules.get(level)
        if isinstance(rule, dict):
            names = list(rule.get("add", []))
            forbidden |= set(rule.get("forbid", []))
        else:
            names = list(rule) if isinstance(rule, list) else []
        added += [(name, f"goes with {level} (the store's rule)") for name in names]
    leaf = path[-1] if path else ""
    found = added + [
        (name, f"goes with {leaf}: bought together {lift:.1f}x as often as chance ({support} baskets)")
        for name, lift, support in learned.get(leaf, [])
    ]
    out: list[tuple[str, str]] = []
    for name, why in found:
        if name not in forbidden:
            out.append((name, why))
            forbidden.add(name)
    return out


def complete_the_look(request: ServingRequest, external_id: str, options: Options) -> Answer:
    anchor = anchor_get(request, external_id, options)
    path = anchor.path
    model = request.model
    categories = compatible_categories(
        request.settings.compatibility or {}, model.compatibility if model is not None else {}, path
    )
    source = model.source if model is not None else "fallback:popularity (no model yet)"
    if request.strategy == "popularity":
        source = f"{source} (popularity control)"
    picked_ids: list[int] = []
    reasons: dict[int, str] = {}
    for category, why in categories:
        if len(picked_ids) >= options.limit:
            break
        chosen = _best_in(request, anchor, category, options, set(picked_ids))
        if chosen is not None:
            product_id, bought_together = chosen
            picked_ids.append(product_id)
            reasons[product_id] = f"bought together with {external_id}; {why}" if bought_together else why
    if not categories:
        source = f"{source} (no category known to go with {path[-1] if path else 'it'} yet)"
    ranked = Ranked(
        np.array(picked_ids, np.int64),
        np.linspace(1.0, 0.5, len(picked_ids)) if picked_ids else np.zeros(0),  # the rules' order
        f"goes with {external_id}",
        reasons,
    )
    return finish(catalog=request.catalog, settings=request.settings, surface="complete_the_look",
                  ranked=ranked, options=options, model=model, source=source)  # fmt: skip


def _best_in(
    request: ServingRequest, anchor: Anchor, category: str, options: Options, taken: set[int]
) -> tuple[int, bool] | None:
    """The product of `category` that goes best with the anchor and passes the filters: (its internal id,
    whether it was bought together with the anchor); None when the category has none."""
    model = request.model
    if model is None or category not in model.category_items:
        scoped = replace(options, category=category)
        ranked, _ = trending_candidates(request.store, model, scoped)
        ids, scores = ranked.window(0, CANDIDATES_PER_CATEGORY)
        together_ids: set[int] = set()
    else:
        positions = model.category_items[category]
        popularity = model.popularity[positions].astype(np.float32)
        scores = POPULARITY_WEIGHT * popularity / (float(popularity.max()) or 1.0)
        together_ids = set()
        if request.strategy != "popularity" and anchor.position >= 0:
            # style: the merchant's embeddings when the anchor has one, else content vectors; both unit (or
            # zero, for a product without), so their product is the cosine
            style = model.style if model.style is not None and model.style[anchor.position].any() else None
            vectors = style if style is not None else model.vectors
            anchor_vector = np.asarray(vectors[anchor.position], dtype=np.float32)
            scores = scores + np.asarray(vectors[positions], dtype=np.float32) @ anchor_vector
            items, lifts = matrix_row(model.together, anchor.position)
            if lifts.size:
                at = np.flatnonzero(np.isin(positions, items))
                lift_of = dict(zip(items.tolist(), (lifts / lifts.max()).tolist(), strict=True))
                scores[at] += TOGETHER_WEIGHT * np.array([lift_of[int(positions[i])] for i in at])
                together_ids = {int(model.products.ids[positions[i]]) for i in at}
        order = np.argsort(-scores, kind="stable")[:CANDIDATES_PER_CATEGORY]
        ids, scores = model.products.ids[positions[order]], scores[order]
    keep = np.array([int(pid) not in taken and int(pid) != anchor.product_id for pid in ids.tolist()], bool)
    found = hydrate(request.catalog, ids[keep], scores[keep], lambda _: "", options, at_most=1)
    if not found:
        return None
    return found[0].product_id, found[0].product_id in together_ids
