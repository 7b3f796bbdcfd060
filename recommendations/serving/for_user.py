"""Recommended for you: the model's neighbours applied to the shopper's latest events (across aliases
and channels), the current session counting twice, and what is in the cart pulling in its complements."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from django.conf import settings as django_settings

from events.models import EventType
from events.profiles import History
from recommendations.artifacts import CATEGORY_SEPARATOR
from recommendations.engine.ranker import DEPTH, candidate_features, session_run
from recommendations.engine.recommender import (
    add_sparse,
    gather_rows,
    history_vector,
    personal_scores_one,
    ranked_by_full_score,
    strongest_sources,
)
from recommendations.engine.two_stage import stage_candidates
from recommendations.selectors import event_type_weights
from recommendations.serving.options import Options
from recommendations.serving.pipeline import Answer, Ranked, finish
from recommendations.serving.profile import history_get
from recommendations.serving.request import ServingRequest
from recommendations.serving.state import TOP_CANDIDATES, CatalogSource, ServingModel
from recommendations.serving.trending import trending_candidates
from tenants.models import StoreSettings

SESSION_BOOST = 2.0  # events of the current session count twice
RECENT_FOR_COMPLEMENTS = 20  # carts and purchases among the latest events pull in their complements
COMPLEMENT_WEIGHT = 0.5


def for_user(request: ServingRequest, user_id: str, options: Options) -> Answer:
    settings, model = request.settings, request.model
    history = history_get(store=request.store, user_id=user_id, lookup=request.lookup)
    include_purchased = (
        settings.include_purchased if options.include_purchased is None else options.include_purchased
    )
    purchased = set(history.product_ids[history.types == EventType.PURCHASE].tolist())
    if not include_purchased and purchased:
        options.exclude_product_ids |= purchased
    if request.strategy == "popularity":  # an experiment's control
        return _trending(request, options, "popularity")
    if model is None or not len(history):
        why = "no model yet" if model is None else "unknown user"
        return _trending(request, options, why)
    ranker = uses_ranker(request)
    personal = personal_scores(
        settings, model, history, include_purchased=include_purchased, boosts=not ranker
    )
    if personal is None:
        return _trending(request, options, "history unknown to the model")
    ranked = personal_ranked(
        model, personal, "popular with shoppers like you",
        ranker=ranker, include_purchased=include_purchased,
    )  # fmt: skip
    return finish(catalog=request.catalog, settings=settings, surface="for_user", ranked=ranked,
                  options=options, model=model, source=served_source(request),
                  explain=lambda answered: _because(model, request.catalog, personal, answered,
                                                    ranked=ranker))  # fmt: skip


def personal_ranked(
    model: ServingModel, personal: PersonalScores, reason: str, *, ranker: bool, include_purchased: bool
) -> Ranked:
    """The shopper's candidates in answer order: by the ranking stage when `ranker` (and the model has
    one), else by the first stage's full score (the best TOP_CANDIDATES, merged in compiled code)."""
    if ranker and model.ranker is not None:
        candidates, scores = personal_candidates(model, personal)
        # the shopper's own history is not among the candidates the ranker learned to order (unless
        # purchases may come back), as in its lessons
        seen = None if include_purchased else personal.history_items
        return second_stage(
            model, personal.sequence, candidates, scores, reason, exclude=seen, session=personal.session
        )
    # the same candidates and order, merged in compiled code (ranked_by_full_score)
    items, scores = ranked_by_full_score(
        personal.indices, personal.values, model.popularity, model.popularity_order,
        weight=model.parameter("popularity_weight"), at_most=TOP_CANDIDATES,
    )  # fmt: skip
    return Ranked(model.products.ids[items], scores, reason)


def uses_ranker(request: ServingRequest) -> bool:
    """Whether the model's ranking stage orders this answer: it has one, and neither a variant nor the
    operator (RANKING_STAGE=0) turns it off."""
    model = request.model
    return (
        model is not None
        and model.ranker is not None
        and bool(request.variant_config.get("ranker", True))
        and django_settings.RANKING_STAGE
    )


