"""Content similarity for items with few or no events: TF-IDF over title, description, category,
brand and attributes, reduced with TruncatedSVD to dense unit vectors."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from recommendations.engine.neighbors import top_k_columns

# related products of an item with fewer collaborative neighbours than this also take its nearest items by
# content (this many), within its top category
CONTENT_WHEN_FEWER_THAN = 10
CONTENT_NEIGHBOURS = 50


class ContentEmbedding:
    def __init__(self, *, dimensions: int = 64, max_features: int = 100_000, seed: int = 0):
        self.dimensions = dimensions
        self.max_features = max_features
        self.seed = seed

    def text_features(self, documents: list[str]) -> sp.csr_matrix | None:
        """TF-IDF rows of the documents (words and word pairs); None when there is nothing to learn from."""
        if len(documents) < 2 or not any(doc.strip() for doc in documents):
            return None
        vectorizer = TfidfVectorizer(
            max_features=self.max_features, sublinear_tf=True, ngram_range=(1, 2), min_df=1, dtype=np.float32
        )
        try:
            return vectorizer.fit_transform(documents).tocsr()
        except ValueError:  # nothing but stop words
            return None

    def fit_transform(self, documents: list[str]) -> np.ndarray:
        """Unit vectors (n_documents x dimensions, zero-padded when the corpus is small)."""
        return self.reduce(self.text_features(documents), len(documents))

    def reduce(self, tfidf: sp.csr_matrix | None, n_documents: int) -> np.ndarray:
        """The TF-IDF rows (`text_features`) as unit vectors of `dimensions`."""
        vectors = np.zeros((n_documents, self.dimensions), dtype=np.float32)
        if tfidf is None:
            return vectors
        components = min(self.dimensions, tfidf.shape[1] - 1, n_documents - 1)
        if components < 1:
            return vectors
        reduced = TruncatedSVD(n_components=components, random_state=self.seed).fit_transform(tfidf)
        vectors[:, :components] = normalize(reduced).astype(np.float32)
        return vectors


def nearest_neighbours(
    vectors: np.ndarray, *, k: int = 50, rows: np.ndarray | None = None, chunk: int = 2048
) -> sp.csr_matrix:
    """Top-k cosine neighbours (unit vectors) of the given `rows` (default: all) among all rows, computed
    in chunks. The cost is rows x items x dimensions, so training asks only for the items that lack
    collaborative neighbours."""
    n = vectors.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    k = min(k, max(n - 1, 0))
    out_rows, out_cols, out_values = [], [], []
    for start in range(0, len(rows), chunk):
        batch = rows[start : start + chunk]
        block = vectors[batch] @ vectors.T
        block[np.arange(len(batch)), batch] = -np.inf
        if k == 0:
            continue
        top, scores = top_k_columns(block, k)
        positive = scores > 0
        out_rows.append(np.repeat(batch, k)[positive.ravel()])
        out_cols.append(top[positive])
        out_values.append(scores[positive])
    if not out_rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(out_values).astype(np.float32), (np.concatenate(out_rows), np.concatenate(out_cols))),
        shape=(n, n),
    )


def product_document(
    title: str, description: str, categories: list[str], brand: str, attributes: dict
) -> str:
    attribute_words = " ".join(
        f"{key} {value}" for key, value in attributes.items() if isinstance(value, str | int)
    )
    # the category path and brand are repeated so that they weigh like a title
    return " ".join(
        [title, description[:2000], " ".join(categories) * 2, f"{brand} {brand}", attribute_words]
    )


def nearest_in_groups(
    vectors: np.ndarray,
    groups: np.ndarray,
    *,
    rows: np.ndarray,
    k: int = 50,
    candidates: np.ndarray | None = None,
    max_work: float = 1e10,
) -> sp.csr_matrix | None:
    """Top-k cosine neighbours (unit vectors, similarity > 0) of `rows` among the `candidates` (a mask;
    default all) of the same group (`groups[i]` >= 0; a row with no group, -1, looks at every candidate),
    itself excluded; ties by position. None when that would cost more than `max_work` multiply-adds
    (a catalog with one huge group): serving then searches at request time."""
    n = vectors.shape[0]
    candidates = np.ones(n, dtype=bool) if candidates is None else candidates
    rows = np.asarray(rows, dtype=np.int64)
    members: dict[int, np.ndarray] = {}
    for group in np.unique(groups[rows]).tolist():
        pool = candidates if group < 0 else candidates & (groups == group)
        members[group] = np.flatnonzero(pool)
    work = sum(members[int(g)].size for g in groups[rows].tolist()) * vectors.shape[1]
    if work > max_work:
        return None
    out_rows, out_cols, out_values = [], [], []
    for group, pool in members.items():
        batch = rows[groups[rows] == group]
        if batch.size == 0 or pool.size == 0:
            continue
        for start in range(0, batch.size, 1024):
            part = batch[start : start + 1024]
            block = vectors[part] @ vectors[pool].T
            block[part[:, None] == pool[None, :]] = -np.inf  # never itself
            take = min(k, pool.size)
            top, scores = top_k_columns(block, take)
            order = np.lexsort((pool[top], -scores), axis=1)
            top, scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(scores, order, axis=1)
            positive = scores > 0
            out_rows.append(np.repeat(part, take)[positive.ravel()])
            out_cols.append(pool[top][positive])
            out_values.append(scores[positive])
    if not out_rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(out_values).astype(np.float32), (np.concatenate(out_rows), np.concatenate(out_cols))),
        shape=(n, n),
    )
