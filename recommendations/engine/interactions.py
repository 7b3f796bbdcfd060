"""Interaction logs as arrays, the id mapping, and the matrices the estimators learn from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

# Default weights of event types (a purchase says more than a view). Stores may override them.
DEFAULT_EVENT_WEIGHTS = {
    "view": 1.0,
    "click": 1.0,
    "add_to_wishlist": 2.0,
    "add_to_cart": 3.0,
    "rating": 3.0,
    "purchase": 5.0,
    "remove_from_cart": 0.0,
    "return": 0.0,
}


@dataclass(frozen=True)
class IdIndex:
    """A frozen mapping between outside ids (any hashable) and contiguous matrix indices."""

    ids: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray) -> tuple[IdIndex, np.ndarray]:
        """The index of the distinct values, and each value's position in it."""
        ids, codes = np.unique(values, return_inverse=True)
        return cls(ids=ids), codes.astype(np.int32)

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Index of each value, -1 where the value is unknown."""
        values = np.asarray(values)
        if len(self.ids) == 0:
            return np.full(len(values), -1, dtype=np.int64)
        if self.ids.dtype == np.int64 and values.dtype == np.int64 and values.ndim == 1:
            # (internal ids: serving looks a few up several times an answer, where numpy's five calls cost
            # more than the search)
            return _sorted_positions(read_only(self.ids), read_only(values))
        found = np.searchsorted(self.ids, values)
        found = np.clip(found, 0, len(self.ids) - 1)
        return np.where(self.ids[found] == values, found, -1)


@numba.njit(cache=True, nogil=True, inline="always")
def found_at(ordered, value):  # noqa: ANN001, ANN202
    """Where `value` is in the sorted array `ordered` (its first place), -1 if it is not: a binary search
    (numba's np.searchsorted costs several times more on one value)."""
    low, high = 0, ordered.size
    while low < high:
        middle = (low + high) >> 1
        if ordered[middle] < value:
            low = middle + 1
        else:
            high = middle
    return low if low < ordered.size and ordered[low] == value else -1


@numba.njit(cache=True, nogil=True)
def _sorted_positions(ids, values):  # noqa: ANN001, ANN202
    """IdIndex.positions for int64 ids (numpy's searchsorted finds the same leftmost match)."""
    out = np.empty(values.size, np.int64)
    for i in range(values.size):
        out[i] = found_at(ids, values[i])
    return out


def read_only(array: np.ndarray, dtype: Any = None) -> np.ndarray:
    """`array` as a read-only C-contiguous array (of `dtype`), copied only when it must: a model's arrays
    are read-only maps in serving and writable in training, and the compiled loops see one type either
    way (one compilation, cached by numba on disk)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Interactions:
    """One row per event, in time order: user and item indices, weight, time (epoch seconds), and a
    basket key (order, session or day) for co-purchase."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    times: np.ndarray
    n_users: int
    n_items: int
    baskets: np.ndarray | None = None
    purchases: np.ndarray | None = None  # bool: the event is a purchase
    sessions: np.ndarray | None = None  # int64 code of the event's session id (0: it came with none)

    def __post_init__(self) -> None:
        if len(self.times) > 1 and not np.all(np.diff(self.times) >= 0):
            raise ValueError("interactions must be sorted by time")

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> Interactions:
        pick = np.flatnonzero(mask)
        return Interactions(
            users=self.users[pick],
            items=self.items[pick],
            weights=self.weights[pick],
            times=self.times[pick],
            n_users=self.n_users,
            n_items=self.n_items,
            baskets=None if self.baskets is None else self.baskets[pick],
            purchases=None if self.purchases is None else self.purchases[pick],
            sessions=None if self.sessions is None else self.sessions[pick],
        )


def sorted_interactions(
    *,
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    times: np.ndarray,
    n_users: int,
    n_items: int,
    baskets: np.ndarray | None = None,
    purchases: np.ndarray | None = None,
    sessions: np.ndarray | None = None,
) -> Interactions:
    order = np.argsort(times, kind="stable")
    return Interactions(
        users=np.asarray(users, dtype=np.int32)[order],
        items=np.asarray(items, dtype=np.int32)[order],
        weights=np.asarray(weights, dtype=np.float32)[order],
        times=np.asarray(times, dtype=np.float64)[order],
        n_users=n_users,
        n_items=n_items,
        baskets=None if baskets is None else np.asarray(baskets)[order],
        purchases=None if purchases is None else np.asarray(purchases, dtype=bool)[order],
        sessions=None if sessions is None else np.asarray(sessions, dtype=np.int64)[order],
    )


def by_user(data: Interactions) -> np.ndarray:
    """The order of the events by user, each user's in time order: `np.lexsort((data.times, data.users))`
    (the log is in time order, so one stable sort of the users gives it: a radix sort, several times
    quicker on millions of events)."""
    return np.argsort(data.users, kind="stable")


def user_item_matrix(data: Interactions, *, binary: bool = False) -> sp.csr_matrix:
    """Users x items; repeated events add up (or count once when `binary`)."""
    matrix = sp.csr_matrix(
        (np.ones(len(data), np.float32) if binary else data.weights, (data.users, data.items)),
        shape=(data.n_users, data.n_items),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


def recency_weighted_history(
    data: Interactions, *, decay: float, rows: np.ndarray | None = None
) -> sp.csr_matrix:
    """Users x items where each event weighs `weight * decay ** (events of the user after it)`: the last
    thing a shopper did counts most. `rows` picks which users to build (default: all)."""
    order = by_user(data)
    users = data.users[order]
    starts = np.searchsorted(users, np.arange(data.n_users + 1))
    position_from_end = starts[users + 1] - 1 - np.arange(len(users))
    values = data.weights[order] * np.power(decay, position_from_end, dtype=np.float64).astype(np.float32)
    matrix = sp.csr_matrix((values, (users, data.items[order])), shape=(data.n_users, data.n_items))
    matrix.sum_duplicates()
    return matrix if rows is None else matrix[rows]


class UserEvents:
    """A log's events grouped by user in time order, so that the few users one evaluation asks about get
    their rows of `recency_weighted_history` and of the binary `user_item_matrix` (the same values)
    without a pass over the whole log for each setting tried: a 10M-event store's tuning built the whole
    matrix seven times for 2,000 shoppers."""

    def __init__(self, data: Interactions):
        order = by_user(data)
        self.items = data.items[order]
        self.weights = data.weights[order]
        self.starts = np.searchsorted(data.users[order], np.arange(data.n_users + 1))
        self.n_items = data.n_items

    def _events_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(which of `users` each event is of, its position in the grouped log, its events after it)."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.starts[users]
        lengths = self.starts[users + 1] - starts
        total = int(lengths.sum())
        ends = np.cumsum(lengths)
        offsets = np.repeat(starts - ends + lengths, lengths) + np.arange(total)
        after = np.repeat(ends, lengths) - 1 - np.arange(total)
        return np.repeat(np.arange(users.size), lengths), offsets, after

    def history(self, users: np.ndarray, *, decay: float) -> sp.csr_matrix:
        """`recency_weighted_history(data, decay=decay)[users]`."""
        owner, offsets, after = self._events_of(users)
        values = self.weights[offsets] * np.power(decay, after, dtype=np.float64).astype(np.float32)
        matrix = sp.csr_matrix((values, (owner, self.items[offsets])), shape=(len(users), self.n_items))
        matrix.sum_duplicates()
        return matrix

    def seen(self, users: np.ndarray) -> sp.csr_matrix:
        """`user_item_matrix(data, binary=True)[users]`."""
        owner, offsets, _ = self._events_of(users)
        matrix = sp.csr_matrix(
            (np.ones(offsets.size, np.float32), (owner, self.items[offsets])),
            shape=(len(users), self.n_items),
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix
