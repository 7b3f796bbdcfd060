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
  the candidate's shoppers who came back to it (`item_stats`);
- the shopper's current session: how many of their latest events it holds (the run of events, up to the
  latest, that came with the latest's session id; 0: it came with none), and the candidate's
  co-occurrence and next-step links summed over that session's items (`session_run`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from recommendations.engine.interactions import found_at, read_only

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
    "session_length", "similar_session", "next_session",
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
    arrays: tuple[Any, ...] = field(init=False, repr=False)  # what the compiled features read (set below)

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
        # what the compiled features read, each array read-only and of one dtype whatever it came from (a
        # fit's own arrays, or a version's maps): one compiled version of it serves every source
        assert self.arrivals is not None
        tags_arrays = (self.tags.indptr, self.tags.indices) if self.tags is not None else _NO_TAGS
        self.arrays = tuple(
            read_only(array, dtype)
            for array, dtype in (
                *_csr(self.similar),
                *_csr(self.transitions),
                *_csr(self.arrivals),
                (self.reach, np.float32),
                (self.popularity, np.float32),
                (self.counts, np.float32),
                (self.prices if self.prices is not None else _NO_PRICES, np.float32),
                (tags_arrays[0], None),
                (tags_arrays[1], None),
            )
        ) + (
            self.tags.shape[1] if self.tags is not None else 0,
            read_only(self.stats if self.stats is not None else _NO_STATS, np.float32),
        )


def _csr(matrix: sp.csr_matrix) -> tuple[tuple[np.ndarray, Any], ...]:
    return (matrix.indptr, None), (matrix.indices, None), (matrix.data, np.float32)


_NO_PRICES = np.zeros(0, np.float32)
_NO_TAGS = (np.zeros(1, np.int32), np.zeros(0, np.int32))
_NO_STATS = np.zeros((0, len(ITEM_STATS)), np.float32)


def session_run(sessions: np.ndarray | None) -> int:
    """How many of a shopper's latest events (oldest first: their session codes, 0 for none) belong to
    their current session: the run, up to the latest event, that came with its session (0: it came with
    none). Serving reads it from the real-time profile, training from the events."""
    if sessions is None or not len(sessions) or not sessions[-1]:
        return 0
    other = np.flatnonzero(np.asarray(sessions) != sessions[-1])
    return int(len(sessions) - (other[-1] + 1 if other.size else 0))


def candidate_features(
    source: FeatureSource,
    history: np.ndarray,
    candidates: np.ndarray,
    stage_scores: np.ndarray,
    session: int = 0,
) -> np.ndarray:
    """The feature matrix (candidates x FEATURES) of one shopper; `history`: item positions, oldest first;
    `candidates` in the first stage's order (best first, distinct), with its scores; `session`: how
    many of the history's latest items are the current session's (session_run). (Built a feature a row
    and returned transposed: column-major, which LightGBM reads as it is.)

    The work is a compiled loop (`_features`, numba): over the few hundred candidates and the links of a
    shopper's latest items it is small, and as array operations its cost was theirs, about 100 of them,
    each a microsecond or two whatever its size (on the lines bench store, 217 µs a list against about 80
    as one loop, 41 for a list already in the CPU's cache)."""
    n = len(candidates)
    out = np.zeros((len(FEATURES), n), np.float32)
    if not n:
        return out.T
    _features(
        out,
        np.asarray(candidates, dtype=np.int64),
        np.asarray(stage_scores, dtype=np.float32),
        np.ascontiguousarray(np.asarray(history, dtype=np.int64)[::-1]),
        min(int(session), len(history)),
        *source.arrays,
    )
    return out.T


def compile_features() -> None:
    """Compiles the features' loop (or loads it from numba's cache: a first call otherwise compiles it, in
    seconds); the image runs this once at its build."""
    matrix = sp.csr_matrix(np.eye(2, dtype=np.float32))
    source = FeatureSource(matrix, matrix, np.ones(2), np.ones(2), matrix, prices=np.ones(2))
    candidate_features(source, np.array([0, 1]), np.array([1, 0]), np.ones(2, np.float32))


@numba.njit(cache=True, nogil=True, inline="always")
def _place(order, ordered, item):  # noqa: ANN001, ANN202
    """The candidate's place in its list (-1: not a candidate); `ordered`: the candidates sorted, `order`
    their places."""
    at = found_at(ordered, item)
    return order[at] if at >= 0 else -1


@numba.njit(cache=True, nogil=True, inline="always")
def _links(out, order, ordered, ptr, idx, val, item, k, weight, session, columns):  # noqa: ANN001, ANN202, PLR0913
    """One recent item's links (a CSR row: ptr, idx, val) to the candidates, into `columns`: (its own
    link while among the last three, k-th at column + 2k; recency-summed; summed over the session;
    strongest, and plain sum: -1 for none)."""
    own, summed, in_session, strongest, total = columns
    for e in range(ptr[item], ptr[item + 1]):
        i = _place(order, ordered, idx[e])
        if i >= 0:
            v = val[e]
            if k < 3:
                out[own + 2 * k, i] = v
            out[summed, i] += weight * v
            if k < session:
                out[in_session, i] += v
            if strongest >= 0:
                out[strongest, i] = max(out[strongest, i], v)
                out[total, i] += v


