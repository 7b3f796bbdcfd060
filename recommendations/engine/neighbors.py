"""Item-to-item collaborative filtering: co-occurrence in users' histories (normalised, top-k pruned)
and sequential transitions (what users do next). Both are built with sparse products in chunks of
items, so memory stays bounded by chunk x items rather than items x items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommendations.engine.interactions import Interactions, by_user


def top_k_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of every row (ties broken by column)."""
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    lengths = np.diff(matrix.indptr)
    if lengths.size == 0 or lengths.max(initial=0) <= k:
        return matrix
    keep = np.ones(matrix.nnz, dtype=bool)
    for row in np.flatnonzero(lengths > k):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        values = matrix.data[start:end]
        drop = np.argpartition(-values, k)[k:]
        keep[start + drop] = False
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)[keep]
    return sp.csr_matrix((matrix.data[keep], (rows, matrix.indices[keep])), shape=matrix.shape)


def top_k_columns(scores: np.ndarray, k: int, *, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `k` largest values, as (columns, values), in no order (among values equal to the k-th,
    any): `np.argpartition` of the rows, but for wide rows it first keeps the blocks of `block` columns
    whose maxima are among the row's `k` best. Every value among the `k` best lies in such a block (were
    its block's maximum not among them, `k` other blocks would each hold a larger value), so it partitions
    `k * block` values instead of the row: 10 times quicker on rows of 50,000."""
    rows, cols = scores.shape
    k = min(k, cols)
    if k <= 0:
        return np.zeros((rows, 0), np.int64), np.zeros((rows, 0), scores.dtype)
    if cols < 4 * k * block:
        columns = np.argpartition(scores, cols - k, axis=1)[:, cols - k :]
        return columns, np.take_along_axis(scores, columns, axis=1)
    full = cols // block
    maxima = scores[:, : full * block].reshape(rows, full, block).max(axis=2)
    if full * block < cols:  # the last, shorter block
        maxima = np.concatenate([maxima, scores[:, full * block :].max(axis=1, keepdims=True)], axis=1)
    best_blocks = np.argpartition(maxima, maxima.shape[1] - k, axis=1)[:, -k:]
    candidates = (best_blocks[:, :, None] * block + np.arange(block)).reshape(rows, -1)
    real = candidates < cols  # the last block's columns past the row's end are none
    candidates = np.where(real, candidates, 0)
    values = np.where(real, np.take_along_axis(scores, candidates, axis=1), -np.inf)
    # the k best of the candidates: with k-1 full blocks among them, at least k are real columns, and a
    # place past the row's end (-inf) is taken only where real ones are -inf too: its value says so
    pick = np.argpartition(values, values.shape[1] - k, axis=1)[:, -k:]
    return np.take_along_axis(candidates, pick, axis=1), np.take_along_axis(values, pick, axis=1)


class ItemCooccurrence:
    """Asymmetric cosine over a user x item matrix,
    sim(i, j) = c(i, j) / (n_i^alpha * n_j^(1-alpha) + shrink),
    with c the (weighted) co-occurrence, keeping the top `k` neighbours of each item."""

    def __init__(self, *, k: int = 100, alpha: float = 0.5, shrink: float = 10.0, chunk_items: int = 2048):
        self.k = k
        self.alpha = alpha
        self.shrink = shrink
        self.chunk_items = chunk_items

    def fit(self, user_items: sp.csr_matrix) -> ItemCooccurrence:
        item_users = user_items.T.tocsr().astype(np.float32)
        # CSR on both sides: scipy multiplies CSR by CSR, so a CSC right side would be converted for
        # every chunk
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        mass = np.asarray(user_items.sum(axis=0)).ravel().astype(np.float32)
        n_items = user_items.shape[1]
        blocks = []
        for start in range(0, n_items, self.chunk_items):
            stop = min(start + self.chunk_items, n_items)
            block = (item_users[start:stop] @ user_items).tocoo()
            off_diagonal = block.row + start != block.col
            rows, cols = block.row[off_diagonal], block.col[off_diagonal]
            denominator = np.power(mass[rows + start], self.alpha) * np.power(mass[cols], 1 - self.alpha)
            values = block.data[off_diagonal] / (denominator + self.shrink)
            pruned = top_k_per_row(
                sp.csr_matrix((values, (rows, cols)), shape=(stop - start, n_items)), self.k
            )
            blocks.append(pruned)
        self.similarity_ = (sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, 0))).astype(np.float32)
        self.item_mass_ = mass
        return self


class ItemTransitions:
    """Directed transitions: for each event, the user's next `window` events, weighted by
    `decay ** (distance - 1)`; rows are normalised to sum to one and pruned to the top `k`."""

    def __init__(self, *, window: int = 3, decay: float = 0.5, k: int = 100):
        self.window = window
        self.decay = decay
        self.k = k

    def fit(self, data: Interactions) -> ItemTransitions:
        order = by_user(data)
        users, items = data.users[order], data.items[order]
        rows, cols, values = [], [], []
        for distance in range(1, self.window + 1):
            same_user = users[distance:] == users[:-distance]
            source, target = items[:-distance][same_user], items[distance:][same_user]
            different = source != target
            rows.append(source[different])
            cols.append(target[different])
            values.append(np.full(int(different.sum()), self.decay ** (distance - 1), dtype=np.float32))
        counts = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
            shape=(data.n_items, data.n_items),
        )
        counts.sum_duplicates()
        row_sums = np.asarray(counts.sum(axis=1)).ravel()
        scale = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
        self.transitions_ = top_k_per_row(sp.diags(scale.astype(np.float32)) @ counts, self.k).astype(
            np.float32
        )
        return self
