"""Learning a store's ranking stage (recommendations/engine/ranker.py) from its own history, and the
guard that decides whether it serves.

Lessons: the first stage is fitted without each shopper's last training item (or last basket, for a
store whose shoppers buy again), and that item labels the shopper's candidates (then again one item
earlier, LESSON_TARGETS times). A fifth of the lesson shoppers is kept for early stopping. The guard: on
the store's validation split, the first stage's top ten against the same candidates reordered by the
ranker; the ranker serves only when it scores higher, and is then learned again from lessons in every
event. A store with too few lessons judges the network's ranker (learned from the sharing stores'
lesson samples, `learn_from_samples`) by the same guard.

The candidate lists are built here exactly as serving builds them (`stage_candidates`, then
`candidate_features`), from the same kind of arrays, so that what the ranker learns from is what it sees."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recommendations.engine.baskets import bought_together
from recommendations.engine.evaluation import HoldOut, last_basket_out, leave_last_out
from recommendations.engine.interactions import (
    Interactions,
    by_user,
    recency_weighted_history,
    user_item_matrix,
)
from recommendations.engine.ranker import (
    DEPTH,
    EVALUATION_SHOPPERS,
    FEATURES,
    LESSON_TARGETS,
    MAX_LESSON_SHOPPERS,
    MAX_LESSONS,
    MAX_TREES,
    MIN_LESSONS,
    FeatureSource,
    LambdaRanker,
    candidate_features,
    load_ranker,
    ranker_features,
    session_run,
)
from recommendations.engine.recommender import personal_scores_one

LESSON_CHUNK = 2000  # shoppers whose lists are built between two looks at the lessons' count
LESSONS_KEPT = 400  # lists of a store's lessons kept for the network's ranker
HISTORY = 200  # the latest events a shopper's features read: what serving's real-time profile holds
K = 10


class StageModel(Protocol):
    """A fitted first stage (SequentialItemKNN, or one rebuilt from a version's arrays)."""

    history_decay: float
    repeat_weight: float
    popularity_weight: float
    neighbours_: sp.csr_matrix
    similar_: sp.csr_matrix
    popularity_: np.ndarray


def stage_candidates(
    items: np.ndarray, scores: np.ndarray, depth: int = DEPTH
) -> tuple[np.ndarray, np.ndarray]:
    """The first stage's best `depth` items with a positive score, best first, ties to the lower item;
    (items, scores). Serving and training both choose candidates with this."""
    items = np.asarray(items, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if items.size > depth:  # the depth-th best score, then only what reaches it (no copy of the rest)
        threshold = -np.partition(-scores, depth - 1)[depth - 1]
        chosen = np.flatnonzero(scores >= threshold)
        items, scores = items[chosen], scores[chosen]
    keep = np.isfinite(scores) & (scores > 0)
    items, scores = items[keep], scores[keep]
    order = np.lexsort((items, -scores))[:depth]
    return items[order], scores[order]


def shopper_sequences(data: Interactions) -> list[np.ndarray]:
    """Each user's items, oldest first (the latest HISTORY)."""
    return _per_shopper(data, data.items)


def shopper_session_runs(data: Interactions) -> np.ndarray:
    """Each user's count of latest events in their current session (session_run over the latest
    HISTORY; 0 for all when the events carry no sessions)."""
    if data.sessions is None:
        return np.zeros(data.n_users, np.int64)
    return np.array([session_run(sessions) for sessions in _per_shopper(data, data.sessions)], np.int64)


def _per_shopper(data: Interactions, values: np.ndarray) -> list[np.ndarray]:
    order = by_user(data)
    users, values = data.users[order], values[order]
    bounds = np.searchsorted(users, np.arange(data.n_users + 1))
    return [values[max(bounds[u], bounds[u + 1] - HISTORY) : bounds[u + 1]] for u in range(data.n_users)]


@dataclass
class CandidateLists:
    """Shoppers' candidate lists: one block of feature rows per shopper, in `users` order."""

    users: np.ndarray
    candidates: list[np.ndarray]
    features: list[np.ndarray]


class ListBuilder:
    """Builds shoppers' candidate lists and features from one fitted first stage over `train`.

    Scored as serving scores them: the history's neighbours (personal_scores_one) plus a little
    popularity; besides the items those reach, only the most popular can be among the best `depth` (the
    rest score their popularity alone, below them), so only they are scored, whatever the catalog's size."""

    def __init__(self, model: StageModel, train: Interactions, source: FeatureSource, *, exclude_seen: bool):
        self.model, self.source = model, source
        self.histories = recency_weighted_history(train, decay=model.history_decay)
        self.seen = user_item_matrix(train, binary=True) if exclude_seen else None
        self.sequences = shopper_sequences(train)
        self.sessions = shopper_session_runs(train)
        self.popular = np.float32(model.popularity_weight) * np.asarray(model.popularity_, dtype=np.float32)
        self.most_popular = np.argsort(-self.popular, kind="stable")

    def build(self, users: np.ndarray, depth: int = DEPTH) -> CandidateLists:
        """Each user's first-stage candidates (their seen items left out when asked) and features."""
        histories, seen, popular = self.histories, self.seen, self.popular
        candidates, features = [], []
        for user in np.asarray(users).tolist():
            begin, end = histories.indptr[user], histories.indptr[user + 1]
            indices, values = personal_scores_one(
                histories.indices[begin:end].astype(np.int64), histories.data[begin:end],
                self.model.neighbours_, repeat_weight=self.model.repeat_weight,
            )  # fmt: skip
            excluded = seen.indices[seen.indptr[user] : seen.indptr[user + 1]] if seen is not None else None
            reach = depth + (excluded.size if excluded is not None else 0)
            pool = np.union1d(indices, self.most_popular[:reach])
            scores = popular[pool]
            scores[np.searchsorted(pool, indices)] += values
            if excluded is not None and excluded.size:
                scores[np.isin(pool, excluded)] = -np.inf
            items, stage = stage_candidates(pool, scores, depth)
            candidates.append(items)
            features.append(
                candidate_features(self.source, self.sequences[user], items, stage, self.sessions[user])
            )
        return CandidateLists(np.asarray(users), candidates, features)


def candidate_lists(
    model: StageModel,
    train: Interactions,
    users: np.ndarray,
    source: FeatureSource,
    *,
    exclude_seen: bool,
    depth: int = DEPTH,
) -> CandidateLists:
    """Each user's first-stage candidates (their seen items left out when `exclude_seen`) and features,
    as serving builds them (ListBuilder)."""
    return ListBuilder(model, train, source, exclude_seen=exclude_seen).build(users, depth)


@dataclass
class RankerFit:
    """The ranker learned for a version: its LightGBM text when it serves (None: it does not), and what
    the guard measured."""

    text: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    lessons_sample: bytes | None = None  # lessons_dump: what the network's ranker learns from


def _sample(users: np.ndarray, at_most: int, seed: int = 0) -> np.ndarray:
    if len(users) <= at_most:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=at_most, replace=False))


