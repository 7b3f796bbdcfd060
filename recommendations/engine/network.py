"""What the stores of the network learn from each other, as plain arrays (no Django).

- Products are matched across stores by a canonical key (the same GTIN, or the same brand and
  normalised title); co-occurrence of canonical products in shoppers' histories is summed over stores.
  A store's *slice* is that co-occurrence among its own products with its own events left out: what the
  rest of the network says about its catalog. Leaving its events out keeps the store's validation honest
  (its hold-out events are not inside the global model) and avoids counting them twice in the blend.
- Categories that co-occur in shoppers' histories across stores, and the canonical co-occurrence,
  refine the content vectors into one network embedding space (TruncatedSVD over text, behaviour and
  category features side by side).
- The blend: a store's own neighbours and its slice, mixed with a global share chosen on the store's
  validation split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.preprocessing import normalize

from recommendations.engine.evaluation import HoldOut, evaluate, model_recommender
from recommendations.engine.neighbors import top_k_per_row

GLOBAL_SHARES = (0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0)
DEFAULT_SHARE_WITHOUT_VALIDATION = 0.5  # too few shoppers to validate on: lean on the network


def normalised_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


def canonical_key(*, gtin: str | None, brand: str | None, title: str | None) -> str:
    """The same product in two stores has the same key; "" when nothing identifies it."""
    if gtin and gtin.strip():
        return f"gtin:{gtin.strip().lstrip('0')}"
    if brand and brand.strip() and title and normalised_title(title):
        return f"name:{brand.strip().lower()}|{normalised_title(title)}"
    return ""


def _user_matrix(
    users: np.ndarray, columns: np.ndarray, weights: np.ndarray, n_columns: int
) -> sp.csr_matrix:
    users = np.asarray(users, dtype=np.int64)
    n_users = int(users.max()) + 1 if users.size else 0
    matrix = sp.csr_matrix(
        (np.asarray(weights, np.float32), (users, np.asarray(columns, np.int64))),
        shape=(n_users, n_columns),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)  # as in the store model: many views of one item do not drown the rest
    return matrix


def store_counts(
    users: np.ndarray, canonical: np.ndarray, weights: np.ndarray, n_canonical: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """One store's canonical co-occurrence (pairs of distinct products: the sum over its shoppers of the
    product of their log1p(weight sums)) and each product's mass (the sum of those log1p values)."""
    user_items = _user_matrix(users, canonical, weights, n_canonical)
    counts = (user_items.T @ user_items).tocsr().astype(np.float32)
    counts.setdiag(0)
    counts.eliminate_zeros()
    mass = np.asarray(user_items.sum(axis=0)).ravel().astype(np.float32)
    return counts, mass


@dataclass
class NetworkCounts:
    """What the network learns from events, whichever engine counted them (in process, or Spark)."""

    own: dict[int, tuple[sp.csr_matrix, np.ndarray]]  # per store: store_counts
    categories: sp.csr_matrix  # categories x categories: category_counts summed over stores
    events: int  # the events counted (of known products, with a positive weight)


class NetworkCooccurrence:
    """Co-occurrence of canonical products in shoppers' histories, summed over stores, with each store's
    part kept so that it can be left out of that store's slice. Shoppers are never joined across stores:
    each store's users are its own rows."""

    def __init__(self, *, n_canonical: int, k: int = 100, alpha: float = 0.5, shrink: float = 10.0):
        self.n_canonical = n_canonical
        self.k = k
        self.alpha = alpha
        self.shrink = shrink
        self.total_ = sp.csr_matrix((n_canonical, n_canonical), dtype=np.float32)
        self.mass_ = np.zeros(n_canonical, dtype=np.float32)
        self.own_: dict[object, tuple[sp.csr_matrix, np.ndarray]] = {}

    def add_store(
        self, store: object, *, users: np.ndarray, canonical: np.ndarray, weights: np.ndarray
    ) -> NetworkCooccurrence:
        """One store's events: user codes (its own), canonical product codes and event weights."""
        return self.add_counts(store, *store_counts(users, canonical, weights, self.n_canonical))

    def add_counts(self, store: object, counts: sp.csr_matrix, mass: np.ndarray) -> NetworkCooccurrence:
        """One store's counts as `store_counts` makes them (here, or by the Spark job)."""
        counts = sp.csr_matrix(counts, dtype=np.float32)
        mass = np.asarray(mass, dtype=np.float32)
        self.own_[store] = (counts, mass)
        self.total_ = (self.total_ + counts).tocsr()
        self.mass_ += mass
        return self

    def _similarity(self, counts: sp.csr_matrix, mass: np.ndarray) -> sp.csr_matrix:
        coo = counts.tocoo()
        keep = (coo.data > 0) & (coo.row != coo.col)
        rows, cols, values = coo.row[keep], coo.col[keep], coo.data[keep]
        denominator = np.power(np.maximum(mass[rows], 0), self.alpha) * np.power(
            np.maximum(mass[cols], 0), 1 - self.alpha
        )
        similarity = sp.csr_matrix(
            (values / (denominator + self.shrink), (rows, cols)), shape=counts.shape, dtype=np.float32
        )
        return top_k_per_row(similarity, self.k).astype(np.float32)

    def similarity(self) -> sp.csr_matrix:
        """Canonical x canonical similarity over the whole network (for the embedding)."""
        return self._similarity(self.total_, self.mass_)

    def store_slice(self, store: object, canonical: np.ndarray) -> sp.csr_matrix:
        """Items x items (the store's items, in the order of `canonical`): what the other stores' shoppers
        say about them. Items with no canonical match (code -1) get no row."""
        canonical = np.asarray(canonical, dtype=np.int64)
        n = len(canonical)
        known = np.flatnonzero(canonical >= 0)
        if known.size == 0:
            return sp.csr_matrix((n, n), dtype=np.float32)
        codes = canonical[known]
        counts = self.total_[codes][:, codes]
        mass = self.mass_[codes].copy()
        if store in self.own_:
            own_counts, own_mass = self.own_[store]
            counts = counts - own_counts[codes][:, codes]
            mass -= own_mass[codes]
        # two items of one store with the same key are the same product: not each other's neighbour
        coo = sp.csr_matrix(counts).tocoo()
        distinct = codes[coo.row] != codes[coo.col]
        counts = sp.csr_matrix(
            (coo.data[distinct], (coo.row[distinct], coo.col[distinct])), shape=(known.size, known.size)
        )
        local = self._similarity(counts, mass).tocoo()
        return sp.csr_matrix(
            (local.data, (known[local.row], known[local.col])), shape=(n, n), dtype=np.float32
        )