def served_source(request: ServingRequest) -> str:
    """`source` of a for-user or rank answer from the model: whether the ranking stage ordered it, or why
    the version serves without one."""
    model = request.model
    assert model is not None
    if uses_ranker(request):
        return model.ranked_source
    if model.ranker is not None:
        where = "in this variant" if django_settings.RANKING_STAGE else "by the operator"
        return f"{model.source} (ranking stage off {where})"
    if model.ranker_off:
        return f"{model.source} (no ranking stage: {model.ranker_off})"
    return model.source


def second_stage(
    model: ServingModel,
    sequence: np.ndarray,
    candidates: np.ndarray,
    scores: np.ndarray,
    reason: str,
    *,
    exclude: np.ndarray | None = None,
    session: int = 0,
) -> Ranked:
    """The first stage's best DEPTH candidates (model positions, full scores) ordered by the ranker, then
    the rest in the first stage's order. Each keeps a first-stage score: the i-th by the ranker gets the
    i-th best, so scores fall down the list and merchant boosts still multiply a positive number."""
    # (sets of items as flags over the model's items: np.isin sorts the thousands of candidates)
    flags = np.zeros(len(model.products), dtype=bool)
    if exclude is not None and exclude.size:
        flags[exclude] = True
        keep = ~flags[candidates]
        candidates, scores = candidates[keep], scores[keep]
        flags[exclude] = False
    top, stage = stage_candidates(candidates, scores, DEPTH)
    assert model.features is not None and model.ranker is not None
    order = np.arange(top.size)
    if top.size > 1:
        features = candidate_features(model.features, sequence, top, stage, session)[:, : model.ranker_width]
        order = np.argsort(-model.ranker.predict(features), kind="stable")
    flags[top] = True
    rest = ~flags[candidates]
    return Ranked(
        model.products.ids[np.concatenate([top[order], candidates[rest]])],
        np.concatenate([stage, scores[rest]]), reason,
        presorted=False, at_most=TOP_CANDIDATES, ordered=top.size,  # (the rest score no higher)
        tiebreak=np.concatenate([np.arange(top.size), top.size + candidates[rest]]),
    )  # fmt: skip


def _trending(request: ServingRequest, options: Options, why: str) -> Answer:
    ranked, source = trending_candidates(request.store, request.model, options)
    return finish(catalog=request.catalog, settings=request.settings, surface="for_user", ranked=ranked,
                  options=options, model=request.model, source=f"{source} ({why})")  # fmt: skip


class PersonalScores(NamedTuple):
    """The personal part of the items' scores for one history, sparse (the model's own scoring rule: add
    `popularity_weight * popularity` for the full score), and the history as the model weighs it."""

    indices: np.ndarray  # model positions, sorted
    values: np.ndarray
    history_items: np.ndarray  # model positions, sorted
    history_weights: np.ndarray
    sequence: np.ndarray  # model positions of the history the model knows, oldest first (for features)
    session: int = 0  # how many of `sequence`'s latest are the current session's (ranker.session_run)


def personal_scores(
    settings: StoreSettings,
    model: ServingModel,
    history: History,
    *,
    include_purchased: bool,
    boosts: bool = True,
) -> PersonalScores | None:
    """None when the model knows none of the history's products. `boosts`: the current session counts
    twice and the cart pulls in its complements (the first stage alone); without them, the scores are
    the model's own, as the ranking stage's lessons were scored (its candidates and stage features)."""
    if not len(history):
        return None
    positions = model.products.positions(history.product_ids)
    event_weights = event_type_weights(settings.event_weights)[history.types]
    # the shopper's current session (that of the latest event) weighs more than older visits
    current_session = history.current_session
    if current_session and boosts:
        event_weights = event_weights * np.where(history.sessions == current_session, SESSION_BOOST, 1.0)
    known = (positions >= 0) & (event_weights > 0)
    if not known.any():
        return None
    history_items, history_weights = history_vector(
        positions[known], event_weights[known], decay=model.parameter("history_decay")
    )
    indices, values = personal_scores_one(
        history_items, history_weights, model.neighbours,
        repeat_weight=model.parameter("repeat_weight") if include_purchased else 0.0,
    )  # fmt: skip
    # what is in the cart (or was just bought) steers its complements into the answer
    recent_types = history.types[-RECENT_FOR_COMPLEMENTS:]
    recent_positions = positions[-RECENT_FOR_COMPLEMENTS:]
    carted = recent_positions[
        ((recent_types == EventType.ADD_TO_CART) | (recent_types == EventType.PURCHASE))
        & (recent_positions >= 0)
    ]
    if carted.size and boosts:
        complement_items, complement_values = gather_rows(
            model.together, carted, np.ones(carted.size, np.float32)
        )
        if complement_values.size and complement_values.max() > 0:
            scale = COMPLEMENT_WEIGHT / complement_values.max()
            indices, values = add_sparse((indices, values), (complement_items, scale * complement_values))
    return PersonalScores(
        indices,
        values,
        history_items,
        history_weights,
        positions[known],
        session_run(history.sessions[known]),
    )


