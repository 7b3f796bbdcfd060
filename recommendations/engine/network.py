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
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class StoreCounts:
    """One store's counts over the canonical products its shoppers touched (`codes`, sorted): the
    co-occurrence of distinct products (`counts`: positions in `codes` on both sides) and each product's
    mass. Held over what the store touched, not the whole network, so that many stores cost what their
    events do (a network-wide square and mass per store cost 1,000 stores gigabytes of empty rows)."""

    codes: np.ndarray  # int64, sorted, distinct
    counts: sp.csr_matrix  # len(codes) x len(codes), float32
    mass: np.ndarray  # float32, per code

    def network_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, columns, values), rows and columns as canonical codes."""
        coo = self.counts.tocoo()
        return self.codes[coo.row], self.codes[coo.col], coo.data


def store_counts(users: np.ndarray, canonical: np.ndarray, weights: np.ndarray) -> StoreCounts:
    """One store's canonical co-occurrence (pairs of distinct products: the sum over its shoppers of the
    product of their log1p(weight sums)) and each product's mass (the sum of those log1p values)."""
    codes, local = np.unique(np.asarray(canonical, dtype=np.int64), return_inverse=True)
    user_items = _user_matrix(users, local.ravel(), weights, len(codes))
    counts = (user_items.T @ user_items).tocsr().astype(np.float32)
    counts.setdiag(0)
    counts.eliminate_zeros()
    mass = np.asarray(user_items.sum(axis=0)).ravel().astype(np.float32)
    return StoreCounts(codes, counts, mass)


def store_counts_from_rows(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, mass_codes: np.ndarray, mass: np.ndarray
) -> StoreCounts:
    """StoreCounts from its sums as rows of canonical codes (as the Spark job writes them)."""
    mass_codes = np.asarray(mass_codes, dtype=np.int64)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    codes = np.unique(np.concatenate([mass_codes, rows, cols]))
    store_mass = np.zeros(len(codes), dtype=np.float32)
    store_mass[np.searchsorted(codes, mass_codes)] = mass
    counts = sp.csr_matrix(
        (np.asarray(values, np.float32), (np.searchsorted(codes, rows), np.searchsorted(codes, cols))),
        shape=(len(codes), len(codes)),
        dtype=np.float32,
    )
    return StoreCounts(codes, counts, store_mass)


class CountsTotal:
    """The network's co-occurrence (canonical x canonical) and mass: stores' counts summed, in blocks of
    `block` pairs, so that only the sum and one block are held."""

    def __init__(self, n_canonical: int, *, block: int = 20_000_000):
        self.block = block
        self.mass = np.zeros(n_canonical, dtype=np.float32)
        self._total = sp.csr_matrix((n_canonical, n_canonical), dtype=np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_pairs = 0

    def add(self, counts: StoreCounts) -> None:
        self.mass[counts.codes] += counts.mass
        if counts.counts.nnz:
            self._pending.append(counts.network_pairs())
            self._pending_pairs += counts.counts.nnz
            if self._pending_pairs >= self.block:
                self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        rows, cols, values = (np.concatenate(part) for part in zip(*self._pending, strict=True))
        self._pending, self._pending_pairs = [], 0
        block = sp.csr_matrix((values, (rows, cols)), shape=self._total.shape, dtype=np.float32)
        self._total = (self._total + block).tocsr()

    @property
    def total(self) -> sp.csr_matrix:
        self._fold()
        return self._total


@dataclass
class NetworkCounts:
    """What the network learns from events, whichever engine counted them (in process, or Spark)."""

    own: Mapping[Any, StoreCounts]  # per store (read on access where the engine keeps them on disk)
    total: sp.csr_matrix  # canonical x canonical: the stores' counts summed
    mass: np.ndarray  # per canonical product: the stores' mass summed
    categories: sp.csr_matrix  # categories x categories: category_counts summed over stores
    events: int  # the events counted (of known products, with a positive weight)


class CountsFolder(MutableMapping):
    """Stores' counts kept in a folder (one .npy file of each array a store) and read back on access: the
    global model holds one store's at a time, beside the network's sum."""

    ARRAYS = ("codes", "mass", "data", "indices", "indptr")

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stores: dict[Any, str] = {}

    def __setitem__(self, store: Any, counts: StoreCounts) -> None:
        name = self._stores.setdefault(store, str(len(self._stores)))
        matrix = counts.counts
        for array, values in zip(
            self.ARRAYS, (counts.codes, counts.mass, matrix.data, matrix.indices, matrix.indptr), strict=True
        ):
            np.save(self.folder / f"{name}.{array}.npy", values)

    def __getitem__(self, store: Any) -> StoreCounts:
        name = self._stores[store]
        codes, mass, data, indices, indptr = (
            np.load(self.folder / f"{name}.{array}.npy") for array in self.ARRAYS
        )
        matrix = sp.csr_matrix((data, indices, indptr), shape=(len(codes), len(codes)))
        return StoreCounts(codes, matrix, mass)

    def __delitem__(self, store: Any) -> None:
        name = self._stores.pop(store)
        for array in self.ARRAYS:
            (self.folder / f"{name}.{array}.npy").unlink(missing_ok=True)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)


