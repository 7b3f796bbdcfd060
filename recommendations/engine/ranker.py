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
  items';
- its price (log), and against the shopper's usual (the log of its ratio to the median price of their
  latest items; 0 where a price is unknown);
- within the shopper's own list: its summed next-step and co-occurrence links as shares of the list's
  best, and their ranks in the list;
- its events in the last week and the last thirty days of the fit (log), their trend (the week's daily
  rate against the month's), and its age (log days since its first event); batch arrays
  (`item_stats`), read as they were at training;
- the shopper's own times with it among their latest items (log), and how lately: 1 / (1 + the events
  since they last had it), 0 when they have not (a store whose shoppers buy again); and the share of
  the candidate's shoppers who came back to it (`item_stats`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.recommender import row_entries

FEATURES = (
    "stage_score", "stage_rank",
    "similar_last", "next_last", "similar_2", "next_2", "similar_3", "next_3",
    "similar_max", "similar_mean",
    "popularity", "log_count", "history_length",
    "tag_affinity", "tag_last",
    "stage_share", "similar_recent", "next_recent", "before_last",
    "next_reach", "tag_last_3",
    "log_price", "price_vs_usual",
    "next_share", "next_list_rank", "similar_share", "similar_list_rank",
    "log_week", "log_month", "trend", "age",
    "own_count", "own_last", "return_rate",
)  # fmt: skip
# Features are only ever appended: a model learned with fewer reads the first columns it knows
# (`ranker_features`), so versions trained before a feature was added still serve.
RECENT = 20  # the latest items whose co-occurrence with a candidate is summarised
RECENCY = 0.7  # each older item counts this much of the one after it (the *_recent features)
# The ranker orders the first stage's best DEPTH items. Its cost at serving is about candidates x trees
# (LightGBM walks each tree once per candidate: about 8 µs a tree for 150 rows at 31 leaves). 200 scored
# a hair above 150 on Amazon Beauty's validation split (0.0803 against 0.0801 NDCG@10), at 822 µs a
# shopper for its 71 trees, features included.
DEPTH = 200
MAX_TREES = 200
LESSON_TARGETS = 3  # each shopper's lessons: their last item, then the one before, then the one before that
MAX_LESSON_SHOPPERS = 30_000  # per lesson step, sampled: training time stays bounded on large stores
# lessons (lists holding their target) a ranker learns from at most: LightGBM's time grows with them
# (x 150 rows each), and beyond this many the figures moved little (Amazon Beauty learns from 15,000)
MAX_LESSONS = 20_000
MIN_LESSONS = 300  # lists with their target among the candidates, below which no ranker is learned
EVALUATION_SHOPPERS = 5000
# tag features: which of a candidate's tags' bits (1: the shopper's, 2: the last item's, 4: the last
# three items') each of the eight combinations holds
_BITS = np.array([[(bits >> k) & 1 for k in range(3)] for bits in range(8)], dtype=np.float32)


DAY = 86400.0
ITEM_STATS = ("log_week", "log_month", "age", "return_rate")  # item_stats' columns


def item_counts(data: Any) -> np.ndarray:
    """Events per item of an Interactions (the `log_count` feature's input)."""
    return np.bincount(data.items, minlength=data.n_items).astype(np.float32)


def item_stats(data: Any) -> np.ndarray:
    """Per item of an Interactions (items x ITEM_STATS, float32), as of its last event: its events in the
    last 7 and 30 days (log); its age, the log of the days since its first event (0: no events); the
    share of its shoppers who came back to it (had it more than once)."""
    out = np.zeros((data.n_items, len(ITEM_STATS)), np.float32)
    if not len(data.items):
        return out
    times = np.asarray(data.times, dtype=np.float64)
    now = float(times.max())
    items = np.asarray(data.items, dtype=np.int64)
    for column, days in enumerate((7, 30)):
        recent = times > now - days * DAY
        out[:, column] = np.log1p(np.bincount(items[recent], minlength=data.n_items))
    first = np.full(data.n_items, np.inf)
    np.minimum.at(first, items, times)
    seen = np.isfinite(first)
    out[seen, 2] = np.log1p((now - first[seen]) / DAY)
    pairs, times_each = np.unique(
        np.asarray(data.users, dtype=np.int64) * data.n_items + items, return_counts=True
    )
    shoppers = np.bincount(pairs % data.n_items, minlength=data.n_items)
    returned = np.bincount(pairs[times_each > 1] % data.n_items, minlength=data.n_items)
    out[:, 3] = returned / np.maximum(shoppers, 1)
    return out


