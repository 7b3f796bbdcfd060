"""The second stage (eBay's learning to rank): a LightGBM LambdaRank model orders the first stage's
candidates by behavioural features of (shopper, candidate).

`candidate_features` is the one function that builds the feature matrix, offline (training the ranker,
evaluating it) and online (serving), so that the two cannot drift. Its inputs are the item-side arrays a
model version holds and the shopper's latest items, oldest first.

Features, per candidate:
- the first stage's score and its rank among the candidates;
- its link to each of the last three items on its own: co-occurrence and what shoppers do next;
- its strongest and mean co-occurrence over the last twenty items;
- its popularity (time-decayed) and its count of interactions (log);
- the length of the shopper's history;
- tag affinity (tags: categories, brand, attributes): the share of the shopper's items sharing a tag with
  it, and the tags it shares with the last item;
- its first-stage score as a share of the list's best; its co-occurrence and next-step links summed over
  the latest items, each older one counting RECENCY of the one after; how often shoppers went from it to
  the last item; how much shoppers come to it from anywhere; the share of its tags among the last three
  items'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

FEATURES = (
    "stage_score", "stage_rank",
    "similar_last", "next_last", "similar_2", "next_2", "similar_3", "next_3",
    "similar_max", "similar_mean",
    "popularity", "log_count", "history_length",
    "tag_affinity", "tag_last",
    "stage_share", "similar_recent", "next_recent", "before_last",
    "next_reach", "tag_last_3",
)  # fmt: skip
RECENT = 20  # the latest items whose co-occurrence with a candidate is summarised
RECENCY = 0.7  # each older item counts this much of the one after it (the *_recent features)


@dataclass
class FeatureSource:
    """The item-side arrays features are read from (a model version's, or a fit's offline)."""

    similar: sp.csr_matrix  # items x items co-occurrence
    transitions: sp.csr_matrix  # items x items: what shoppers do next
    popularity: np.ndarray  # time-decayed, max 1
    counts: np.ndarray  # interactions per item
    tags: sp.csr_matrix | None = None  # items x tags, binary

    def __post_init__(self) -> None:
        self.similar = sp.csr_matrix(self.similar)
        self.similar.sort_indices()
        self.transitions = sp.csr_matrix(self.transitions)
        self.transitions.sort_indices()
        self.arrivals = sp.csr_matrix(self.transitions.T)  # row j: the items shoppers came to j from
        self.arrivals.sort_indices()
        reach = np.asarray(self.arrivals.sum(axis=1)).ravel()  # how much shoppers come to each item
        self.reach = (reach / (reach.max() or 1.0)).astype(np.float32)
        if self.tags is not None:
            self.tags = sp.csr_matrix(self.tags, dtype=np.float32)
            self.tags.data[:] = 1.0


def _lookup(matrix: sp.csr_matrix, row: int, columns: np.ndarray) -> np.ndarray:
    """matrix[row, columns] for a row with sorted indices, without making the row dense."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    if start == end:
        return np.zeros(len(columns), np.float32)
    indices = matrix.indices[start:end]
    at = np.minimum(np.searchsorted(indices, columns), indices.size - 1)
    return np.where(indices[at] == columns, matrix.data[start:end][at], 0.0).astype(np.float32)


def candidate_features(
    source: FeatureSource, history: np.ndarray, candidates: np.ndarray, stage_scores: np.ndarray
) -> np.ndarray:
    """The feature matrix (candidates x FEATURES) of one shopper; `history`: item positions, oldest first;
    `candidates` in the first stage's order (best first), with its scores."""
    n = len(candidates)
    out = np.zeros((n, len(FEATURES)), np.float32)
    out[:, 0] = stage_scores
    out[:, 1] = np.arange(n)
    latest = history[::-1]
    for j, item in enumerate(latest[:3].tolist()):
        out[:, 2 + 2 * j] = _lookup(source.similar, item, candidates)
        out[:, 3 + 2 * j] = _lookup(source.transitions, item, candidates)
    recent = latest[:RECENT]
    if recent.size:
        stacked = np.vstack([_lookup(source.similar, item, candidates) for item in recent.tolist()])
        out[:, 8] = stacked.max(axis=0)
        out[:, 9] = stacked.mean(axis=0)
        weights = RECENCY ** np.arange(recent.size, dtype=np.float32)
        out[:, 16] = weights @ stacked
        following = np.vstack([_lookup(source.transitions, item, candidates) for item in recent.tolist()])
        out[:, 17] = weights @ following
        out[:, 18] = _lookup(source.arrivals, int(recent[0]), candidates)  # the candidate, then the last
    out[:, 19] = source.reach[candidates]
    top = float(np.max(stage_scores)) if n else 0.0
    out[:, 15] = stage_scores / top if top > 0 else 0.0
    out[:, 10] = source.popularity[candidates]
    out[:, 11] = np.log1p(source.counts[candidates])
    out[:, 12] = len(history)
    if source.tags is not None and recent.size:
        candidate_tags = source.tags[candidates]
        profile = np.asarray(source.tags[recent].sum(axis=0)).ravel()
        shared = np.asarray(candidate_tags @ (profile > 0).astype(np.float32)).ravel()
        tagged = np.maximum(np.asarray(candidate_tags.sum(axis=1)).ravel(), 1.0)
        out[:, 13] = shared / tagged
        out[:, 14] = np.asarray(candidate_tags @ source.tags[recent[0]].T.toarray()).ravel()
        last_three = (np.asarray(source.tags[recent[:3]].sum(axis=0)).ravel() > 0).astype(np.float32)
        out[:, 20] = np.asarray(candidate_tags @ last_three).ravel() / tagged
    return out


class LambdaRanker:
    """LightGBM LambdaRank over candidate_features, groups being shoppers' candidate lists."""

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        seed: int = 0,
    ):
        self.params: dict[str, Any] = {
            "objective": "lambdarank",
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "random_state": seed,
            "verbose": -1,
            "lambdarank_truncation_level": 20,
        }

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
        *,
        valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> LambdaRanker:
        """`groups`: the size of each shopper's list, in order. `valid` (features, labels, groups): early
        stopping on its NDCG@10."""
        import lightgbm

        self.model_ = lightgbm.LGBMRanker(**self.params)
        extra: dict[str, Any] = {}
        if valid is not None:
            extra = {
                "eval_set": [(valid[0], valid[1])],
                "eval_group": [valid[2]],
                "eval_at": [10],
                "callbacks": [lightgbm.early_stopping(100, verbose=False)],
            }
        self.model_.fit(features, labels, group=groups, **extra)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.predict(features), dtype=np.float32)

    def dump(self) -> str:
        """The model as LightGBM's text (what an artifact stores)."""
        return str(self.model_.booster_.model_to_string())
