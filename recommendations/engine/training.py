"""Fitting a store's for-user model the way the worker does: tune the scoring weights on a validation
split, choose how much of the network to blend in on that same split, evaluate, then fit on everything.
bench/ calls this too, so that its figures are the product's."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.evaluation import (
    HoldOut,
    apply_setting,
    evaluate,
    grid,
    leave_last_out,
    model_recommender,
    temporal_split,
    tune,
)
from recommendations.engine.interactions import Interactions
from recommendations.engine.network import (
    DEFAULT_SHARE_WITHOUT_VALIDATION,
    blend_neighbours,
    choose_global_share,
)
from recommendations.engine.ranker import FeatureSource
from recommendations.engine.recommender import SequentialItemKNN, decayed_popularity
from recommendations.engine.two_stage import RankerFit, fit_ranker

MIN_USERS_FOR_TIME_SPLIT = 30
MIN_USERS_TO_TUNE = 5
TUNING_USERS = 2000
EVALUATION_USERS = 5000


@dataclass
class FitResult:
    model: SequentialItemKNN
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    global_share: float | None = None  # None: no network to blend
    share_chosen_by: str = ""
    shares_tried: dict[float, float] = field(default_factory=dict)
    ranker: RankerFit | None = None  # None: not asked for, or too little data to validate


def validation_split(interactions: Interactions) -> tuple[HoldOut | None, str]:
    """The last tenth of the store's time; with too few shoppers spanning that cut, each shopper's last
    event instead."""
    if not len(interactions):
        return None, "none"
    holdout = temporal_split(interactions, holdout_fraction=0.1)
    if len(holdout.users) < MIN_USERS_FOR_TIME_SPLIT:
        return leave_last_out(interactions), "leave_last_out"
    return holdout, "time"


def fit_store_model(
    interactions: Interactions,
    *,
    repeats: bool,
    network: sp.csr_matrix | None = None,
    fixed_share: float | None = None,
    interaction_half_life_days: float | None = 180.0,
    ranker: bool = False,
    tags: sp.csr_matrix | None = None,
    prices: np.ndarray | None = None,
    serving_half_life_days: float = 7.0,
    fallback_ranker: str | None = None,
    progress: Callable[[float, str], None] = lambda fraction, message: None,
) -> FitResult:
    """`network`: the store's slice of the global model (items x items in the store's item order), or
    None when the store does not share or no global model exists. `fixed_share` skips choosing the share
    (a merchant's explicit setting). `ranker`: learn the ranking stage too (engine/two_stage.py), its
    features reading `tags` (items x tags), `prices` (per item) and popularity as serving holds it
    (halved every `serving_half_life_days`); `fallback_ranker` (the network's) is judged instead when
    the store has too little history to learn its own."""
    fit_params: dict[str, Any] = {"interaction_half_life_days": interaction_half_life_days}
    # the fit on every event does not depend on what tuning finds (the tuned weights need no refit:
    # apply_setting), so it runs beside the tuning: numpy and scipy leave the interpreter lock while they
    # work, and a second core halves the wall time of a large store's training
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit-all") as pool:
        fitting_all = pool.submit(SequentialItemKNN(**fit_params).fit, interactions)
        try:
            return _fit_and_tune(
                interactions, fitting_all, repeats=repeats, network=network, fixed_share=fixed_share,
                fit_params=fit_params, ranker=ranker, tags=tags, prices=prices,
                serving_half_life_days=serving_half_life_days, fallback_ranker=fallback_ranker,
                progress=progress,
            )  # fmt: skip
        finally:
            fitting_all.cancel()


def _fit_and_tune(
    interactions: Interactions,
    fitting_all: Future[SequentialItemKNN],
    *,
    repeats: bool,
    network: sp.csr_matrix | None,
    fixed_share: float | None,
    fit_params: dict[str, Any],
    ranker: bool,
    tags: sp.csr_matrix | None,
    prices: np.ndarray | None,
    serving_half_life_days: float,
    fallback_ranker: str | None,
    progress: Callable[[float, str], None],
) -> FitResult:
    holdout, protocol = validation_split(interactions)
    best: dict[str, Any] = {
        "history_decay": 0.5,
        "sequence_weight": 3.0,
        "repeat_weight": 1.0 if repeats else 0.0,
    }
    has_network = network is not None and network.nnz > 0
    share = (
        fixed_share
        if fixed_share is not None
        else (DEFAULT_SHARE_WITHOUT_VALIDATION if has_network else None)
    )
    chosen_by = "the store's setting" if fixed_share is not None else "default: too little data to validate"
    tried: dict[float, float] = {}
    metrics: dict[str, Any] = {"users": 0}
    can_validate = holdout is not None and len(holdout.users) >= MIN_USERS_TO_TUNE and len(holdout.train) > 0
    if can_validate and holdout is not None:
        search = grid(
            history_decay=[0.3, 0.6, 1.0],
            sequence_weight=[0.0, 3.0],
            repeat_weight=[0.0, 1.0, 2.0] if repeats else [0.0],
        )
        # one fit on the validation split serves the tuning, the blend's choice and the evaluation
        validation_model = SequentialItemKNN(**fit_params).fit(holdout.train)
        best, _, _ = tune(
            SequentialItemKNN, holdout, fit_params=fit_params, search=search, exclude_seen=not repeats,
            max_users=TUNING_USERS, fitted=validation_model,
        )  # fmt: skip
        apply_setting(validation_model, best)
        own = validation_model.neighbours_
        if has_network and fixed_share is None:
            progress(0.4, "choosing the blend with the global model")
            share, tried = choose_global_share(
                validation_model, holdout, network, exclude_seen=not repeats, max_users=TUNING_USERS
            )
            chosen_by = "validation"
        progress(0.45, "evaluating on the hold-out")
        if has_network and share:
            validation_model.neighbours_ = blend_neighbours(own, network, share, k=validation_model.k)
        metrics = evaluate(
            model_recommender(validation_model, holdout, k=10, exclude_seen=not repeats),
            holdout,
            k=10,
            max_users=EVALUATION_USERS,
        ).as_dict(10)
        metrics["protocol"] = protocol  # type: ignore[assignment]  # a label among the figures
        if has_network and 0.0 in tried:
            metrics["ndcg@10_store_only"] = round(tried[0.0], 5)
    fitted_ranker = None
    if ranker and can_validate and holdout is not None:

        def as_served(model: SequentialItemKNN, train: Interactions) -> SequentialItemKNN:
            """The first stage as serving holds it: the network blended into both neighbour matrices,
            popularity as trending keeps it."""
            if has_network and share and network is not None:
                model.similar_ = blend_neighbours(model.similar_, network, share, k=model.k)
            model.popularity_ = decayed_popularity(train, half_life_days=serving_half_life_days)
            return model

        def fit_stage(train: Interactions) -> SequentialItemKNN:
            model = SequentialItemKNN(**fit_params, **best).fit(train)
            if has_network and share and network is not None:
                model.neighbours_ = blend_neighbours(model.neighbours_, network, share, k=model.k)
            return as_served(model, train)

        def source_of(model: Any, train: Interactions) -> FeatureSource:
            return FeatureSource.of_fit(model, train, tags, prices)

        progress(0.5, "learning the ranking stage")
        fitted_ranker = fit_ranker(
            holdout, as_served(validation_model, holdout.train), fit_stage, source_of,
            exclude_seen=not repeats, refit_on=interactions, fallback=fallback_ranker,
            baskets=repeats,  # a store whose shoppers buy again (groceries): its next trips teach
            progress=lambda message: progress(0.55, message),
        )  # fmt: skip
        metrics["ranker"] = fitted_ranker.metrics  # type: ignore[assignment]  # a block among the figures
    progress(0.6, "fitting on all events")
    model = fitting_all.result()
    apply_setting(model, best)
    if has_network and share:  # the share applies to every surface the neighbours serve
        model.neighbours_ = blend_neighbours(model.neighbours_, network, share, k=model.k)
        model.similar_ = blend_neighbours(model.similar_, network, share, k=model.k)
    parameters = {**fit_params, **best, "popularity_weight": model.popularity_weight, "k": model.k}
    return FitResult(
        model=model,
        parameters=parameters,
        metrics=metrics,
        global_share=share if has_network else None,
        share_chosen_by=chosen_by if has_network else "",
        shares_tried=tried,
        ranker=fitted_ranker,
    )
