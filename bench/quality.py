"""Offline quality of the engine against baselines on the same split, in the same process.

    python bench/quality.py beauty            # ../shared/data/amazon-beauty, leave-last-out
    python bench/quality.py tafeng            # ../shared/data/tafeng, last basket, repeats included
    python bench/quality.py csv FILE          # user,item,timestamp[,event_type]: a time split
    python bench/quality.py generated         # generated multi-store data: a time split per store
    python bench/quality.py all               # every dataset above that is present

Prints recall@10, NDCG@10, hit@10, coverage and fit seconds for the engine (weights tuned on a validation
split carved from the training part by the same protocol) beside popularity, item-kNN (cosine), EASE and
implicit ALS, and writes a bar chart to bench/out/quality-<dataset>.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recommendations.engine.evaluation import (  # noqa: E402
    HoldOut,
    evaluate,
    grid,
    last_basket_out,
    leave_last_out,
    model_recommender,
    temporal_split,
    tune,
)
from recommendations.engine.interactions import (  # noqa: E402
    DEFAULT_EVENT_WEIGHTS,
    IdIndex,
    Interactions,
    recency_weighted_history,  # noqa: E402
    sorted_interactions,
    user_item_matrix,
)
from recommendations.engine.ranker import FeatureSource, candidate_features, load_ranker  # noqa: E402
from recommendations.engine.recommender import SequentialItemKNN, top_n  # noqa: E402
from recommendations.engine.two_stage import (  # noqa: E402
    candidate_lists,
    fit_ranker,
    judge_neighbours,
    shopper_sequences,
    stage_candidates,
)

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
K = 10


# --- loaders -------------------------------------------------------------------------------------
def load_beauty() -> Interactions:
    return load_beauty_with_tags()[0]


def load_beauty_with_tags() -> tuple[Interactions, sp.csr_matrix]:
    """The interactions, and items x tags from the item attributes file (the ranking stage's affinities)."""
    users, items, times = [], [], []
    for user, line in enumerate((DATA / "amazon-beauty" / "Beauty.txt").read_text().splitlines()):
        sequence = line.split()[1:]
        users += [user] * len(sequence)
        items += sequence
        times += range(len(sequence))  # no timestamps: the order in the line is the time order
    item_index, item_codes = IdIndex.from_values(np.array(items, dtype=np.int64))
    n = len(items)
    data = sorted_interactions(
        users=np.array(users), items=item_codes, weights=np.ones(n), times=np.array(times, dtype=float),
        n_users=max(users) + 1, n_items=len(item_index), purchases=np.ones(n, dtype=bool),
    )  # fmt: skip
    attributes = json.loads((DATA / "amazon-beauty" / "Beauty_item2attributes.json").read_text())
    rows, cols = [], []
    for item, tags in attributes.items():
        position = int(item_index.positions(np.array([int(item)]))[0])
        if position >= 0:
            rows += [position] * len(tags)
            cols += [int(tag) for tag in tags]
    shape = (len(item_index), max(cols, default=0) + 1)
    return data, sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def load_tafeng() -> Interactions:
    raw = json.loads((DATA / "tafeng" / "tafeng_merged.json").read_text())
    users, items, times, baskets = [], [], [], []
    basket_id = 0
    for user, user_baskets in enumerate(raw.values()):
        for position, basket in enumerate(user_baskets):
            users += [user] * len(basket)
            items += basket
            times += [position] * len(basket)
            baskets += [basket_id] * len(basket)
            basket_id += 1
    item_index, item_codes = IdIndex.from_values(np.array(items, dtype=np.int64))
    n = len(items)
    return sorted_interactions(
        users=np.array(users), items=item_codes, weights=np.ones(n), times=np.array(times, dtype=float),
        n_users=len(raw), n_items=len(item_index), baskets=np.array(baskets),
        purchases=np.ones(n, dtype=bool),
    )  # fmt: skip


def load_csv(path: Path) -> Interactions:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    user_index, user_codes = IdIndex.from_values(np.array([row["user"] for row in rows]))
    item_index, item_codes = IdIndex.from_values(np.array([row["item"] for row in rows]))
    weights = np.array([DEFAULT_EVENT_WEIGHTS.get(row.get("event_type") or "purchase", 1.0) for row in rows])
    return sorted_interactions(
        users=user_codes, items=item_codes, weights=weights,
        times=np.array([float(row["timestamp"]) for row in rows]),
        n_users=len(user_index), n_items=len(item_index),
    )  # fmt: skip


def generate_store(*, users: int, items: int, events_per_user: int, seed: int) -> Interactions:
    """Shoppers with tastes over hidden item clusters, browsing in runs (sequences) with a few purchases."""
    rng = np.random.default_rng(seed)
    clusters = 20
    item_cluster = rng.integers(0, clusters, size=items)
    members = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    popularity = rng.zipf(1.5, size=items).astype(float)
    out_users, out_items, out_weights, out_times = [], [], [], []
    weight_of = np.array([1.0, 3.0, 5.0])
    for user in range(users):
        taste = rng.dirichlet(np.full(clusters, 0.2))
        count = rng.poisson(events_per_user) + 2
        # a shopper's visits spread over the whole 60 days, browsing in runs within a visit
        moments = np.sort(rng.uniform(0, 60 * 86400, size=count))
        cluster = rng.choice(clusters, p=taste)
        for step in range(count):
            if rng.random() < 0.3:
                cluster = rng.choice(clusters, p=taste)
            pool = members[cluster]
            if len(pool) == 0:
                continue
            p = popularity[pool] / popularity[pool].sum()
            out_users.append(user)
            out_items.append(int(rng.choice(pool, p=p)))
            out_weights.append(weight_of[rng.choice(3, p=[0.8, 0.13, 0.07])])
            out_times.append(moments[step])
    return sorted_interactions(
        users=np.array(out_users), items=np.array(out_items), weights=np.array(out_weights),
        times=np.array(out_times), n_users=users, n_items=items,
    )  # fmt: skip


# --- baselines -----------------------------------------------------------------------------------
def fit_popularity(holdout: HoldOut, exclude_seen: bool) -> Callable:
    counts = np.bincount(holdout.train.items, minlength=holdout.train.n_items).astype(np.float32)
    seen = user_item_matrix(holdout.train, binary=True)

    def recommend(users: np.ndarray) -> np.ndarray:
        scores = np.repeat(counts[None, :], len(users), axis=0)
        if exclude_seen:
            rows, cols = seen[users].nonzero()
            scores[rows, cols] = -np.inf
        return top_n(scores, K)[0]

    return recommend


def scores_recommender(
    score: Callable[[np.ndarray], np.ndarray], holdout: HoldOut, exclude_seen: bool
) -> Callable:
    seen = user_item_matrix(holdout.train, binary=True)

    def recommend(users: np.ndarray) -> np.ndarray:
        scores = np.asarray(score(users), dtype=np.float32)
        if exclude_seen:
            rows, cols = seen[users].nonzero()
            scores[rows, cols] = -np.inf
        return top_n(scores, K)[0]

    return recommend


def fit_item_knn(holdout: HoldOut, exclude_seen: bool, k: int = 100) -> Callable:
    """Classic item-kNN: binary user-item matrix, plain cosine, top-k neighbours, no recency."""
    from recommendations.engine.neighbors import ItemCooccurrence

    matrix = user_item_matrix(holdout.train, binary=True)
    similarity = ItemCooccurrence(k=k, alpha=0.5, shrink=0.0).fit(matrix).similarity_
    return scores_recommender(lambda users: (matrix[users] @ similarity).toarray(), holdout, exclude_seen)


def fit_ease(holdout: HoldOut, exclude_seen: bool, lam: float = 250.0) -> Callable:
    matrix = user_item_matrix(holdout.train, binary=True)
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    precision = np.linalg.inv(gram)
    weights = (precision / (-np.diag(precision))).astype(np.float32)
    weights[np.diag_indices_from(weights)] = 0.0
    return scores_recommender(lambda users: matrix[users] @ weights, holdout, exclude_seen)


def fit_als(holdout: HoldOut, exclude_seen: bool, factors: int = 64) -> Callable:
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    matrix = user_item_matrix(holdout.train, binary=True).astype(np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=0.05, iterations=15, random_state=0)
        model.fit(matrix * 20.0, show_progress=False)
    user_factors = np.asarray(model.user_factors)
    item_factors = np.asarray(model.item_factors)
    return scores_recommender(lambda users: user_factors[users] @ item_factors.T, holdout, exclude_seen)


def fit_personal_top_freq(holdout: HoldOut, exclude_seen: bool) -> Callable:
    """GP-TopFreq: the user's own most frequent items, then global popularity."""
    counts = user_item_matrix(holdout.train).astype(np.float32)
    global_counts = np.bincount(holdout.train.items, minlength=holdout.train.n_items).astype(np.float32)
    global_scores = global_counts / (global_counts.max() + 1.0)  # below one: personal items come first
    return scores_recommender(
        lambda users: counts[users].toarray() + global_scores[None, :], holdout, exclude_seen=False
    )


# --- the engine ----------------------------------------------------------------------------------
def split_for(protocol: str, data: Interactions) -> HoldOut:
    return {"leave_last_out": leave_last_out, "last_basket": last_basket_out, "time": temporal_split}[
        protocol
    ](data)


def fit_engine(holdout: HoldOut, protocol: str, repeats: bool) -> tuple[Callable, dict]:
    """Tune the scoring weights on a validation split of the training part, then refit on all of it."""
    validation = split_for(protocol, holdout.train)
    search = grid(
        history_decay=[0.3, 0.5, 0.7, 1.0],
        sequence_weight=[0.0, 1.0, 3.0, 10.0],
        repeat_weight=[0.0, 0.5, 1.0, 2.0, 4.0] if repeats else [0.0],
    )
    best, metrics, _ = tune(
        SequentialItemKNN, validation, fit_params={}, search=search, exclude_seen=not repeats
    )
    model = SequentialItemKNN(**best).fit(holdout.train)
    return model_recommender(model, holdout, k=K, exclude_seen=not repeats), {
        "tuned": best, "validation_ndcg": round(metrics.ndcg, 4),
    }  # fmt: skip


def fit_two_stage(
    holdout: HoldOut, protocol: str, repeats: bool, tags: sp.csr_matrix | None, refit: bool = True
) -> tuple[Callable, dict]:
    """The engine tuned as fit_engine tunes it, then the ranking stage as a store's training learns it
    (recommendations/engine/two_stage.py: lessons inside the validation split's training part, early
    stopping on a fifth of their shoppers, judged on the validation split); the test shoppers' candidates
    from the engine refitted on all training events, reordered by the ranker when the guard kept it."""
    started = time.perf_counter()
    validation = split_for(protocol, holdout.train)
    _, tuned = fit_engine(holdout, protocol, repeats)
    best = tuned["tuned"]

    def fit_stage(train: Interactions) -> SequentialItemKNN:
        return SequentialItemKNN(**best).fit(train)

    def source_of(model: SequentialItemKNN, train: Interactions) -> FeatureSource:
        return FeatureSource.of_fit(model, train, tags)

    fitted = fit_ranker(
        validation, fit_stage(validation.train), fit_stage, source_of, exclude_seen=not repeats,
        refit_on=holdout.train if refit else None, baskets=protocol == "last_basket",
        progress=lambda message: print(f"  {message} ({time.perf_counter() - started:.0f} s)", flush=True),
    )  # fmt: skip
    extra = {"tuned": best, "ranker": fitted.metrics}
    final = fit_stage(holdout.train)
    if fitted.text is None:
        return model_recommender(final, holdout, k=K, exclude_seen=not repeats), extra
    booster = load_ranker(fitted.text)  # as serving loads it
    lists = candidate_lists(
        final, holdout.train, holdout.users, source_of(final, holdout.train), exclude_seen=not repeats
    )
    # a list shorter than K (few items with any score) ends with the first stage's own picks
    tops = model_recommender(final, holdout, k=2 * K, exclude_seen=not repeats)(holdout.users)
    for row, (items, features) in enumerate(zip(lists.candidates, lists.features, strict=True)):
        ordered = items[np.argsort(-booster.predict(features), kind="stable")][:K]
        rest = tops[row][~np.isin(tops[row], ordered)]
        tops[row, :K] = np.concatenate([ordered, rest])[:K]
    tops = tops[:, :K]
    at = {int(user): row for row, user in enumerate(holdout.users.tolist())}
    extra["ranker_cpu_us"] = ranker_cost(final, holdout, booster, source_of(final, holdout.train))
    if not repeats:  # related items (the last training item's) against the next item, on the test split
        scorer = type("Scorer", (), {"score": staticmethod(booster.predict)})
        extra["related_test"] = judge_neighbours(
            scorer, final.similar_, holdout, source_of(final, holdout.train), holdout.users
        )

    def recommend(users: np.ndarray) -> np.ndarray:
        return tops[[at[int(user)] for user in users.tolist()]]

    return recommend, extra


def ranker_cost(
    final: SequentialItemKNN, holdout: HoldOut, booster: Any, source: FeatureSource, shoppers: int = 2000
) -> int:
    """CPU µs per answer of what the ranking stage adds to a computed for-user answer, as serving does it
    (recommendations/serving/for_user.py second_stage): the best DEPTH of the answer's candidates (a few
    thousand: here each shopper's 5,000 best by the first stage), their features, the ranker's scores."""
    users = holdout.users[:shoppers]
    histories = recency_weighted_history(holdout.train, decay=final.history_decay)
    sequences = shopper_sequences(holdout.train)
    spent = 0.0
    for start in range(0, len(users), 64):
        rows = users[start : start + 64]
        scores = final.score(histories[rows])
        for offset, user in enumerate(rows.tolist()):
            pool = np.argpartition(-scores[offset], 5000)[:5000]
            clock = time.process_time()
            top, stage = stage_candidates(pool, scores[offset][pool])
            features = candidate_features(source, sequences[user], top, stage)
            booster.predict(features)
            spent += time.process_time() - clock
    return round(spent / max(len(users), 1) * 1e6)


def run(
    name: str,
    data: Interactions,
    protocol: str,
    repeats: bool,
    skip: set[str],
    tags: sp.csr_matrix | None = None,
) -> list[dict]:
    holdout = split_for(protocol, data)
    print(
        f"\n== {name}: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} interactions; "
        f"protocol {protocol}{', repeats included' if repeats else ''}; "
        f"{len(holdout.users):,} users evaluated",
        flush=True,
    )
    exclude_seen = not repeats
    contenders: list[tuple[str, Callable[[], tuple[Callable, dict]]]] = [
        ("engine (sequential item-kNN)", lambda: fit_engine(holdout, protocol, repeats)),
        ("engine + ranking stage", lambda: fit_two_stage(holdout, protocol, repeats, tags)),
        ("popularity", lambda: (fit_popularity(holdout, exclude_seen), {})),
        ("item-kNN (cosine)", lambda: (fit_item_knn(holdout, exclude_seen), {})),
        ("EASE (lambda 250)", lambda: (fit_ease(holdout, exclude_seen), {})),
        ("implicit ALS (64 factors)", lambda: (fit_als(holdout, exclude_seen), {})),
    ]
    if repeats:
        contenders.append(("GP-TopFreq", lambda: (fit_personal_top_freq(holdout, exclude_seen), {})))
    rows = []
    print(f"{'model':<30} {'recall@10':>9} {'NDCG@10':>8} {'hit@10':>7} {'coverage':>8} {'fit s':>7}")
    for label, fit in contenders:
        if any(word in label.lower() for word in skip):
            continue
        started = time.perf_counter()
        recommend, extra = fit()
        fit_seconds = time.perf_counter() - started
        metrics = evaluate(recommend, holdout, k=K)
        row = {
            "dataset": name,
            "model": label,
            **metrics.as_dict(K),
            "fit_seconds": round(fit_seconds, 2),
            **extra,
        }
        rows.append(row)
        print(
            f"{label:<30} {metrics.recall:9.4f} {metrics.ndcg:8.4f} {metrics.hit_rate:7.4f} "
            f"{metrics.coverage:8.4f} {fit_seconds:7.1f}" + (f"   {extra}" if extra else ""),
            flush=True,
        )
    plot(name, rows)
    return rows


def plot(name: str, rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    labels = [row["model"] for row in rows]
    x = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.bar(x - 0.2, [row[f"recall@{K}"] for row in rows], 0.4, label=f"recall@{K}")
    axis.bar(x + 0.2, [row[f"ndcg@{K}"] for row in rows], 0.4, label=f"NDCG@{K}")
    axis.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    axis.set_title(f"{name}: quality at {K}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(OUT / f"quality-{name}.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=["beauty", "tafeng", "csv", "generated", "all"])
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--skip", default="", help="comma-separated words of models to skip, e.g. ease,als")
    args = parser.parse_args()
    skip = {word.strip().lower() for word in args.skip.split(",") if word.strip()}
    results = []
    if args.dataset in ("beauty", "all") and (DATA / "amazon-beauty").exists():
        beauty, beauty_tags = load_beauty_with_tags()
        results += run("amazon-beauty", beauty, "leave_last_out", repeats=False, skip=skip, tags=beauty_tags)
    if args.dataset in ("tafeng", "all") and (DATA / "tafeng").exists():
        results += run("tafeng", load_tafeng(), "last_basket", repeats=True, skip=skip)
    if args.dataset == "csv":
        results += run(args.path.stem, load_csv(args.path), "time", repeats=False, skip=skip)
    if args.dataset in ("generated", "all"):
        for label, users, items in [("small", 300, 2000), ("middle", 3000, 5000), ("large", 20000, 10000)]:
            data = generate_store(users=users, items=items, events_per_user=30, seed=users)
            results += run(f"generated-{label}", data, "time", repeats=False, skip=skip)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"quality-{args.dataset}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