@numba.njit(cache=True, nogil=True)
def _features(  # noqa: C901, PLR0912, PLR0913, PLR0915
    out, candidates, stage, latest, session,  # noqa: ANN001
    s_ptr, s_idx, s_val, t_ptr, t_idx, t_val, a_ptr, a_idx, a_val,  # noqa: ANN001
    reach, popularity, counts, prices, g_ptr, g_idx, n_tags, stats,  # noqa: ANN001
):  # fmt: skip
    """candidate_features' work, into `out` (FEATURES x candidates, zeros); `latest`: the history, newest
    first, of which the first `session` are the current session's (their links are summed within the
    RECENT); the similar, transitions and arrivals matrices as CSR arrays, then the item-side arrays;
    empty `prices`, `stats` and a tags matrix with no columns: not known."""
    n = candidates.size
    # the candidates sorted once: every item looked up among them is searched for here
    order = np.argsort(candidates)
    ordered = candidates[order]
    recent = min(latest.size, RECENT)
    top = stage.max()
    for i in range(n):
        c = candidates[i]
        out[0, i] = stage[i]
        out[1, i] = i
        out[15, i] = stage[i] / top if top > 0 else 0.0
        out[10, i] = popularity[c]
        out[11, i] = np.log1p(counts[c])
        out[12, i] = latest.size
        out[19, i] = reach[c]
        out[34, i] = session
    # each recent item's links to the candidates, newest first: co-occurrence, then what shoppers do next
    weight = 1.0
    for k in range(recent):
        # (columns: the k-th latest item's own, the recency-summed, the session's; co-occurrence also
        # keeps the strongest and the plain sum)
        _links(out, order, ordered, s_ptr, s_idx, s_val, latest[k], k, weight, session, (2, 16, 35, 8, 9))
        _links(out, order, ordered, t_ptr, t_idx, t_val, latest[k], k, weight, session, (3, 17, 36, -1, -1))
        weight *= RECENCY
    if recent:
        for i in range(n):
            out[9, i] /= recent
        # the candidate, then the last item: how often shoppers came to the last from it
        item = latest[0]
        for e in range(a_ptr[item], a_ptr[item + 1]):
            i = _place(order, ordered, a_idx[e])
            if i >= 0:
                out[18, i] = a_val[e]
    if prices.size:
        # its price (log), and against the shopper's usual: the median price of their recent items
        usual = np.empty(recent, np.float64)
        known = 0
        for k in range(recent):
            if prices[latest[k]] > 0:
                usual[known] = prices[latest[k]]
                known += 1
        median = 0.0
        if known:
            usual = np.sort(usual[:known])
            median = (usual[(known - 1) // 2] + usual[known // 2]) / 2
        for i in range(n):
            price = prices[candidates[i]]
            out[21, i] = np.log1p(max(price, 0.0))
            if known and price > 0:
                out[22, i] = np.log(max(price, 1e-6) / median)
    if n_tags and recent:
        # tag affinity: the share of a candidate's tags among the shopper's recent items' tags, its tags
        # shared with the last item, and the share among the last three items' tags
        flags = np.zeros(n_tags, np.uint8)
        for k in range(recent):
            bits = 1 | (2 if k == 0 else 0) | (4 if k < 3 else 0)
            for e in range(g_ptr[latest[k]], g_ptr[latest[k] + 1]):
                flags[g_idx[e]] |= bits
        for i in range(n):
            c = candidates[i]
            tagged, shopper, last, last_three = 0, 0, 0, 0
            for e in range(g_ptr[c], g_ptr[c + 1]):
                bits = flags[g_idx[e]]
                tagged += 1
                shopper += bits & 1
                last += (bits >> 1) & 1
                last_three += (bits >> 2) & 1
            tagged = max(tagged, 1)
            out[13, i] = shopper / tagged
            out[14, i] = last
            out[20, i] = last_three / tagged
    # the summed next-step and co-occurrence links against the rest of the shopper's own list
    for value, share, rank in ((17, 23, 24), (16, 25, 26)):
        best = out[value].max()
        for i in range(n):
            out[share, i] = out[value, i] / best if best > 0 else 0.0
        ranked = np.argsort(-out[value], kind="mergesort")
        for place in range(n):
            out[rank, ranked[place]] = place
    if stats.shape[0]:
        for i in range(n):
            c = candidates[i]
            out[27, i] = stats[c, 0]
            out[28, i] = stats[c, 1]
            # the last week's daily rate against the last month's (logs of counts + 1 per day)
            out[29, i] = np.log((np.expm1(stats[c, 0]) / 7 + 1) / (np.expm1(stats[c, 1]) / 30 + 1))
            out[30, i] = stats[c, 2]
            out[33, i] = stats[c, 3]
    # the shopper's own past with each candidate (all their latest items, newest first)
    newest = np.full(n, -1, np.int64)
    for k in range(latest.size):
        i = _place(order, ordered, latest[k])
        if i >= 0:
            out[31, i] += 1
            if newest[i] < 0:
                newest[i] = k
    for i in range(n):
        if newest[i] >= 0:
            out[31, i] = np.log1p(out[31, i])
            out[32, i] = 1.0 / (1.0 + newest[i])


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
    """A dumped ranker, ready to score candidate_features' rows on one thread. Its trees are walked by a
    compiled loop over the model's own splits (`_forest`, numba): LightGBM's call costs about 60 µs for
    7 trees over 200 rows, mostly its set-up; the loop gives the same sums (LightGBM's decision rule, in
    the same order). A model with anything the loop does not know (categorical splits, linear trees)
    is scored by LightGBM's predictor, set up once (LightGBM's `predict` sets it up on every call)."""

    def __init__(self, text: str):
        import lightgbm

        self.booster = lightgbm.Booster(model_str=text)
        self.width = int(self.booster.num_feature())
        self.forest = _forest_arrays(self.booster.dump_model())
        self.inner: Any = None
        if self.forest is not None:
            return
        try:
            from lightgbm.basic import _InnerPredictor

            self.inner = _InnerPredictor.from_booster(booster=self.booster, pred_parameter={"num_threads": 1})
        except (ImportError, AttributeError, TypeError):  # another LightGBM: predict() each time
            self.inner = None

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.forest is not None:
            out = np.zeros(features.shape[0], np.float64)
            if features.shape[0]:
                _forest(*(np.asarray(features, dtype=np.float32), *self.forest, out))
            return out
        if self.inner is not None:
            return np.asarray(self.inner.predict(features), dtype=np.float64)
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float64)


_MISSING = {"None": 0, "Zero": 1, "NaN": 2}


def _forest_arrays(model: dict[str, Any]) -> tuple[np.ndarray, ...] | None:
    """A LightGBM model's trees (its dump_model()) as flat arrays: each tree's root, then per node its
    feature (-1: a leaf), threshold, children, default direction, missing type, and a leaf's value.
    None when a tree holds what `_forest` does not walk."""
    if model.get("num_tree_per_iteration", 1) != 1:
        return None
    roots: list[int] = []
    nodes: list[tuple[int, float, int, int, bool, int, float]] = []

    def add(node: dict[str, Any]) -> int | None:
        at = len(nodes)
        if "leaf_value" in node:
            nodes.append((-1, 0.0, -1, -1, False, 0, float(node["leaf_value"])))
            return at
        if node.get("decision_type") != "<=" or node.get("missing_type") not in _MISSING:
            return None
        nodes.append((int(node["split_feature"]), float(node["threshold"]), -1, -1,
                      bool(node["default_left"]), _MISSING[node["missing_type"]], 0.0))  # fmt: skip
        left, right = add(node["left_child"]), add(node["right_child"])
        if left is None or right is None:
            return None
        nodes[at] = (*nodes[at][:2], left, right, *nodes[at][4:])
        return at

    for tree in model.get("tree_info", []):
        if tree.get("num_cat", 0) or "tree_structure" not in tree:
            return None
        root = add(tree["tree_structure"])
        if root is None:
            return None
        roots.append(root)
    columns: list[tuple[Any, ...]] = list(zip(*nodes, strict=True)) if nodes else [()] * 7
    return (
        np.array(roots, np.int64),
        np.array(columns[0], np.int64), np.array(columns[1], np.float64),
        np.array(columns[2], np.int64), np.array(columns[3], np.int64),
        np.array(columns[4], np.bool_), np.array(columns[5], np.int64), np.array(columns[6], np.float64),
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _forest(x, roots, feature, threshold, left, right, default_left, missing, value, out):  # noqa: ANN001, PLR0913
    """Each row's sum of its leaves' values over the trees, in their order, into `out`, by LightGBM's
    numerical decision: a value missing by the split's missing type (NaN; or zero, within 1e-35) goes
    the default way, otherwise left when at most the threshold (a NaN counts as zero unless NaN is the
    missing type)."""
    for i in range(x.shape[0]):
        total = 0.0
        for tree in range(roots.size):
            node = roots[tree]
            while feature[node] >= 0:
                v = np.float64(x[i, feature[node]])
                kind = missing[node]
                if np.isnan(v) and kind != 2:
                    v = 0.0
                if (kind == 1 and -1e-35 <= v <= 1e-35) or (kind == 2 and np.isnan(v)):
                    node = left[node] if default_left[node] else right[node]
                elif v <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            total += value[node]
        out[i] = total


def load_ranker(text: str) -> LoadedRanker:
    """A dumped ranker, ready to score (serving's copy; its `predict` takes candidate_features' rows)."""
    return LoadedRanker(text)