def _top_metrics(tops: list[np.ndarray], users: np.ndarray, targets: sp.csr_matrix) -> dict[str, float]:
    """HR@10 and NDCG@10 of each user's top items against their targets (several per user possible)."""
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    hits, ndcgs = [], []
    for top, user in zip(tops, users.tolist(), strict=True):
        wanted = targets.indices[targets.indptr[user] : targets.indptr[user + 1]]
        hit = np.isin(top[:K], wanted)
        ideal = discounts[: min(len(wanted), K)].sum()
        hits.append(hit.any())
        ndcgs.append(float((hit * discounts[: hit.size]).sum() / ideal) if ideal else 0.0)
    return {
        "hit@10": round(float(np.mean(hits)) if hits else 0.0, 5),
        "ndcg@10": round(float(np.mean(ndcgs)) if ndcgs else 0.0, 5),
    }


@dataclass
class Lessons:
    """Shoppers' candidate lists that hold their next item: features, labels, list sizes, shoppers."""

    features: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.owners)

    def part(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.flatnonzero(chosen).tolist()
        return (
            np.vstack([self.features[i] for i in rows]),
            np.concatenate([self.labels[i] for i in rows]),
            np.array([len(self.labels[i]) for i in rows]),
        )


def lessons_from(
    train: Interactions,
    fit_stage: Callable[[Interactions], StageModel],
    source_of: Callable[[StageModel, Interactions], FeatureSource],
    *,
    exclude_seen: bool,
    baskets: bool = False,
    progress: Callable[[str], None],
    seed: int,
) -> Lessons:
    """The first stage fitted without each shopper's last item of `train`, that item labelling their
    candidates; LESSON_TARGETS times, one item earlier each time. `baskets`: each shopper's last basket
    instead, every item in it labelling (a grocery's next trip)."""
    lessons = Lessons()
    split = last_basket_out if baskets and train.baskets is not None else leave_last_out
    for step in range(LESSON_TARGETS):
        inner = split(train)
        users = _sample(inner.users, MAX_LESSON_SHOPPERS, seed + step)
        if not len(users):
            break
        progress(f"ranker lessons {step + 1} of {LESSON_TARGETS}: up to {len(users):,} shoppers")
        stage = fit_stage(inner.train)
        source = source_of(stage, inner.train)
        targets = inner.targets
        builder = ListBuilder(stage, inner.train, source, exclude_seen=exclude_seen)
        for start in range(0, len(users), LESSON_CHUNK):
            chunk = users[start : start + LESSON_CHUNK]
            lists = builder.build(chunk)
            for user, items, rows in zip(chunk.tolist(), lists.candidates, lists.features, strict=True):
                wanted = targets.indices[targets.indptr[user] : targets.indptr[user + 1]]
                labels = np.isin(items, wanted).astype(np.int32)
                if labels.any():  # a list without its target teaches LambdaRank nothing
                    lessons.features.append(rows)
                    lessons.labels.append(labels)
                    lessons.owners.append(user)
            if len(lessons) >= MAX_LESSONS:  # enough to learn from: the rest would only cost time
                return lessons
        train = inner.train
    return lessons


def _learn(lessons: Lessons, seed: int, rounds: int | None = None) -> LambdaRanker:
    """LambdaRank on the lessons, early stopping on a fifth of their shoppers; with `rounds` (a number of
    trees already chosen that way), that many trees on all of them."""
    if rounds is not None:
        everything = np.ones(len(lessons), dtype=bool)
        return LambdaRanker(n_estimators=rounds, learning_rate=0.1, seed=seed).fit(*lessons.part(everything))
    shoppers = np.unique(lessons.owners)
    stopping = set(_sample(shoppers, len(shoppers) // 5, seed).tolist())
    in_stopping = np.array([owner in stopping for owner in lessons.owners])
    return LambdaRanker(n_estimators=MAX_TREES, learning_rate=0.1, seed=seed).fit(
        *lessons.part(~in_stopping), valid=lessons.part(in_stopping) if in_stopping.any() else None
    )


def fit_ranker(
    holdout: HoldOut,
    validation_model: StageModel,
    fit_stage: Callable[[Interactions], StageModel],
    source_of: Callable[[StageModel, Interactions], FeatureSource],
    *,
    exclude_seen: bool,
    refit_on: Interactions | None = None,
    fallback: str | None = None,
    baskets: bool = False,
    progress: Callable[[str], None] = lambda message: None,
    seed: int = 0,
) -> RankerFit:
    """Learn a ranker from lessons inside `holdout.train` and judge it on `holdout`, whose first stage is
    `validation_model` (fitted on `holdout.train`). `fit_stage` fits a first stage as the store's is
    fitted; `source_of` gives the arrays features read for a fitted one. `refit_on` (all the store's
    events): once the guard has passed, the ranker is learned again from lessons in them, whose latest
    items are the ones shoppers chose most recently, with as many trees as the judged one (as the first
    stage is tuned on validation, then fitted on everything). `fallback` (a ranker's text: the
    network's): with too few lessons to learn one, that ranker is judged instead, by the same guard. The
    fit keeps a sample of the lessons (`lessons_sample`) for the network's ranker to learn from.
    `baskets`: lessons label each shopper's next basket (lessons_from)."""

    def lessons_in(train: Interactions) -> Lessons:
        return lessons_from(
            train, fit_stage, source_of,
            exclude_seen=exclude_seen, baskets=baskets, progress=progress, seed=seed,
        )  # fmt: skip

    lessons = lessons_in(holdout.train)
    metrics: dict[str, Any] = {"lessons": len(lessons), "candidates": DEPTH}
    sample = lessons_dump(lessons, seed=seed) if len(lessons) else None
    own = len(lessons) >= MIN_LESSONS
    if not own and not fallback:
        return RankerFit(None, {**metrics, "used": False, "why": "too little history to learn one"}, sample)
    if own:
        progress(f"fitting the ranker on {len(lessons):,} lessons")
        ranker: Any = _learn(lessons, seed)
        metrics["trees"] = ranker.trees
    else:
        ranker = _Loaded(load_ranker(str(fallback)))
        metrics["from"] = "network"
    progress("judging the ranker on the validation split")
    users = _sample(holdout.users, EVALUATION_SHOPPERS, seed)
    lists = candidate_lists(
        validation_model, holdout.train, users, source_of(validation_model, holdout.train),
        exclude_seen=exclude_seen,
    )  # fmt: skip
    reordered = [
        items[np.argsort(-ranker.score(rows), kind="stable")] if len(items) else items
        for items, rows in zip(lists.candidates, lists.features, strict=True)
    ]
    first = _top_metrics(lists.candidates, users, holdout.targets)
    second = _top_metrics(reordered, users, holdout.targets)
    metrics.update(users=len(users), first_stage=first, two_stage=second)
    if second["ndcg@10"] <= first["ndcg@10"]:
        why = "not better than the first stage on validation"
        if not own:
            why = "too little history to learn one, and the network's is " + why
        return RankerFit(None, {**metrics, "used": False, "why": why}, sample)
    progress("judging the ranker on related and complementary items")
    validation_source = source_of(validation_model, holdout.train)
    metrics["related"] = judge_neighbours(
        ranker, validation_model.similar_, holdout, validation_source, users
    )
    together = bought_together(holdout.train)
    if together.nnz:
        metrics["complementary"] = judge_neighbours(ranker, together, holdout, validation_source, users)
    if not own:
        return RankerFit(str(fallback), {**metrics, "used": True}, sample)
    if refit_on is not None:
        lessons = lessons_in(refit_on)
        if len(lessons) >= MIN_LESSONS:
            progress(f"fitting the ranker again on {len(lessons):,} lessons from every event")
            ranker = _learn(lessons, seed, rounds=ranker.trees)  # as many trees as the one judged
            metrics.update(refit_lessons=len(lessons), refit_trees=ranker.trees)
            sample = lessons_dump(lessons, seed=seed)
    return RankerFit(ranker.dump(), {**metrics, "used": True}, sample)


def neighbour_candidates(
    matrix: sp.csr_matrix, anchor: int, depth: int = DEPTH
) -> tuple[np.ndarray, np.ndarray]:
    """A product's candidates for a related or complementary answer, as serving takes them: its row of
    `matrix` (co-occurrence, or bought together), itself left out, the best `depth`; (items, scores)."""
    begin, end = matrix.indptr[anchor], matrix.indptr[anchor + 1]
    items = np.asarray(matrix.indices[begin:end], dtype=np.int64)
    scores = np.asarray(matrix.data[begin:end], dtype=np.float32)
    keep = items != anchor
    return stage_candidates(items[keep], scores[keep], depth)


def judge_neighbours(
    ranker: Any, matrix: sp.csr_matrix, holdout: HoldOut, source: FeatureSource, users: np.ndarray
) -> dict[str, Any]:
    """Whether the ranker, given the product alone as the history, orders a product's neighbours in
    `matrix` (related: co-occurrence; complementary: bought together, learned on `holdout.train`) better
    than the matrix does: for each shopper of `users`, their last training item's neighbours against
    their next item or basket (HR and NDCG@10), on `holdout`. `used`: it does."""
    sequences = shopper_sequences(holdout.train)
    matrix = sp.csr_matrix(matrix)
    askers, firsts, seconds = [], [], []
    for user in users.tolist():
        if not len(sequences[user]):
            continue
        anchor = int(sequences[user][-1])
        items, scores = neighbour_candidates(matrix, anchor)
        if not len(items):
            continue
        askers.append(user)
        firsts.append(items)
        if len(items) > 1:
            rows = candidate_features(source, np.array([anchor]), items, scores)
            items = items[np.argsort(-ranker.score(rows), kind="stable")]
        seconds.append(items)
    asked = np.array(askers, dtype=np.int64)
    first = _top_metrics(firsts, asked, holdout.targets)
    second = _top_metrics(seconds, asked, holdout.targets)
    return {"first_stage": first, "two_stage": second, "users": len(askers),
            "used": second["ndcg@10"] > first["ndcg@10"]}  # fmt: skip


class _Loaded:
    """A dumped ranker with LambdaRanker's `score` (reading the features it knows: ranker_features)."""

    def __init__(self, loaded: Any):
        self.loaded = loaded
        self.width = ranker_features(loaded)

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.loaded.predict(features[:, : self.width]), dtype=np.float32)


def lessons_dump(lessons: Lessons, *, at_most: int = LESSONS_KEPT, seed: int = 0) -> bytes:
    """A sample of the lessons (at most `at_most` lists) as compressed arrays: features (half precision),
    labels and list sizes. Nothing in them names a product or a shopper."""
    chosen = np.zeros(len(lessons), dtype=bool)
    rng = np.random.default_rng(seed)
    chosen[rng.choice(len(lessons), size=min(at_most, len(lessons)), replace=False)] = True
    features, labels, groups = lessons.part(chosen)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, features=features.astype(np.float16), labels=labels, groups=groups)
    return buffer.getvalue()


def learn_from_samples(samples: list[bytes], seed: int = 0) -> tuple[str | None, dict[str, Any]]:
    """The network's ranker: LambdaRank on the lesson samples of the stores that share (early stopping on
    a fifth of the stores' lists). None when they hold fewer than MIN_LESSONS lists."""
    pooled = Lessons()
    for owner, blob in enumerate(samples):
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            features = np.zeros((arrays["features"].shape[0], len(FEATURES)), np.float32)
            known = min(arrays["features"].shape[1], len(FEATURES))  # older samples: fewer features
            features[:, :known] = arrays["features"][:, :known]
            bounds = np.r_[0, np.cumsum(arrays["groups"])]
            for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                pooled.features.append(features[start:end])
                pooled.labels.append(arrays["labels"][start:end])
                pooled.owners.append(owner * 1_000_000 + len(pooled.owners))  # each list its own shopper
    metrics: dict[str, Any] = {"stores": len(samples), "lessons": len(pooled)}
    if len(pooled) < MIN_LESSONS:
        return None, metrics
    ranker = _learn(pooled, seed)
    return ranker.dump(), {**metrics, "trees": ranker.trees}