class CountsBuilder:
    """The network's counts as the stores' events come, one store at a time: each store's kept in `own`
    (a CountsFolder, so that one store's are held at once), the network's sums and the categories' beside
    them."""

    def __init__(self, own: MutableMapping[Any, StoreCounts], *, n_canonical: int, n_categories: int):
        self.own = own
        self._total = CountsTotal(n_canonical)
        self._categories = sp.csr_matrix((n_categories, n_categories), dtype=np.float32)
        self._events = 0

    def add(
        self,
        store: Any,
        users: np.ndarray,
        canonical: np.ndarray,
        weights: np.ndarray,
        categories: np.ndarray,
        has_category: np.ndarray,
    ) -> None:
        """One store's events (of known products, with a positive weight): user codes, canonical and
        category codes, weights, and which events' products have a category."""
        counts = store_counts(users, canonical, weights)
        self.own[store] = counts
        self._total.add(counts)
        self._events += len(users)
        per_store = [(users[has_category], categories[has_category], weights[has_category])]
        self._categories = (self._categories + category_counts(per_store, self._categories.shape[0])).tocsr()

    def counts(self) -> NetworkCounts:
        return NetworkCounts(self.own, self._total.total, self._total.mass, self._categories, self._events)


class NetworkCooccurrence:
    """Co-occurrence of canonical products in shoppers' histories, summed over stores, with each store's
    part kept so that it can be left out of that store's slice. Shoppers are never joined across stores:
    each store's users are its own rows."""

    def __init__(self, *, n_canonical: int, k: int = 100, alpha: float = 0.5, shrink: float = 10.0):
        self.n_canonical = n_canonical
        self.k = k
        self.alpha = alpha
        self.shrink = shrink
        self._sum = CountsTotal(n_canonical)
        self._total: sp.csr_matrix | None = None
        # the stores added here (a dict), or an engine's counts (from_counts: read on access)
        self.own_: dict[Any, StoreCounts] | Mapping[Any, StoreCounts] = {}

    @classmethod
    def from_counts(
        cls, counts: NetworkCounts, *, n_canonical: int, **parameters: float
    ) -> NetworkCooccurrence:
        """Over what an engine counted: its sum, and each store's counts read when its slice is made."""
        network = cls(n_canonical=n_canonical, **parameters)  # type: ignore[arg-type]
        network._total = sp.csr_matrix(counts.total, dtype=np.float32)
        network._sum.mass = np.asarray(counts.mass, dtype=np.float32)
        network.own_ = counts.own
        return network

    @property
    def total_(self) -> sp.csr_matrix:
        if self._total is None:
            self._total = self._sum.total
        return self._total

    @property
    def mass_(self) -> np.ndarray:
        return self._sum.mass

    def add_store(
        self, store: object, *, users: np.ndarray, canonical: np.ndarray, weights: np.ndarray
    ) -> NetworkCooccurrence:
        """One store's events: user codes (its own), canonical product codes and event weights."""
        return self.add_counts(store, store_counts(users, canonical, weights))

    def add_counts(self, store: object, counts: StoreCounts) -> NetworkCooccurrence:
        """One store's counts as `store_counts` makes them."""
        if not isinstance(self.own_, dict):
            raise ValueError("a network built from an engine's counts takes no more stores")
        self.own_[store] = counts
        self._sum.add(counts)
        self._total = None
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
            own = self.own_[store]
            # the store's own counts at its items' positions: a selection (one 1 a row) of its codes
            position = np.minimum(np.searchsorted(own.codes, codes), max(len(own.codes) - 1, 0))
            held = np.flatnonzero(own.codes[position] == codes) if len(own.codes) else np.zeros(0, np.int64)
            select = sp.csr_matrix(
                (np.ones(len(held), np.float32), (held, position[held])), shape=(known.size, len(own.codes))
            )
            counts = counts - (select @ own.counts @ select.T)
            mass -= select @ own.mass
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