def category_counts(
    per_store: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], n_categories: int
) -> sp.csr_matrix:
    """Categories x categories: how much shoppers touch both (the diagonal: each alone), summed over
    stores. Each element of `per_store` is (user codes, category codes, weights) of one store."""
    total = sp.csr_matrix((n_categories, n_categories), dtype=np.float32)
    for users, categories, weights in per_store:
        if len(users):
            user_categories = _user_matrix(users, categories, weights, n_categories)
            total = (total + user_categories.T @ user_categories).tocsr()
    return total


def category_cooccurrence(
    per_store: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], n_categories: int
) -> sp.csr_matrix:
    """Categories x categories cosine of how often shoppers touch both, summed over stores."""
    return category_cosine(category_counts(per_store, n_categories))


def category_cosine(total: sp.csr_matrix) -> sp.csr_matrix:
    """category_counts as cosines."""
    total = sp.csr_matrix(total, dtype=np.float32)
    diagonal = np.sqrt(np.maximum(total.diagonal(), 0))
    scale = np.divide(1.0, diagonal, out=np.zeros_like(diagonal), where=diagonal > 0)
    return (sp.diags(scale) @ total @ sp.diags(scale)).tocsr().astype(np.float32)


def network_embedding(
    text: sp.csr_matrix,
    behaviour: sp.csr_matrix | None = None,
    categories: sp.csr_matrix | None = None,
    *,
    dimensions: int = 64,
    behaviour_weight: float = 1.0,
    category_weight: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Unit vectors (rows x dimensions, zero-padded) from the rows' text features (TF-IDF) refined by
    behaviour features (a row of canonical co-occurrence) and category features (a row of category
    co-occurrence): each block is scaled to unit rows, weighted, and the whole reduced with one SVD, so
    that products bought with the same things come closer even when their words differ."""
    blocks = [normalize(sp.csr_matrix(text, dtype=np.float32))]
    if behaviour is not None and behaviour.shape[1]:
        blocks.append(behaviour_weight * normalize(sp.csr_matrix(behaviour, dtype=np.float32)))
    if categories is not None and categories.shape[1]:
        blocks.append(category_weight * normalize(sp.csr_matrix(categories, dtype=np.float32)))
    features = sp.hstack(blocks).tocsr()
    vectors = np.zeros((features.shape[0], dimensions), dtype=np.float32)
    components = min(dimensions, features.shape[1] - 1, features.shape[0] - 1)
    if components < 1 or features.nnz == 0:
        return vectors
    reduced = TruncatedSVD(n_components=components, random_state=seed).fit_transform(features)
    vectors[:, :components] = normalize(reduced).astype(np.float32)
    return vectors


def _typical_peak(matrix: sp.csr_matrix) -> float:
    peaks = np.asarray(matrix.max(axis=1).todense()).ravel() if matrix.nnz else np.zeros(0)
    peaks = peaks[peaks > 0]
    return float(np.median(peaks)) if peaks.size else 0.0


def blend_neighbours(own: sp.csr_matrix, network: sp.csr_matrix, share: float, *, k: int) -> sp.csr_matrix:
    """(1 - share) x the store's neighbours + share x the network's, the network brought to the store's
    scale first (the median of row maxima), top `k` per row."""
    if share <= 0 or network.nnz == 0:
        return own
    own_peak, network_peak = _typical_peak(own), _typical_peak(network)
    scale = own_peak / network_peak if own_peak > 0 and network_peak > 0 else 1.0
    combined = (1.0 - share) * own + (share * scale) * network
    return top_k_per_row(sp.csr_matrix(combined, dtype=np.float32), k).astype(np.float32)


def choose_global_share(
    model,  # noqa: ANN001 - a fitted SequentialItemKNN (neighbours_ is replaced while trying, then restored)
    holdout: HoldOut,
    network: sp.csr_matrix,
    *,
    shares: Iterable[float] = GLOBAL_SHARES,
    exclude_seen: bool = True,
    max_users: int | None = 2000,
    k: int = 10,
) -> tuple[float, dict[float, float]]:
    """The share of the network in the blend that gives the best NDCG@k on the store's validation split
    (ties go to the smaller share), and the NDCG of each share tried."""
    own = model.neighbours_
    tried: dict[float, float] = {}
    try:
        for share in shares:
            model.neighbours_ = blend_neighbours(own, network, share, k=model.k)
            metrics = evaluate(
                model_recommender(model, holdout, k=k, exclude_seen=exclude_seen),
                holdout,
                k=k,
                max_users=max_users,
            )
            tried[float(share)] = metrics.ndcg
    finally:
        model.neighbours_ = own
    best = max(tried, key=lambda share: (tried[share], -share))
    return best, tried
