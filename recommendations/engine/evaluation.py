"""Offline evaluation: hold-out splits, ranking metrics at K, and the small grid search that picks a
store's weights on its validation split."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.interactions import Interactions, UserEvents, by_user


@dataclass(frozen=True)
class HoldOut:
    train: Interactions
    users: np.ndarray  # users evaluated (they have history in train and a target)
    targets: sp.csr_matrix  # users x items: what each evaluated user did next

    @cached_property
    def train_events(self) -> UserEvents:
        """The train part grouped by user: evaluated users' histories, built once for every setting."""
        return UserEvents(self.train)


def leave_last_out(data: Interactions) -> HoldOut:
    """Each user's last event is the target; users with a single event are not evaluated."""
    order = by_user(data)
    users = data.users[order]
    last = np.r_[users[1:] != users[:-1], True]
    first = np.r_[True, users[1:] != users[:-1]]
    target_rows = order[last & ~first]
    train_mask = np.ones(len(data), dtype=bool)
    train_mask[target_rows] = False
    return _holdout(data, train_mask, target_rows)


def temporal_split(data: Interactions, *, holdout_fraction: float = 0.1) -> HoldOut:
    """Events after the time quantile `1 - holdout_fraction` are targets, for users seen before it."""
    cutoff = np.quantile(data.times, 1 - holdout_fraction) if len(data) else 0.0
    train_mask = data.times < cutoff
    return _holdout(data, train_mask, np.flatnonzero(~train_mask))


def last_basket_out(data: Interactions) -> HoldOut:
    """Each user's last basket (data.baskets) is the target."""
    assert data.baskets is not None
    order = by_user(data)
    users, baskets = data.users[order], data.baskets[order]
    last_basket = np.full(data.n_users, -1, dtype=np.int64)
    last_basket[users] = baskets  # the last write per user wins: its latest basket
    is_target = np.zeros(len(data), dtype=bool)
    is_target[order] = baskets == last_basket[users]
    return _holdout(data, ~is_target, np.flatnonzero(is_target))


def _holdout(data: Interactions, train_mask: np.ndarray, target_rows: np.ndarray) -> HoldOut:
    train = data.subset(train_mask)
    seen = np.zeros(data.n_users, dtype=bool)
    seen[train.users] = True
    target_rows = target_rows[seen[data.users[target_rows]]]
    targets = sp.csr_matrix(
        (np.ones(len(target_rows), np.float32), (data.users[target_rows], data.items[target_rows])),
        shape=(data.n_users, data.n_items),
    )
    targets.sum_duplicates()
    targets.data[:] = 1.0
    users = np.unique(data.users[target_rows])
    return HoldOut(train=train, users=users, targets=targets)


@dataclass(frozen=True)
class Metrics:
    recall: float
    ndcg: float
    hit_rate: float
    coverage: float
    users: int

    def as_dict(self, k: int = 10) -> dict[str, float]:
        return {
            f"recall@{k}": round(self.recall, 5),
            f"ndcg@{k}": round(self.ndcg, 5),
            f"hit@{k}": round(self.hit_rate, 5),
            "coverage": round(self.coverage, 5),
            "users": self.users,
        }


def ranking_metrics(top: np.ndarray, targets: sp.csr_matrix, *, n_items: int) -> Metrics:
    """`top` holds each evaluated user's ranked item indices; `targets` the matching rows of targets."""
    k = top.shape[1]
    if top.shape[0] == 0:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0)
    hits = np.asarray(targets[np.arange(top.shape[0])[:, None], top].todense()) > 0
    n_targets = np.diff(targets.indptr)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_targets, k) - 1]
    recall = hits.sum(axis=1) / n_targets
    return Metrics(
        recall=float(np.mean(recall)),
        ndcg=float(np.mean(dcg / ideal)),
        hit_rate=float(np.mean(hits.any(axis=1))),
        coverage=float(len(np.unique(top)) / max(n_items, 1)),
        users=int(top.shape[0]),
    )


Recommend = Callable[[np.ndarray], np.ndarray]  # users -> top-k item indices


def evaluate(
    recommend: Recommend, holdout: HoldOut, *, k: int = 10, batch: int = 512, max_users: int | None = None
) -> Metrics:
    users = holdout.users
    if max_users is not None and len(users) > max_users:
        users = np.random.default_rng(0).choice(users, size=max_users, replace=False)
        users.sort()
    tops = [recommend(users[start : start + batch]) for start in range(0, len(users), batch)]
    top = np.vstack(tops) if tops else np.zeros((0, k), dtype=np.int64)
    return ranking_metrics(top[:, :k], holdout.targets[users], n_items=holdout.train.n_items)


def model_recommender(model, holdout: HoldOut, *, k: int, exclude_seen: bool) -> Recommend:  # noqa: ANN001
    """Adapter: a fitted SequentialItemKNN-like model as a users -> top-k function over the train split."""
    events = holdout.train_events
    decay = model.history_decay

    def recommend(users: np.ndarray) -> np.ndarray:
        exclude = events.seen(users) if exclude_seen else None
        items, _ = model.recommend(events.history(users, decay=decay), n=k, exclude=exclude)
        return items

    return recommend


def grid(**options: Iterable) -> list[dict]:
    names = list(options)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*options.values())]


def apply_setting(model: Any, setting: dict) -> None:
    """Set scoring weights that need no refit on a fitted model (sequence_weight recombines its
    neighbours): the same model as one fitted with them."""
    for name, value in setting.items():
        if name == "sequence_weight":
            model.set_sequence_weight(value)
        else:
            setattr(model, name, value)


def tune(
    make_model: Callable[..., Any],
    holdout: HoldOut,
    *,
    fit_params: dict,
    search: list[dict],
    k: int = 10,
    exclude_seen: bool = True,
    max_users: int | None = 5000,
    fitted: Any = None,
) -> tuple[dict, Metrics, list[tuple[dict, Metrics]]]:
    """Fit once on the hold-out's train part (or take `fitted`, a model fitted on it with `fit_params`),
    then try each setting of the scoring weights (which need no refit: history_decay, repeat_weight,
    popularity_weight, sequence_weight). Best by NDCG@k; the model is left at the last setting tried
    (`apply_setting` puts it at the best)."""
    model = fitted if fitted is not None else make_model(**fit_params).fit(holdout.train)
    tried: list[tuple[dict, Metrics]] = []
    for setting in search:
        apply_setting(model, setting)
        metrics = evaluate(
            model_recommender(model, holdout, k=k, exclude_seen=exclude_seen),
            holdout,
            k=k,
            max_users=max_users,
        )
        tried.append((setting, metrics))
    best_setting, best_metrics = max(tried, key=lambda pair: pair[1].ndcg)
    return best_setting, best_metrics, tried
