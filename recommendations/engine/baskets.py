"""Frequently bought together: items in the same basket (an order, a session, or one user's day),
ranked by lift with a minimum support."""

from __future__ import annotations

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