def network_vectors(
    text: sp.csr_matrix | None,
    cooccurrence: NetworkCooccurrence,
    categories: sp.csr_matrix,
    *,
    canonical: np.ndarray,
    category_codes: np.ndarray,
    dimensions: int = 64,
) -> tuple[np.ndarray, int]:
    """Every product's unit vector in the network space (`network_embedding` of its text, its canonical
    product's behaviour and its category's), the products of one canonical product merged into one point;
    and how many canonical products were merged."""
    vectors = np.zeros((len(canonical), dimensions), dtype=np.float32)
    if text is not None:
        # (the behaviour rows are passed without a name here, so that the embedding can let them go)
        vectors = network_embedding(
            text,
            cooccurrence.similarity()[canonical],
            category_cosine(categories)[category_codes],
            dimensions=dimensions,
        )
    merged = 0
    order = np.argsort(canonical, kind="stable")
    bounds = np.flatnonzero(np.r_[True, canonical[order][1:] != canonical[order][:-1], True])
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if stop - start > 1:
            members = order[start:stop]
            mean = vectors[members].mean(axis=0)
            norm = np.linalg.norm(mean)
            if norm > 0:
                vectors[members] = mean / norm
                merged += 1
    return vectors, merged


def store_slices(
    cooccurrence: NetworkCooccurrence, stores: Iterable[Any], store_of: np.ndarray, canonical: np.ndarray
) -> Iterator[tuple[Any, np.ndarray, sp.csr_matrix]]:
    """Each store's slice, one store at a time: (store, positions of its products, the slice), for the
    stores whose slice holds a pair."""
    order = np.argsort(store_of, kind="stable")
    sorted_stores = store_of[order]
    for store in stores:
        mine = order[np.searchsorted(sorted_stores, store) : np.searchsorted(sorted_stores, store, "right")]
        matrix = cooccurrence.store_slice(store, canonical[mine])
        if matrix.nnz:
            yield store, mine, matrix


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
    # each block scaled in place and its input let go as soon as it is scaled: at a million products the
    # behaviour rows are a gigabyte, and the reduction's working memory comes on top of the features
    others = [(behaviour, behaviour_weight), (categories, category_weight)]
    del behaviour, categories
    blocks = [normalize(sp.csr_matrix(text, dtype=np.float32))]
    while others:
        block, weight = others.pop(0)
        if block is not None and block.shape[1]:
            block = normalize(sp.csr_matrix(block, dtype=np.float32))
            block.data *= np.float32(weight)
            blocks.append(block)
        del block
    features = sp.hstack(blocks, format="csr")
    del blocks
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
