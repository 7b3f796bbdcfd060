"""The for-user model: item-to-item neighbours (co-occurrence plus sequential transitions) applied to a
recency-weighted history, with optional repeat purchases and a little popularity to break ties.

Measured on Amazon Beauty (bench/quality.py): weighting the latest events more and adding what shoppers
do next lifts NDCG@10 well above plain item-kNN, EASE and ALS; the weights are tuned per store on a
validation split (recommendations/engine/evaluation.py)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numba
import numpy as np
import scipy.sparse as sp

from recommendations.engine.interactions import IdIndex, Interactions, read_only, user_item_matrix
from recommendations.engine.neighbors import ItemCooccurrence, ItemTransitions, top_k_per_row


def decayed_popularity(data: Interactions, *, half_life_days: float, now: float | None = None) -> np.ndarray:
    """Event weights summed per item, each halved every `half_life_days` before `now`; max is 1."""
    if len(data) == 0:
        return np.zeros(data.n_items, dtype=np.float32)
    now = float(data.times.max()) if now is None else now
    age_days = np.maximum(now - data.times, 0) / 86400.0
    weights = data.weights * np.power(0.5, age_days / half_life_days)
    scores = np.bincount(data.items, weights=weights, minlength=data.n_items).astype(np.float32)
    top = scores.max(initial=0.0)
    return scores / top if top > 0 else scores


def _row_max_normalise(matrix: np.ndarray) -> np.ndarray:
    peak = matrix.max(axis=1, keepdims=True)
    return np.divide(matrix, peak, out=np.zeros_like(matrix), where=peak > 0)


class SequentialItemKNN:
    def __init__(
        self,
        *,
        k: int = 100,
        alpha: float = 0.5,
        shrink: float = 10.0,
        sequence_window: int = 3,
        sequence_decay: float = 0.5,
        sequence_weight: float = 3.0,
        history_decay: float = 0.5,
        repeat_weight: float = 0.0,
        popularity_weight: float = 0.01,
        popularity_half_life_days: float = 30.0,
        interaction_half_life_days: float | None = None,
    ):
        self.k = k
        self.alpha = alpha
        self.shrink = shrink
        self.sequence_window = sequence_window
        self.sequence_decay = sequence_decay
        self.sequence_weight = sequence_weight
        self.history_decay = history_decay
        self.repeat_weight = repeat_weight
        self.popularity_weight = popularity_weight
        self.popularity_half_life_days = popularity_half_life_days
        self.interaction_half_life_days = interaction_half_life_days

    def fit(self, data: Interactions) -> SequentialItemKNN:
        weighted = data
        if self.interaction_half_life_days and len(data):
            # older co-occurrences count less: tastes and catalogs drift
            age_days = (float(data.times.max()) - data.times) / 86400.0
            decayed = data.weights * np.power(0.5, age_days / self.interaction_half_life_days).astype(
                np.float32
            )
            weighted = replace(data, weights=decayed)
        user_items = user_item_matrix(weighted)
        user_items.data = np.log1p(user_items.data)  # many views of one item should not drown the rest
        cooccurrence = ItemCooccurrence(k=self.k, alpha=self.alpha, shrink=self.shrink).fit(user_items)
        self.similar_ = cooccurrence.similarity_
        self.transitions_ = (
            ItemTransitions(window=self.sequence_window, decay=self.sequence_decay, k=self.k)
            .fit(data)
            .transitions_
        )
        self.popularity_ = decayed_popularity(data, half_life_days=self.popularity_half_life_days)
        self.set_sequence_weight(self.sequence_weight)
        return self

    def set_sequence_weight(self, sequence_weight: float) -> None:
        """Recombine the neighbour matrix; tuning changes this weight without refitting."""
        self.sequence_weight = sequence_weight
        scale = float(self.similar_.max()) if self.similar_.nnz else 1.0
        combined = self.similar_ + (sequence_weight * scale) * self.transitions_
        self.neighbours_ = top_k_per_row(combined.tocsr(), self.k).astype(np.float32)

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores of every item for each row of `history` (users x items, recency-weighted)."""
        return score_histories(
            history, self.neighbours_, self.popularity_,
            repeat_weight=self.repeat_weight, popularity_weight=self.popularity_weight,
        )  # fmt: skip

    def recommend(
        self, history: sp.csr_matrix, *, n: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top `n` (indices, scores) per row; `exclude` (same shape) marks items never to return."""
        return recommend_histories(
            history, self.neighbours_, self.popularity_, n=n, exclude=exclude,
            repeat_weight=self.repeat_weight, popularity_weight=self.popularity_weight,
        )  # fmt: skip


def score_histories(
    history: sp.csr_matrix,
    neighbours: sp.csr_matrix,
    popularity: np.ndarray,
    *,
    repeat_weight: float,
    popularity_weight: float,
) -> np.ndarray:
    """The model's scoring rule, shared by offline evaluation and serving: neighbours of the history
    (each row scaled to a maximum of one), plus the history itself for repeat purchases, plus a little
    popularity."""
    history = sp.csr_matrix(history, dtype=np.float32)
    scores = _row_max_normalise(np.asarray((history @ neighbours).todense(), dtype=np.float32))
    if repeat_weight:
        scores += repeat_weight * _row_max_normalise(history.toarray())
    if popularity_weight:
        scores += popularity_weight * popularity[None, :]
    return scores


def recommend_histories(
    history: sp.csr_matrix,
    neighbours: sp.csr_matrix,
    popularity: np.ndarray,
    *,
    n: int,
    repeat_weight: float,
    popularity_weight: float,
    exclude: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best `n` items of `score_histories` per row, as (indices, scores), best first and ties to the
    lower item, never an item of `exclude` (same shape as `history`) while others are left. The same
    scores to the last bit, but without a dense users x items matrix: an item the history's neighbours do
    not reach scores popularity alone, so only the reached items and each row's `n` most popular others
    can be among its best (as serving ranks them, recommendations/serving/for_user.py); a catalog of
    100,000 items ranks a few thousand per shopper instead of all of them."""
    history = sp.csr_matrix(history, dtype=np.float32)
    history.sum_duplicates()
    n_rows, n_items = history.shape[0], neighbours.shape[1]
    n = min(n, n_items)
    exclude = sp.csr_matrix(exclude, dtype=np.float32) if exclude is not None else None
    if exclude is not None:
        exclude.sum_duplicates()
        exclude.eliminate_zeros()
    excluded_per_row = np.diff(exclude.indptr) if exclude is not None else np.zeros(n_rows, np.int64)
    reach = n + int(excluded_per_row.max(initial=0))  # how deep each row may need to go into popularity
    if n <= 0 or n_rows == 0 or reach >= n_items:  # a catalog this small: rank it all
        scores = score_histories(
            history, neighbours, popularity, repeat_weight=repeat_weight, popularity_weight=popularity_weight
        )
        if exclude is not None and exclude.nnz:
            rows, cols = exclude.nonzero()
            scores[rows, cols] = -np.inf
        return top_n(scores, n)
    personal = (history @ neighbours).tocsr().astype(np.float32)
    personal.sum_duplicates()
    personal.data = _row_max_normalise_sparse(personal)
    if repeat_weight:
        own = history.copy()
        own.data = repeat_weight * _row_max_normalise_sparse(history)
        personal = (personal + own).tocsr()
        personal.sum_duplicates()
    owner = np.repeat(np.arange(n_rows), np.diff(personal.indptr))
    base = np.float32(popularity_weight) * np.asarray(popularity, dtype=np.float32)
    rows, cols = owner, personal.indices.astype(np.int64)
    values = personal.data + base[cols] if popularity_weight else personal.data.copy()
    keys = rows * n_items + cols
    excluded_keys = (
        np.repeat(np.arange(n_rows), excluded_per_row) * n_items + exclude.indices
        if exclude is not None
        else np.zeros(0, np.int64)
    )
    if excluded_keys.size:
        allowed = ~_sorted_contains(excluded_keys, keys)
        rows, cols, values, keys = rows[allowed], cols[allowed], values[allowed], keys[allowed]
    # each row's `n` most popular items it may be answered (those reached are already there, scored higher)
    popular = np.argsort(-base, kind="stable")[:reach]
    popular_keys = np.arange(n_rows)[:, None] * n_items + popular[None, :]
    usable = ~_sorted_contains(excluded_keys, popular_keys)
    usable &= np.cumsum(usable, axis=1) <= n
    usable &= ~_sorted_contains(keys, popular_keys)
    extra_rows, extra_at = np.nonzero(usable)
    rows = np.concatenate([rows, extra_rows])
    cols = np.concatenate([cols, popular[extra_at]])
    values = np.concatenate([values, base[popular[extra_at]]])
    order = _by_row_best_first(rows, cols, values, n_items)
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(rows.size) - starts[rows]
    best = rank < n
    top_items = np.zeros((n_rows, n), np.int64)
    top_scores = np.zeros((n_rows, n), np.float32)
    top_items[rows[best], rank[best]] = cols[best]
    top_scores[rows[best], rank[best]] = values[best]
    return top_items, top_scores


def _by_row_best_first(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_items: int) -> np.ndarray:
    """The order of np.lexsort((cols, -values, rows)) (by row, best first, ties to the lower column), by
    two stable sorts of integer keys (radix sorts: several times quicker than lexsort's three passes)."""
    by_column = np.argsort(rows * n_items + cols, kind="stable")
    bits = (values[by_column] + np.float32(0.0)).view(np.uint32)  # + 0.0: -0.0 as 0.0
    ascending = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    key = (rows[by_column].astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)
    return by_column[np.argsort(key, kind="stable")]


def _sorted_contains(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Which of `needles` are in `haystack` (sorted ascending): np.isin without its sort of both."""
    if haystack.size == 0:
        return np.zeros(needles.shape, dtype=bool)
    at = np.minimum(np.searchsorted(haystack, needles), haystack.size - 1)
    return haystack[at] == needles


def _row_max_normalise_sparse(matrix: sp.csr_matrix) -> np.ndarray:
    """`_row_max_normalise` of a CSR matrix's stored values (its rows' zeros count in the maximum)."""
    lengths = np.diff(matrix.indptr)
    peak = np.zeros(matrix.shape[0], np.float32)
    filled = lengths > 0
    if matrix.nnz:
        peak[filled] = np.maximum(np.maximum.reduceat(matrix.data, matrix.indptr[:-1][filled]), 0)
    per_value = np.repeat(peak, lengths)
    return np.divide(matrix.data, per_value, out=np.zeros_like(matrix.data), where=per_value > 0)


def add_sparse(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The sum of sparse vectors given as (indices, values): (sorted unique indices, summed values; each
    index's values summed in float64 in the order given, then float32)."""
    indices = np.concatenate([part[0] for part in parts])
    values = np.concatenate([part[1] for part in parts])
    unique, sums = _grouped_sums(read_only(indices, np.int64), read_only(values, np.float64))
    return unique, sums.astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _grouped_sums(indices, values):  # noqa: ANN001, ANN202
    """(sorted unique indices, the sum of each one's values in the order given, in the values' precision):
    np.unique with np.add.at or np.bincount, to the bit, in one compiled pass after a stable sort."""
    order = np.argsort(indices, kind="mergesort")
    unique = np.empty(indices.size, np.int64)
    sums = np.zeros(indices.size, values.dtype)
    last = -1
    for j in range(order.size):
        at = order[j]
        if last < 0 or indices[at] != unique[last]:
            last += 1
            unique[last] = indices[at]
        sums[last] += values[at]
    return unique[: last + 1], sums[: last + 1]


def row_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored entries of `rows` of a CSR matrix, straight from its arrays: (which of `rows` each comes
    from, its column, its value). For the few rows of one request, scipy's row slicing costs more in
    set-up than in work."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
    return np.repeat(np.arange(rows.size), lengths), matrix.indices[offsets], matrix.data[offsets]


def gather_rows(
    matrix: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """sum(weights[i] * matrix[rows[i]]) as (sorted indices, values).

    A compiled loop over the rows' stored entries into a dense float64 accumulator this thread keeps: the
    same sums as `add_sparse` over `row_entries` to the bit (each product in the matrix's precision, summed
    in float64 in the order of `rows` and of each row's entries, then float32), without sorting every
    entry. Serving calls this for every computed answer (a history of 200 items reaches thousands)."""
    if len(rows) == 0 or matrix.nnz == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    sums, seen = _scratch(matrix.shape[1])
    return _gather_rows(
        read_only(matrix.indptr), read_only(matrix.indices), read_only(matrix.data),
        read_only(rows, np.int64), read_only(weights, np.float32), sums, seen,
    )  # fmt: skip


_scratch_of_thread = threading.local()


def _scratch(size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's dense scratch of at least `size` entries (float64 sums, uint8 flags), all zero: the
    compiled loops zero what they touched before they return. Grown, never shrunk: 9 bytes an item of the
    largest catalog the thread served."""
    held = getattr(_scratch_of_thread, "arrays", None)
    if held is None or held[0].size < size:
        held = _scratch_of_thread.arrays = (np.zeros(size, np.float64), np.zeros(size, np.uint8))
    return held


@numba.njit(cache=True, nogil=True)
def _gather_rows(indptr, indices, data, rows, weights, sums, seen):  # noqa: ANN001, ANN202, PLR0913
    total = 0
    for r in range(rows.size):
        total += indptr[rows[r] + 1] - indptr[rows[r]]
    touched = np.empty(total, np.int64)
    found = 0
    for r in range(rows.size):
        weight = weights[r]
        for entry in range(indptr[rows[r]], indptr[rows[r] + 1]):
            column = indices[entry]
            if seen[column] == 0:
                seen[column] = 1
                touched[found] = column
                found += 1
            sums[column] += np.float64(data[entry] * weight)
    columns = np.sort(touched[:found])
    values = np.empty(found, np.float32)
    for i in range(found):
        column = columns[i]
        values[i] = np.float32(sums[column])
        sums[column] = 0.0
        seen[column] = 0
    return columns, values


def ranked_by_full_score(
    indices: np.ndarray,
    values: np.ndarray,
    popularity: np.ndarray,
    popularity_order: np.ndarray,
    *,
    weight: float,
    at_most: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The best `at_most` items by the full score, `weight * popularity + personal`, as (items, float32
    scores) in answer order: score descending, then item ascending. The candidates are the items with a
    personal part (`indices`, sorted, and `values`: personal_scores_one) and the `at_most` first of
    `popularity_order` (items by popularity descending, ties by item); only finite scores above zero.

    The same list as scoring all those candidates and sorting them, built by a compiled merge: the
    personal items sorted, the popular ones already in order (their score is popularity alone), so
    serving does not score and partition thousands of popular items for every answer."""
    _, seen = _scratch(len(popularity))
    return _ranked_by_full_score(
        read_only(indices, np.int64), read_only(values, np.float32), read_only(popularity, np.float32),
        read_only(popularity_order[:at_most], np.int64), np.float32(weight), at_most, seen,
    )  # fmt: skip


@numba.njit(cache=True, nogil=True, inline="always")
def _positive(score):  # noqa: ANN001, ANN202
    """A candidate's score counts: finite and above zero (as every candidate was filtered before)."""
    return np.isfinite(score) and score > 0


@numba.njit(cache=True, nogil=True)
def _ranked_by_full_score(indices, values, popularity, order, weight, at_most, seen):  # noqa: ANN001, ANN202, PLR0913
    scores = np.empty(indices.size, np.float32)
    kept = np.empty(indices.size, np.int64)
    count = 0
    for i in range(indices.size):
        seen[indices[i]] = 1  # (an item with a personal part is never a popular-only candidate)
        score = weight * popularity[indices[i]] + values[i]
        scores[i] = score
        if _positive(score):
            kept[count] = i
            count += 1
    kept = kept[:count]
    personal = kept[np.argsort(-scores[kept], kind="mergesort")]  # (stable: ties keep item order)
    items = np.empty(at_most, np.int64)
    out = np.empty(at_most, np.float32)
    p, q, n = 0, 0, 0
    while n < at_most:
        while q < order.size and (seen[order[q]] or not _positive(weight * popularity[order[q]])):
            q += 1  # (popularity alone: not above zero, or an item with a personal part)
        if p < personal.size:
            item_p, score_p = indices[personal[p]], scores[personal[p]]
            if q < order.size:
                score_q = weight * popularity[order[q]]
                if score_q > score_p or (score_q == score_p and order[q] < item_p):
                    items[n], out[n] = order[q], score_q
                    q += 1
                    n += 1
                    continue
            items[n], out[n] = item_p, score_p
            p += 1
        elif q < order.size:
            items[n], out[n] = order[q], weight * popularity[order[q]]
            q += 1
        else:
            break
        n += 1
    for i in range(indices.size):
        seen[indices[i]] = 0
    return items[:n], out[:n]


def strongest_sources(
    neighbours: sp.csr_matrix, history_items: np.ndarray, history_weights: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """For each of `targets` (items), which of `history_items` contributed most to its personal score:
    the index of the item whose link to the target, times the item's weight, is largest (the first such
    in `history_items` on a tie); -1 where none contributed a positive amount. What a reason names
    ("because you showed interest in X"), as a compiled loop over the history's links."""
    if len(targets) == 0:
        return np.zeros(0, np.int64)
    if len(history_items) == 0 or neighbours.nnz == 0:
        return np.full(len(targets), -1, np.int64)
    _, seen = _scratch(neighbours.shape[1])
    return _strongest_sources(
        read_only(neighbours.indptr), read_only(neighbours.indices), read_only(neighbours.data),
        read_only(history_items, np.int64), read_only(history_weights, np.float32),
        read_only(targets, np.int64), seen,
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _strongest_sources(indptr, indices, data, items, weights, targets, seen):  # noqa: ANN001, ANN202, PLR0913
    # a target's place among the targets + 1 in `seen` (the first place of a target named twice)
    slot = np.empty(targets.size, np.int64)
    for t in range(targets.size):
        if seen[targets[t]] == 0 and t < 255:
            seen[targets[t]] = t + 1
        slot[t] = seen[targets[t]] - 1 if seen[targets[t]] > 0 else -1
    best = np.zeros(targets.size, np.float32)
    source = np.full(targets.size, -1, np.int64)
    for r in range(items.size):
        weight = weights[r]
        for entry in range(indptr[items[r]], indptr[items[r] + 1]):
            place = seen[indices[entry]]
            if place > 0:
                value = data[entry] * weight
                if value > best[place - 1]:
                    best[place - 1] = value
                    source[place - 1] = r
    out = np.empty(targets.size, np.int64)
    for t in range(targets.size):
        out[t] = source[slot[t]] if slot[t] >= 0 else -1
        seen[targets[t]] = 0
    return out


def compile_serving() -> None:
    """Compiles serving's loops (or loads them from numba's cache: a first call otherwise compiles them,
    in seconds); the image runs this once at its build, and a web process when it starts."""
    matrix = sp.csr_matrix(np.eye(3, dtype=np.float32))
    indices, values = gather_rows(matrix, np.array([0, 2]), np.ones(2, np.float32))
    ranked_by_full_score(indices, values, np.ones(3, np.float32), np.arange(3), weight=0.01, at_most=3)
    strongest_sources(matrix, np.array([0, 2]), np.ones(2, np.float32), np.array([1, 2]))
    IdIndex(ids=np.arange(3, dtype=np.int64)).positions(np.array([1, 5], dtype=np.int64))
    add_sparse((np.array([2, 0]), np.ones(2, np.float32)), (np.array([2]), np.ones(1, np.float32)))
    history_vector(np.array([2, 0, 2]), np.ones(3, np.float32), decay=0.9)


def personal_scores_one(
    history_items: np.ndarray, history_weights: np.ndarray, neighbours: sp.csr_matrix, *, repeat_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """The personal part of `score_histories` for one history given as a sparse vector (sorted unique
    items, their recency weights; see `history_vector`), as (sorted indices, values): only the items the
    history's neighbours reach (and the history itself, for repeats) are non-zero. Adding
    `popularity_weight * popularity` gives `score_histories` exactly; serving ranks the non-zero items
    and the most popular ones only, instead of every item of the catalog."""
    indices, values = gather_rows(neighbours, history_items, history_weights)
    peak = values.max(initial=0.0)
    if peak > 0:
        values = values / peak
    if repeat_weight and history_items.size:
        indices, values = add_sparse(
            (indices, values), (history_items, (repeat_weight / history_weights.max()) * history_weights)
        )
    return indices, values


def personal_scores_sparse(
    history: sp.csr_matrix, neighbours: sp.csr_matrix, *, repeat_weight: float
) -> sp.csr_matrix:
    """`personal_scores_one` for a history row, as a 1 x items matrix."""
    history = sp.csr_matrix(history, dtype=np.float32)
    history.sum_duplicates()
    indices, values = personal_scores_one(
        history.indices, history.data, neighbours, repeat_weight=repeat_weight
    )
    return sp.csr_matrix((values, indices, [0, indices.size]), shape=(1, neighbours.shape[1]))


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(n, scores.shape[1])
    if n <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64), np.zeros((scores.shape[0], 0), np.float32)
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def history_row(items: np.ndarray, weights: np.ndarray, *, n_items: int, decay: float) -> sp.csr_matrix:
    """One user's history (oldest first) as a recency-weighted row, for serving."""
    indices, values = history_vector(items, weights, decay=decay)
    return sp.csr_matrix((values, indices, [0, indices.size]), shape=(1, n_items))


def history_vector(items: np.ndarray, weights: np.ndarray, *, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """One user's history (oldest first) as a recency-weighted sparse vector: (sorted unique items, their
    summed weights; repeats of an item summed in float32, oldest first)."""
    items = np.asarray(items, dtype=np.int64)
    if items.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    factors = np.power(decay, np.arange(items.size - 1, -1, -1, dtype=np.float64)).astype(np.float32)
    values = np.asarray(weights, dtype=np.float32) * factors
    return _grouped_sums(read_only(items), read_only(values))  # (summed in float32, oldest first)