def _sorted_csr(matrix: Any, dtype: Any = None) -> sp.csr_matrix:
    """CSR with sorted indices, copied only when it must change (a version's arrays are read-only maps)."""
    matrix = sp.csr_matrix(matrix, dtype=dtype)
    if not matrix.has_sorted_indices:
        matrix = matrix.copy()
        matrix.sort_indices()
    return matrix


@dataclass
class FeatureSource:
    """The item-side arrays features are read from (a model version's, or a fit's offline). `arrivals`
    (the transitions transposed) is derived when not given; a version stores it, so that serving
    processes map it instead of each building its own."""

    similar: sp.csr_matrix  # items x items co-occurrence
    transitions: sp.csr_matrix  # items x items: what shoppers do next
    popularity: np.ndarray  # time-decayed, max 1
    counts: np.ndarray  # interactions per item
    tags: sp.csr_matrix | None = None  # items x tags, binary
    arrivals: sp.csr_matrix | None = None  # row j: the items shoppers came to j from
    prices: np.ndarray | None = None  # per item; 0 where unknown
    stats: np.ndarray | None = None  # items x ITEM_STATS (item_stats)

    @classmethod
    def of_fit(
        cls,
        model: Any,
        train: Any,
        tags: sp.csr_matrix | None = None,
        prices: np.ndarray | None = None,
    ) -> FeatureSource:
        """The arrays of a first stage fitted on `train` (a SequentialItemKNN, as serving holds it), the
        items' counts of events in `train`, and the items' tags and prices."""
        return cls(
            model.similar_,
            model.transitions_,
            model.popularity_,
            item_counts(train),
            tags,
            prices=prices,
            stats=item_stats(train),
        )

    def __post_init__(self) -> None:
        self.similar = _sorted_csr(self.similar)
        self.transitions = _sorted_csr(self.transitions)
        if self.arrivals is None:
            self.arrivals = sp.csr_matrix(self.transitions.T)
        self.arrivals = _sorted_csr(self.arrivals)
        reach = np.asarray(self.arrivals.sum(axis=1)).ravel()  # how much shoppers come to each item
        self.reach = (reach / (reach.max(initial=0.0) or 1.0)).astype(np.float32)
        self.popularity = np.asarray(self.popularity, dtype=np.float32)
        self.counts = np.asarray(self.counts, dtype=np.float32)
        if self.stats is not None:
            self.stats = np.asarray(self.stats, dtype=np.float32)
        if self.prices is not None:
            self.prices = np.nan_to_num(np.asarray(self.prices, dtype=np.float32), nan=0.0)
        if self.tags is not None:
            tags = sp.csr_matrix(self.tags, dtype=np.float32)
            if tags.nnz and not np.all(tags.data == 1.0):
                tags = tags.copy()
                tags.data[:] = 1.0
            self.tags = tags


