"""Cold-start items from content, on Amazon Beauty: related items of products no one has touched yet.

    python bench/coldstart.py [--share 0.1] [--seeds 0,1,2]

A share of the items (those with attributes) is held out: all their interactions are removed from
training, as for products added to the catalog since. Every other item is warm. For a held-out item, the
items next to it in shoppers' sequences (before or after it) are what a "related" answer for it should
hold: HR@10 and NDCG@10 of each such warm item in the item's top 10. Methods:
- popularity: the most bought warm items;
- content: the warm items nearest by content (TF-IDF of the attributes, reduced: ContentEmbedding), what
  serving falls back on today;
- mapped: ContentToBehaviour, ridge regression from content to the factors of the warm items'
  neighbours (the estimator's ItemCooccurrence, as training fits the map),
  each cold item's warm items nearest to its predicted factors (plus a share of their popularity), then
  content's (as related answers a product with no events);
- the same with the content scores added (the mapped ones weighed four times: what served before).
The map's factors and penalty and the scoring are chosen on a validation split (another share of the warm
items held out of the fit and evaluated the same way), never on the test items; the test figures are
given for validation's choice and for training's settings (engine/coldstart.py's FACTORS, ALPHA,
POPULARITY). Prints each method's figures per seed, the validation grid, and the means.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "amazon-beauty"

from recommendations.engine.coldstart import (  # noqa: E402
    ALPHA,
    FACTORS,
    POPULARITY,
    ContentToBehaviour,
    popularity_prior,
)
from recommendations.engine.content import ContentEmbedding  # noqa: E402
from recommendations.engine.neighbors import ItemCooccurrence  # noqa: E402
from recommendations.engine.recommender import SequentialItemKNN  # noqa: E402

K = 10


def load() -> tuple[list[list[int]], list[str], int]:
    """Sequences of item codes, a content document per item code, the number of items."""
    codes: dict[str, int] = {}
    sequences = []
    for line in (DATA / "Beauty.txt").read_text().splitlines():
        sequences.append([codes.setdefault(item, len(codes)) for item in line.split()[1:]])
    attributes = json.loads((DATA / "Beauty_item2attributes.json").read_text())
    documents = [""] * len(codes)
    for item, attrs in attributes.items():
        if item in codes:
            documents[codes[item]] = " ".join(f"a{attr}" for attr in attrs)
    return sequences, documents, len(codes)


def cooccurrence(sequences: list[list[int]], n_items: int, exclude: np.ndarray) -> sp.csr_matrix:
    """Item x item neighbours as training gives the map (the estimator's `similar_`: ItemCooccurrence at
    its default neighbours, alpha and shrink over log(1 + views) of each shopper), without the excluded
    items' interactions."""
    rows, cols = [], []
    for user, sequence in enumerate(sequences):
        for item in sequence:
            if not exclude[item]:
                rows.append(user)
                cols.append(item)
    users = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sequences), n_items))
    users.data = np.log1p(users.data)  # (duplicates summed first: a shopper's count of an item)
    defaults = SequentialItemKNN()
    fitted = ItemCooccurrence(k=defaults.k, alpha=defaults.alpha, shrink=defaults.shrink).fit(users)
    return sp.csr_matrix(fitted.similarity_)


def adjacent_pairs(sequences: list[list[int]], cold: np.ndarray, warm: np.ndarray) -> dict[int, list[int]]:
    """Each cold item's warm neighbours in the sequences (the item just before and just after it)."""
    out: dict[int, list[int]] = {}
    for sequence in sequences:
        for position, item in enumerate(sequence):
            if not cold[item]:
                continue
            for other in (position - 1, position + 1):
                if 0 <= other < len(sequence) and warm[sequence[other]]:
                    out.setdefault(item, []).append(sequence[other])
    return out


def evaluate(scores: np.ndarray, cold_items: np.ndarray, pairs: dict[int, list[int]]) -> tuple[float, float]:
    """HR@10 and NDCG@10 over (cold item, adjacent warm item) pairs; `scores`: cold items x all items."""
    hits = gains = count = 0.0
    for row, item in enumerate(cold_items.tolist()):
        wanted = pairs.get(item)
        if not wanted:
            continue
        top = np.argpartition(-scores[row], K)[:K]
        top = top[np.argsort(-scores[row][top])]
        rank = {int(t): r for r, t in enumerate(top.tolist())}
        for target in wanted:
            count += 1
            if target in rank:
                hits += 1
                gains += 1 / math.log2(rank[target] + 2)
    return hits / max(count, 1), gains / max(count, 1)


