"""Frequently bought together: items in the same basket (an order, a session, or one user's day),
ranked by lift with a minimum support."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.neighbors import top_k_per_row


class FrequentlyBoughtTogether:
    def __init__(self, *, min_support: int = 2, k: int = 50):
        self.min_support = min_support
        self.k = k

    def fit(self, baskets: np.ndarray, items: np.ndarray, *, n_items: int) -> FrequentlyBoughtTogether:
        """`baskets[i]` is the basket key of the i-th purchase of `items[i]`."""
        if len(items) == 0:
            self.lift_ = sp.csr_matrix((n_items, n_items), dtype=np.float32)
            self.support_ = self.lift_
            return self
        _, basket_rows = np.unique(baskets, return_inverse=True)
        basket_items = sp.csr_matrix(
            (np.ones(len(items), np.float32), (basket_rows, items)), shape=(basket_rows.max() + 1, n_items)
        )
        basket_items.sum_duplicates()
        basket_items.data[:] = 1.0
        # only baskets of two or more items say anything about pairs
        basket_items = basket_items[np.diff(basket_items.indptr) >= 2]
        n_baskets = max(basket_items.shape[0], 1)
        support = (basket_items.T @ basket_items).tocoo()
        item_count = np.asarray(basket_items.sum(axis=0)).ravel()
        keep = (support.row != support.col) & (support.data >= self.min_support)
        rows, cols, together = support.row[keep], support.col[keep], support.data[keep]
        lift = together * n_baskets / (item_count[rows] * item_count[cols])
        # lift ranks; support breaks near-ties in favour of pairs seen more often
        score = lift * (1.0 - 1.0 / (1.0 + together))
        self.lift_ = top_k_per_row(
            sp.csr_matrix((score.astype(np.float32), (rows, cols)), shape=(n_items, n_items)), self.k
        )
        self.support_ = sp.csr_matrix((together.astype(np.float32), (rows, cols)), shape=(n_items, n_items))
        return self


def bought_together(data: Any) -> sp.csr_matrix:
    """A store's "frequently bought together" (items x items, by lift) from the purchases (and carts) of an
    Interactions, by basket: what training stores and the ranking stage's guard judges."""
    rows = data.purchases if data.purchases is not None else np.zeros(len(data.items), bool)
    baskets = data.baskets if data.baskets is not None else np.zeros(len(data.items), dtype=str)
    return (
        FrequentlyBoughtTogether(min_support=2, k=50)
        .fit(baskets[rows], data.items[rows], n_items=data.n_items)
        .lift_
    )


class CategoryCompatibility:
    """Which categories go together (complete-the-look): pairs of different categories bought in the same
    basket more often than chance, by lift, with a minimum support of baskets. Learned on the categories
    given per item (the leaf of its path), so "Sofas" goes with "Coffee tables" because their items are
    bought together, whichever sofa and table."""

    def __init__(self, *, min_support: int = 3, min_lift: float = 1.0, k: int = 10):
        self.min_support = min_support
        self.min_lift = min_lift
        self.k = k

    def fit(
        self, baskets: np.ndarray, items: np.ndarray, item_categories: np.ndarray, n_categories: int
    ) -> CategoryCompatibility:
        """`item_categories[item]` is the item's category code (-1: none); returns self with `pairs_`:
        (from codes, to codes, lift, support), each category's best `k` by lift."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
        categories = item_categories[items] if len(items) else np.zeros(0, np.int64)
        known = categories >= 0
        if not known.any() or n_categories == 0:
            self.pairs_ = empty
            return self
        _, basket_rows = np.unique(baskets[known], return_inverse=True)
        basket_categories = sp.csr_matrix(
            (np.ones(int(known.sum()), np.float32), (basket_rows, categories[known])),
            shape=(basket_rows.max() + 1, n_categories),
        )
        basket_categories.sum_duplicates()
        basket_categories.data[:] = 1.0
        # chance is over every basket (one of a single category too: pans bought with pans say that pans
        # go with nothing else); pairs come from the baskets of two categories or more
        n_baskets = basket_categories.shape[0]
        count = np.asarray(basket_categories.sum(axis=0)).ravel()
        basket_categories = basket_categories[np.diff(basket_categories.indptr) >= 2]
        support = (basket_categories.T @ basket_categories).tocoo()
        keep = (support.row != support.col) & (support.data >= self.min_support)
        rows, cols, together = support.row[keep], support.col[keep], support.data[keep]
        lift = together * n_baskets / (count[rows] * count[cols])
        good = lift > self.min_lift
        rows, cols, together, lift = rows[good], cols[good], together[good], lift[good]
        order = np.lexsort((-together, -lift, rows))  # per category: best lift first, support breaking ties
        rows, cols, together, lift = rows[order], cols[order], together[order], lift[order]
        rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
        top = rank < self.k
        self.pairs_ = (
            rows[top].astype(np.int64),
            cols[top].astype(np.int64),
            lift[top].astype(np.float32),
            together[top].astype(np.int64),
        )
        return self