def candidate_features(
    source: FeatureSource, history: np.ndarray, candidates: np.ndarray, stage_scores: np.ndarray
) -> np.ndarray:
    """The feature matrix (candidates x FEATURES) of one shopper; `history`: item positions, oldest first;
    `candidates` in the first stage's order (best first), with its scores. (Built a feature a row and
    returned transposed: column-major, which LightGBM reads as it is.)"""
    n = len(candidates)
    out = np.zeros((len(FEATURES), n), np.float32)
    if not n:
        return out.T
    candidates = np.asarray(candidates, dtype=np.int64)
    out[0] = stage_scores
    out[1] = np.arange(n)
    latest = np.asarray(history, dtype=np.int64)[::-1]
    recent = latest[:RECENT]
    # the candidates sorted once: every lookup of items among them searches this
    order = np.argsort(candidates, kind="stable")
    among = (order, candidates[order])
    if recent.size:
        # each recent item's link to every candidate, newest first: one gather of their rows each
        stacked, following = _lookup_rows((source.similar, source.transitions), recent, among)
        last = min(3, recent.size)
        out[2 : 2 + 2 * last : 2] = stacked[:last]
        out[3 : 3 + 2 * last : 2] = following[:last]
        out[8] = stacked.max(axis=0)
        out[9] = stacked.sum(axis=0) / np.float32(recent.size)
        weights = RECENCY ** np.arange(recent.size, dtype=np.float32)
        out[16] = weights @ stacked
        out[17] = weights @ following
        assert source.arrivals is not None  # (set in __post_init__)
        # the candidate, then the last
        out[18] = _lookup_row(source.arrivals, int(recent[0]), among)
    out[19] = source.reach[candidates]
    top = float(np.max(stage_scores))
    out[15] = stage_scores / top if top > 0 else 0.0
    out[10] = source.popularity[candidates]
    out[11] = np.log1p(source.counts[candidates])
    out[12] = len(history)
    if source.prices is not None:
        # its price (log), and against the shopper's usual: the median price of their recent items
        price = source.prices[candidates]
        out[21] = np.log1p(np.maximum(price, 0.0))
        usual = source.prices[recent] if recent.size else np.zeros(0, np.float32)
        usual = usual[usual > 0]
        if usual.size:  # (np.median's own overhead is several times the work on a few prices)
            usual = np.sort(usual)
            median = (float(usual[(usual.size - 1) // 2]) + float(usual[usual.size // 2])) / 2
            out[22] = np.where(price > 0, np.log(np.maximum(price, 1e-6) / median), 0.0)
    if source.tags is not None and recent.size:
        owner, tags, _ = row_entries(source.tags, candidates)
        recent_owner, recent_tags, _ = row_entries(source.tags, recent)
        # one bit per set of tags a candidate's are compared with: the shopper's, the last item's, the
        # last three's; each candidate's tags then read their bits at once, counted by candidate and bits
        flags = np.zeros(source.tags.shape[1], np.int64)
        flags[recent_tags] |= 1
        flags[recent_tags[recent_owner == 0]] |= 2
        flags[recent_tags[recent_owner < 3]] |= 4
        by_bits = np.bincount(owner * 8 + flags[tags], minlength=8 * n).reshape(n, 8).astype(np.float32)
        shared = (by_bits @ _BITS).T  # per candidate: its tags with bit 1, 2 and 4 set
        tagged = np.maximum(by_bits.sum(axis=1), 1.0)
        out[13] = shared[0] / tagged
        out[14] = shared[1]
        out[20] = shared[2] / tagged
    # the summed next-step and co-occurrence links against the rest of the shopper's own list
    for value, share, rank in ((17, 23, 24), (16, 25, 26)):
        column = out[value]
        best = float(column.max())
        out[share] = column / best if best > 0 else 0.0
        out[rank, np.argsort(-column, kind="stable")] = np.arange(n, dtype=np.float32)
    if source.stats is not None:
        stats = source.stats[candidates].T
        out[27:29] = stats[:2]
        # the last week's daily rate against the last month's (logs of counts + 1 per day)
        out[29] = np.log((np.expm1(stats[0]) / 7 + 1) / (np.expm1(stats[1]) / 30 + 1))
        out[30] = stats[2]
        out[33] = stats[3]
    if latest.size:
        # the shopper's own past with each candidate (their latest items, newest first)
        owner, back = _find(among, latest)
        if owner.size:
            out[31] = np.log1p(np.bincount(owner, minlength=n))
            newest = np.full(n, latest.size, np.int64)
            np.minimum.at(newest, owner, back)
            out[32] = np.where(newest < latest.size, 1.0 / (1.0 + newest), 0.0)
    return out.T


def _find(among: tuple[np.ndarray, np.ndarray], items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of `items` are among the candidates (`among`: their sorting order, and them sorted): the
    candidate's place in its list, and the item's place in `items`, for each item found."""
    order, ordered = among
    at = np.minimum(np.searchsorted(ordered, items), ordered.size - 1)
    found = np.flatnonzero(ordered[at] == items)
    return order[at[found]], found


def _lookup_rows(
    matrices: tuple[sp.csr_matrix, sp.csr_matrix], rows: np.ndarray, among: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """matrix[rows][:, candidates] of both matrices as dense (rows x candidates) arrays, read straight from
    the CSR arrays in one search (candidates distinct; `among` as _find takes them)."""
    first_owner, first_columns, first_values = row_entries(matrices[0], rows)
    second_owner, second_columns, second_values = row_entries(matrices[1], rows)
    place, found = _find(among, np.concatenate([first_columns, second_columns]))
    owner = np.concatenate([first_owner, second_owner + rows.size])
    out = np.zeros((2 * rows.size, among[0].size), np.float32)
    out[owner[found], place] = np.concatenate([first_values, second_values])[found]
    return out[: rows.size], out[rows.size :]


def _lookup_row(matrix: sp.csr_matrix, row: int, among: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """matrix[row][candidates], dense."""
    begin, end = matrix.indptr[row], matrix.indptr[row + 1]
    place, found = _find(among, matrix.indices[begin:end])
    out = np.zeros(among[0].size, np.float32)
    out[place] = matrix.data[begin:end][found]
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
        self.rounds = n_estimators
        self.params: dict[str, Any] = {
            "objective": "lambdarank",
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_child_samples,
            "seed": seed,
            "deterministic": True,
            "verbosity": -1,
            "lambdarank_truncation_level": 20,
            "eval_at": [10],
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
        stopping on its NDCG@10 (the model keeps the best round)."""
        import lightgbm

        train = lightgbm.Dataset(features, labels, group=groups, free_raw_data=True)
        extra: dict[str, Any] = {}
        if valid is not None:
            extra = {
                "valid_sets": [lightgbm.Dataset(valid[0], valid[1], group=valid[2], reference=train)],
                "callbacks": [lightgbm.early_stopping(50, verbose=False)],
            }
        self.booster_ = lightgbm.train(self.params, train, num_boost_round=self.rounds, **extra)
        return self

    @property
    def trees(self) -> int:
        return int(self.booster_.best_iteration or self.booster_.current_iteration())

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.booster_.predict(features, num_iteration=self.trees, num_threads=1), dtype=np.float32
        )

    def dump(self) -> str:
        """The model as LightGBM's text, its best round last (what an artifact stores)."""
        return str(self.booster_.model_to_string(num_iteration=self.trees))


def ranker_features(ranker: Any) -> int:
    """How many of FEATURES a loaded ranker reads (the first ones: features are only appended)."""
    return int(ranker.width)


class LoadedRanker:
    """A dumped ranker, ready to score candidate_features' rows on one thread. LightGBM's `predict` sets
    up its predictor on every call (alone, 124 µs against 54 for 200 rows of a 6-tree model; in serving's
    path 102 against 89); the predictor is set up once here instead, through LightGBM's own class for it,
    or each call falls back to `predict` where that class is not there."""

    def __init__(self, text: str):
        import lightgbm

        self.booster = lightgbm.Booster(model_str=text)
        self.width = int(self.booster.num_feature())
        self.inner: Any = None
        try:
            from lightgbm.basic import _InnerPredictor

            self.inner = _InnerPredictor.from_booster(booster=self.booster, pred_parameter={"num_threads": 1})
        except (ImportError, AttributeError, TypeError):  # another LightGBM: predict() each time
            self.inner = None

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.inner is not None:
            return np.asarray(self.inner.predict(features), dtype=np.float64)
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float64)


def load_ranker(text: str) -> LoadedRanker:
    """A dumped ranker, ready to score (serving's copy; its `predict` takes candidate_features' rows)."""
    return LoadedRanker(text)