def method_scores(
    name: str, content: np.ndarray, cold_items: np.ndarray, warm: np.ndarray, counts: np.ndarray,
    mapper: ContentToBehaviour | None = None, features: sp.csr_matrix | None = None,
    prior: float = POPULARITY, weight: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """Scores of every item for each cold item (only warm items can be answered). `counts`: the warm
    items' events; `prior`: the popularity prior's weight of the mapped neighbours; `weight`: 0 for the
    mapped order alone (content after it, as served), else the mapped scores times it plus content's."""
    masked = np.where(warm, 0.0, -np.inf)
    if name == "popularity":
        return np.tile(counts / max(counts.max(), 1) + masked, (len(cold_items), 1))
    by_content = content[cold_items] @ content.T + masked
    if name == "content":
        return by_content
    assert mapper is not None
    found = mapper.neighbours(features, cold_items, k=500, prior=popularity_prior(counts * warm, prior))
    mapped = found.tocsr()[cold_items].toarray()
    if weight == 0.0:  # as related answers a cold product: its mapped neighbours, then content's
        return np.where(mapped > 0, 2.0 + mapped, np.maximum(by_content, -1.0)) + masked
    return weight * mapped + by_content


# validation's grid: the map's factors and penalty, then how its neighbours are scored (the popularity
# prior's weight with the mapped order alone; or mapped and content scores added, the mapped ones weighed
# 4 and 16 times, as related answers cold products before)
FACTORS_GRID = (128, 256, 512)
ALPHA_GRID = (0.3, 1.0, 3.0)
SCORING_GRID = [(prior, 0.0) for prior in (0.0, 0.1, 0.3, 0.5, 0.8)] + [(POPULARITY, 4.0), (POPULARITY, 16.0)]


def run(
    seed: int, share: float, sequences: list[list[int]], content: np.ndarray, features: sp.csr_matrix,
    n_items: int,
) -> dict:  # fmt: skip
    rng = np.random.default_rng(seed)
    has_content = np.linalg.norm(content, axis=1) > 0
    candidates = np.flatnonzero(has_content)
    test_cold = np.zeros(n_items, bool)
    test_cold[rng.choice(candidates, size=int(share * n_items), replace=False)] = True
    # validation: another share of the remaining items held out of the fit, for tuning
    left = np.flatnonzero(has_content & ~test_cold)
    valid_cold = np.zeros(n_items, bool)
    valid_cold[rng.choice(left, size=int(share * n_items), replace=False)] = True

    counts = np.bincount([i for s in sequences for i in s], minlength=n_items).astype(np.float32)
    # tuning on validation: the fit never sees the validation or test items' interactions
    train_warm = ~test_cold & ~valid_cold
    train_sequences = [[i for i in s if not test_cold[i]] for s in sequences]
    cooc_valid = cooccurrence(train_sequences, n_items, ~train_warm)
    valid_pairs = adjacent_pairs(train_sequences, valid_cold, train_warm)
    valid_items = np.flatnonzero(valid_cold)
    grid: dict[tuple[int, float, float, float], float] = {}  # (factors, alpha, prior, weight) -> NDCG@10
    for factors in FACTORS_GRID:
        for alpha in ALPHA_GRID:
            mapper = ContentToBehaviour(factors=factors, alpha=alpha).fit(features, cooc_valid, train_warm)
            for prior, weight in SCORING_GRID:
                scores = method_scores(
                    "mapped", content, valid_items, train_warm, counts, mapper, features, prior, weight
                )
                grid[factors, alpha, prior, weight] = evaluate(scores, valid_items, valid_pairs)[1]
    best = max(grid, key=grid.__getitem__)
    # test: fit on every warm item, with validation's choice and with training's settings
    warm = ~test_cold
    cooc = cooccurrence(sequences, n_items, test_cold)
    pairs = adjacent_pairs(sequences, test_cold, warm)
    items = np.flatnonzero(test_cold)
    figures: dict = {"tuned": best, "valid_ndcg": grid, "pairs": sum(len(v) for v in pairs.values())}
    tuned = ContentToBehaviour(factors=best[0], alpha=best[1]).fit(features, cooc, warm)
    product = ContentToBehaviour().fit(features, cooc, warm)
    for name, mapper, prior, weight in (
        ("popularity", None, 0.0, 0.0),
        ("content", None, 0.0, 0.0),
        ("mapped, validation's choice", tuned, best[2], best[3]),
        ("mapped, training's settings", product, POPULARITY, 0.0),
        ("the same + content, x4", product, POPULARITY, 4.0),
    ):
        name_of = name if mapper is None else "mapped"
        scores = method_scores(name_of, content, items, warm, counts, mapper, features, prior, weight)
        figures[name] = evaluate(scores, items, pairs)
    return figures


METHODS = (
    "popularity",
    "content",
    "mapped, validation's choice",
    "mapped, training's settings",
    "the same + content, x4",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=0.1, help="share of the items held out (cold)")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    started = time.perf_counter()
    sequences, documents, n_items = load()
    embedding = ContentEmbedding(dimensions=64)
    content = embedding.fit_transform(documents)
    features = embedding.text_features(documents)
    assert features is not None
    seconds = time.perf_counter() - started
    print(f"{len(sequences):,} shoppers, {n_items:,} items; content vectors in {seconds:.1f} s")
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        began = time.perf_counter()
        figures = run(seed, args.share, sequences, content, features, n_items)
        results.append(figures)
        print(f"seed {seed}: {figures['pairs']:,} pairs; validation's choice (factors, alpha, prior, weight) "
              f"{figures['tuned']}; {time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip
        for name in METHODS:
            hr, ndcg = figures[name]
            print(f"  {name:<28} HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}")
    print(
        "validation NDCG@10, mean over seeds (factors, alpha, prior, weight; weight 0: the mapped order "
        "alone), the best ten and training's settings:"
    )
    grid = {key: float(np.mean([r["valid_ndcg"][key] for r in results])) for key in results[0]["valid_ndcg"]}
    ordered = sorted(grid, key=grid.__getitem__, reverse=True)
    product = (FACTORS, ALPHA, POPULARITY, 0.0)
    for place, key in enumerate(ordered):
        if place < 10 or key == product:
            named = ",".join(str(value) for value in key)
            print(f"  {place + 1:>3}. {named:<22} {grid[key]:.4f}{'  (training)' if key == product else ''}")
    for factors in FACTORS_GRID:
        key = max((k for k in grid if k[0] == factors), key=grid.__getitem__)
        print(f"  best with {factors} factors: {key} {grid[key]:.4f}")
    print("test, mean over seeds:")
    for name in METHODS:
        hr = np.mean([r[name][0] for r in results])
        ndcg = np.mean([r[name][1] for r in results])
        print(f"  {name:<28} HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}")


if __name__ == "__main__":
    main()