def personal_candidates(model: ServingModel, personal: PersonalScores) -> tuple[np.ndarray, np.ndarray]:
    """(model positions, full scores) of the items that can be among the best TOP_CANDIDATES: only items
    with a personal score or among the TOP_CANDIDATES most popular can be there (the rest score popularity
    alone, below those), so only they are scored: a few thousand instead of the whole catalog."""
    weight = np.float32(model.parameter("popularity_weight"))
    top = model.top_popular  # sorted positions
    scores_top = weight * model.popularity[top].astype(np.float32)
    at = np.searchsorted(top, personal.indices)
    inside = at < top.size
    inside[inside] = top[at[inside]] == personal.indices[inside]
    scores_top[at[inside]] += personal.values[inside]
    outside = personal.indices[~inside]
    scores_out = weight * model.popularity[outside].astype(np.float32) + personal.values[~inside]
    candidates = np.concatenate([top, outside])
    scores = np.concatenate([scores_top, scores_out])
    keep = np.isfinite(scores) & (scores > 0)
    return candidates[keep], scores[keep]


def _because(
    model: ServingModel,
    catalog: CatalogSource,
    personal: PersonalScores,
    product_ids: list[int],
    *,
    ranked: bool = False,
) -> dict[int, str]:
    """For the items answered, the history item that contributed most: "because you showed interest in X";
    under the ranking stage, for an item none contributed to, its category when the shopper browses it."""
    history_positions = personal.history_items
    positions = model.products.positions(np.array(product_ids, dtype=np.int64))
    known = positions >= 0
    if history_positions.size == 0 or not known.any():
        return {}
    sources = strongest_sources(
        model.neighbours, history_positions, personal.history_weights, positions[known]
    )
    has_anchor = sources >= 0
    anchors = history_positions[np.maximum(sources, 0)]
    anchor_ids = model.products.ids[anchors[has_anchor]]
    names = _names(catalog, anchor_ids)
    out = {}
    answered = np.array(product_ids, dtype=np.int64)[known].tolist()
    seen = set(model.products.ids[history_positions].tolist())
    for product_id, anchor, ok in zip(answered, anchors.tolist(), has_anchor.tolist(), strict=True):
        if ok:
            name = names.get(int(model.products.ids[anchor]), "a product")
            out[product_id] = f"because you showed interest in {name}"
        elif product_id in seen:
            out[product_id] = "you showed interest before"
    if ranked and model.category_paths.size:
        # the ranking stage also puts first what the shopper's categories make likely, with no neighbour
        # of theirs to name: the category is the evidence
        def leaf(position: int) -> str:
            return str(model.category_paths[position]).rsplit(CATEGORY_SEPARATOR, 1)[-1]

        browsed = {leaf(p) for p in personal.sequence[-RECENT_FOR_COMPLEMENTS:].tolist()} - {""}
        for product_id, position in zip(answered, positions[known].tolist(), strict=True):
            if product_id not in out and leaf(position) in browsed:
                out[product_id] = f"popular in {leaf(position)}, which you browse"
    return out


def _names(catalog: CatalogSource, product_ids: np.ndarray) -> dict[int, str]:
    if not product_ids.size:
        return {}
    loaded = catalog.covering(product_ids)
    positions = loaded.positions(product_ids)
    return {
        int(pid): loaded.external_ids[p]
        for pid, p in zip(product_ids.tolist(), positions.tolist(), strict=True)
        if p >= 0
    }
