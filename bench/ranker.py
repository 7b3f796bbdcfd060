"""The two-stage ranker (issue #14) on Amazon Beauty, leave-last-out, full ranking, bought items excluded:
the engine alone (the first stage) against the engine's candidates reordered by LightGBM LambdaRank.

    python bench/ranker.py [--candidates 150] [--targets 2]

Protocol (the same as bench/quality.py's for the engine): each shopper's last item is the test target;
everything is tuned and trained on the rest. The first stage's weights are tuned on a validation split
(each shopper's last training item), as bench/quality.py does. The ranker learns from earlier targets:
the first stage is fitted without each shopper's last `targets` training items, and for each of them
(the second-last item, the third-last, ...) the shopper's candidates before it are labelled by it. Early
stopping watches a fifth of those shoppers, held out of the ranker's fit. The test items are never seen.
Prints HR@10 and NDCG@10 of both, the first stage's recall at the candidate depth (the ranker's ceiling),
the features' importance, and the time each step took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from recommendations.engine.evaluation import HoldOut, leave_last_out  # noqa: E402
from recommendations.engine.interactions import (  # noqa: E402
    IdIndex,
    Interactions,
    recency_weighted_history,
    sorted_interactions,
    user_item_matrix,
)
from recommendations.engine.ranker import FEATURES, FeatureSource, LambdaRanker, candidate_features  # noqa: E402
from recommendations.engine.recommender import SequentialItemKNN  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-beauty"
K = 10


def load() -> tuple[Interactions, sp.csr_matrix]:
    users, items, times = [], [], []
    for user, line in enumerate((DATA / "Beauty.txt").read_text().splitlines()):
        sequence = line.split()[1:]
        users += [user] * len(sequence)
        items += sequence
        times += range(len(sequence))
    index, codes = IdIndex.from_values(np.array(items, dtype=np.int64))
    n = len(items)
    data = sorted_interactions(
        users=np.array(users), items=codes, weights=np.ones(n), times=np.array(times, dtype=float),
        n_users=max(users) + 1, n_items=len(index), purchases=np.ones(n, dtype=bool),
    )  # fmt: skip
    attributes = json.loads((DATA / "Beauty_item2attributes.json").read_text())
    rows, cols = [], []
    for item, tags in attributes.items():
        position = int(index.positions(np.array([int(item)]))[0])
        if position >= 0:
            rows += [position] * len(tags)
            cols += [int(tag) for tag in tags]
    tags = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(index), max(cols) + 1))
    return data, tags


def sequences(data: Interactions) -> list[np.ndarray]:
    """Each user's items, oldest first."""
    order = np.lexsort((data.times, data.users))
    users, items = data.users[order], data.items[order]
    bounds = np.searchsorted(users, np.arange(data.n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(data.n_users)]


def first_stage(train: Interactions, params: dict) -> SequentialItemKNN:
    return SequentialItemKNN(**params).fit(train)


def candidates_of(model: SequentialItemKNN, train: Interactions, users: np.ndarray, depth: int):  # noqa: ANN201
    """(items, scores) per user: the first stage's top `depth`, seen items left out."""
    seen = user_item_matrix(train, binary=True)
    histories = recency_weighted_history(train, decay=model.history_decay)
    out_items, out_scores = [], []
    for start in range(0, len(users), 1024):
        batch = users[start : start + 1024]
        items, scores = model.recommend(histories[batch], n=depth, exclude=seen[batch])
        out_items.append(items)
        out_scores.append(scores)
    return np.vstack(out_items), np.vstack(out_scores)


def source_of(model: SequentialItemKNN, train: Interactions, tags: sp.csr_matrix) -> FeatureSource:
    counts = np.bincount(train.items, minlength=train.n_items).astype(np.float32)
    return FeatureSource(model.similar_, model.transitions_, model.popularity_, counts, tags)


def build(source, histories, users, items, scores, targets):  # noqa: ANN001, ANN201
    """Feature rows, labels and group sizes of these users' candidate lists."""
    blocks, labels, groups = [], [], []
    for row, user in enumerate(users.tolist()):
        blocks.append(candidate_features(source, histories[user], items[row], scores[row]))
        labels.append((items[row] == targets[row]).astype(np.int32))
        groups.append(len(items[row]))
    return np.vstack(blocks), np.concatenate(labels), np.array(groups)


def shopper_lists(split: HoldOut, params: dict, tags: sp.csr_matrix, depth: int):  # noqa: ANN201
    """The first stage fitted on the split's training part; its evaluated users, their targets, their
    candidates, and the candidates' features, labels and group sizes."""
    model = first_stage(split.train, params)
    users = split.users
    targets = np.asarray(split.targets[users].argmax(axis=1)).ravel()
    items, scores = candidates_of(model, split.train, users, depth)
    built = build(source_of(model, split.train, tags), sequences(split.train), users, items, scores, targets)
    return users, targets, items, built


def metrics(ranked: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    hits = ranked[:, :K] == targets[:, None]
    found = hits.any(axis=1)
    rank = hits.argmax(axis=1)
    ndcg = np.where(found, 1.0 / np.log2(rank + 2), 0.0)
    return float(found.mean()), float(ndcg.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=150)
    parser.add_argument(
        "--targets", type=int, default=2, help="earlier items each shopper's ranker learns from"
    )
    parser.add_argument("--leaves", type=int, default=31)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--min-child", type=int, default=50)
    args = parser.parse_args()
    clock = time.perf_counter()
    data, tags = load()
    holdout = leave_last_out(data)
    from quality import fit_engine  # the first stage tuned as bench/quality.py tunes it

    _, tuned = fit_engine(holdout, "leave_last_out", repeats=False)
    params = tuned["tuned"]
    print(f"first stage tuned on validation: {params} ({time.perf_counter() - clock:.0f} s)", flush=True)

    # the ranker's lessons: the first stage fitted without each shopper's last `targets` training items
    blocks = []
    train = holdout.train
    for step in range(args.targets):
        inner = leave_last_out(train)
        users, wanted, items, built = shopper_lists(inner, params, tags, args.candidates)
        blocks.append((users, built))
        print(f"lessons {step + 1}: {len(users):,} shoppers, target among the candidates for "
              f"{(items == wanted[:, None]).any(axis=1).mean():.3f} ({time.perf_counter() - clock:.0f} s)",
              flush=True)  # fmt: skip
        train = inner.train
    rng = np.random.default_rng(0)
    shoppers = np.unique(np.concatenate([users for users, _ in blocks]))
    valid_users = set(rng.choice(shoppers, size=len(shoppers) // 5, replace=False).tolist())

    def part(keep_valid: bool):  # noqa: ANN202
        xs, ys, gs = [], [], []
        for users, (x, y, g) in blocks:
            starts = np.r_[0, np.cumsum(g)[:-1]]
            for user, start, size in zip(users.tolist(), starts.tolist(), g.tolist(), strict=True):
                if (user in valid_users) != keep_valid:
                    continue
                labels = y[start : start + size]
                if not labels.any():
                    continue  # a list without its target teaches LambdaRank nothing
                xs.append(x[start : start + size])
                ys.append(labels)
                gs.append(size)
        return np.vstack(xs), np.concatenate(ys), np.array(gs)

    fit_part, valid_part = part(False), part(True)
    ranker = LambdaRanker(
        n_estimators=1000,
        num_leaves=args.leaves,
        learning_rate=args.learning_rate,
        min_child_samples=args.min_child,
    ).fit(*fit_part, valid=valid_part)
    print(f"ranker: {len(fit_part[2]):,} lists to learn from, {len(valid_part[2]):,} to stop early on; "
          f"{ranker.model_.best_iteration_} trees ({time.perf_counter() - clock:.0f} s)",
          flush=True)  # fmt: skip

    # the test: the first stage on all training items, its candidates reordered
    users, targets, items, (x, _, _) = shopper_lists(holdout, params, tags, args.candidates)
    ranked_scores = ranker.score(x).reshape(len(users), args.candidates)
    order = np.argsort(-ranked_scores, axis=1, kind="stable")
    reranked = np.take_along_axis(items, order, axis=1)
    stage = metrics(items, targets)
    two = metrics(reranked, targets)
    ceiling = (items == targets[:, None]).any(axis=1).mean()
    seconds = time.perf_counter() - clock
    print(f"\nAmazon Beauty, leave-last-out, {len(users):,} shoppers ({seconds:.0f} s in all)")
    print(f"  first stage (the engine)      HR@10 {stage[0]:.4f}  NDCG@10 {stage[1]:.4f}")
    print(f"  + LambdaRank over {args.candidates}     HR@10 {two[0]:.4f}  NDCG@10 {two[1]:.4f}")
    print(f"  the target among the candidates: {ceiling:.4f}")
    importance = ranker.model_.booster_.feature_importance(importance_type="gain")
    ranked_features = sorted(zip(FEATURES, importance, strict=True), key=lambda pair: -pair[1])
    print(
        "  feature gain: "
        + ", ".join(f"{name} {gain / importance.sum():.2f}" for name, gain in ranked_features)
    )


if __name__ == "__main__":
    main()
