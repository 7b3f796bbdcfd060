"""Collaborative neighbours for items with no events yet, from their content (Etsy's cold-start items).

The behaviour space is the warm items' factors: a truncated SVD of their item-item co-occurrence (rows
normalised). A ridge regression learns the linear map from an item's content (TF-IDF of title,
description, attributes, brand and category: `ContentEmbedding.text_features`) to its factors on the
warm items: the linear form of a two-tower model. A cold item's factors are predicted from its content
and its neighbours are the warm items nearest to them: items shoppers treat like the products it reads
like, whether or not they read alike themselves."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import Ridge
from sklearn.preprocessing import normalize

from recommendations.engine.neighbors import top_k_columns

# Training's settings, from bench/coldstart.py's validation split on Amazon Beauty (never its test items),
# the map fitted on the estimator's own neighbours as in training: more factors did better (the best with
# 128, 256 and 512: 0.0393, 0.0418, 0.0434 NDCG@10; 512 at twice the time of 256 again), a penalty of 3
# as well as 1 and better than 0.3, the mapped order alone as well as or better than adding content's
# scores, and a share of the warm items' popularity beside their cosine better than none: best at 0.3-0.5
# of the most taken item's on a log scale (0.8 worse).
FACTORS = 256
ALPHA = 3.0
POPULARITY = 0.5


class ContentToBehaviour:
    def __init__(
        self,
        *,
        factors: int = FACTORS,
        alpha: float = ALPHA,
        seed: int = 0,
        svd_iterations: int = 2,
        max_fit_items: int = 50_000,
    ):
        """`svd_iterations`: power iterations of the randomized SVD; `max_fit_items`: the map learns from
        at most this many warm items (a seeded sample; every warm item keeps its own factors)."""
        self.factors = factors
        self.alpha = alpha
        self.seed = seed
        self.svd_iterations = svd_iterations
        self.max_fit_items = max_fit_items

    def fit(
        self, content: np.ndarray | sp.csr_matrix, cooccurrence: sp.csr_matrix, warm: np.ndarray
    ) -> ContentToBehaviour:
        """`content`: a row of features per item (dense vectors, or sparse TF-IDF); `cooccurrence`: item x
        item (symmetric, any scale); `warm`: which items have events. Learns the warm items' factors and
        the map to them."""
        warm_rows = np.flatnonzero(warm)
        self.warm_ = warm_rows
        self.item_factors_ = np.zeros((0, 0), np.float32)
        self.fitted_ = False
        k = min(self.factors, len(warm_rows) - 1)
        if k < 2 or content.shape[1] == 0:
            return self
        block = sp.csr_matrix(cooccurrence)[warm_rows][:, warm_rows].astype(np.float32)
        block = normalize(block + block.T, norm="l2", axis=1)
        svd = TruncatedSVD(n_components=k, n_iter=self.svd_iterations, random_state=self.seed)
        self.item_factors_ = normalize(svd.fit_transform(block)).astype(np.float32)
        learn = np.arange(len(warm_rows))
        if len(learn) > self.max_fit_items:
            learn = np.sort(np.random.default_rng(self.seed).choice(learn, self.max_fit_items, replace=False))
        # lsqr: a third quicker than sparse_cg on TF-IDF rows, the same map to its tolerance
        self.map_ = Ridge(alpha=self.alpha, fit_intercept=True, solver="lsqr").fit(
            content[warm_rows[learn]], self.item_factors_[learn]
        )
        self.fitted_ = True
        return self

    def predict_factors(self, content: np.ndarray | sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """The given items' factors as their content predicts them (unit rows; the warm items' own factors
        are `item_factors_`, of the items `warm_`). Serving takes a cold item's nearest warm items from
        these when it is asked about it, rather than training working them out for every cold item."""
        if not self.fitted_ or len(rows) == 0:
            return np.zeros((len(rows), self.item_factors_.shape[1] if self.fitted_ else 0), np.float32)
        return normalize(np.asarray(self.map_.predict(content[rows]))).astype(np.float32)

    def neighbours(
        self,
        content: np.ndarray | sp.csr_matrix,
        rows: np.ndarray,
        *,
        k: int = 50,
        prior: np.ndarray | None = None,
    ) -> sp.csr_matrix:
        """For the given items (rows of `content`), the `k` warm items nearest to their predicted factors
        (items that shoppers treat alike: the same items around them), as an items x items matrix of
        their cosine scores (plus `prior`), only items with a positive cosine kept. On Amazon Beauty this
        found the items next to a new one in shoppers' sequences better than the predicted co-occurrence
        row itself did (bench/coldstart.py). `prior` (one value per item, as `content`'s rows): added to
        the cosine of each warm item with a positive one, e.g. a small share of its popularity, so that of
        items about as near, the ones shoppers take more come first."""
        n = content.shape[0]
        if not self.fitted_ or len(rows) == 0:
            return sp.csr_matrix((n, n), dtype=np.float32)
        predicted = self.predict_factors(content, rows)
        k = min(k, self.item_factors_.shape[0])
        added = None if prior is None else np.asarray(prior, np.float32)[self.warm_]
        chunk = max(1, 20_000_000 // max(self.item_factors_.shape[0], 1))  # about 80 MB of scores at once
        out_rows, out_cols, out_values = [], [], []
        for start in range(0, len(rows), chunk):
            scores = predicted[start : start + chunk] @ self.item_factors_.T
            if added is not None:
                scores += added  # (in place: a new array of the scores took five times the product's time)
            top, values = top_k_columns(scores, k)
            # only items it is near (no prior makes a neighbour of any other)
            keep = values > (0 if added is None else added[top])
            out_rows.append(np.repeat(rows[start : start + chunk], k)[keep.ravel()])
            out_cols.append(self.warm_[top[keep]])
            out_values.append(values[keep])
        return sp.csr_matrix(
            (np.concatenate(out_values), (np.concatenate(out_rows), np.concatenate(out_cols))), shape=(n, n)
        )


def popularity_prior(counts: np.ndarray, weight: float = POPULARITY) -> np.ndarray:
    """A `prior` for `ContentToBehaviour.neighbours` from each item's number of events: `weight` at the
    most taken item, on a log scale (0 for an item with none)."""
    counts = np.asarray(counts, np.float64)
    top = counts.max() if counts.size else 0.0
    if top <= 0:
        return np.zeros(counts.size, np.float32)
    return (weight * np.log1p(counts) / np.log1p(top)).astype(np.float32)
