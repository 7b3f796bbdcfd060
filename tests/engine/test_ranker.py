"""The ranking stage's pieces: the feature matrix of (shopper, candidates), and LambdaRank learning a
planted signal."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommendations.engine.ranker import FEATURES, FeatureSource, LambdaRanker, candidate_features


def _source() -> FeatureSource:
    similar = sp.csr_matrix(
        np.array([[0, 0.5, 0.2, 0], [0.5, 0, 0, 0.1], [0.2, 0, 0, 0.9], [0, 0.1, 0.9, 0]])
    )
    transitions = sp.csr_matrix(np.array([[0, 1.0, 0, 0], [0, 0, 0, 0.7], [0, 0, 0, 0], [0.3, 0, 0, 0]]))
    tags = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [1, 1]]))
    return FeatureSource(similar, transitions, np.array([1.0, 0.5, 0.25, 0.1]), np.array([9, 4, 1, 0]), tags)


def test_features_read_the_links_of_the_latest_items():
    features = candidate_features(_source(), np.array([2, 0]), np.array([1, 3]), np.array([0.9, 0.4]))
    column = {name: features[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert column["stage_rank"] == [0, 1] and column["stage_score"] == [np.float32(0.9), np.float32(0.4)]
    assert column["similar_last"] == [np.float32(0.5), 0.0]  # the last item is 0
    assert column["next_last"] == [1.0, 0.0]
    assert column["similar_2"] == [0.0, np.float32(0.9)]  # the one before is 2
    assert column["similar_max"] == [np.float32(0.5), np.float32(0.9)]
    assert column["history_length"] == [2.0, 2.0]
    assert column["log_count"] == [np.float32(np.log1p(4)), 0.0]
    # tags: item 1 has tag 0 (the history has tags 0 and 1): all its tags shared; item 3 has both
    assert column["tag_affinity"] == [1.0, 1.0]
    assert column["tag_last"] == [1.0, 1.0]  # each shares one tag with item 0


def test_lambdarank_learns_which_feature_tells_the_next_item():
    rng = np.random.default_rng(0)

    def lists(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(n):
            x = rng.random((20, len(FEATURES))).astype(np.float32)
            y = np.zeros(20, np.int32)
            y[int(np.argmax(x[:, 3]))] = 1  # the candidate shoppers go to next: the strongest "next_last"
            xs.append(x)
            ys.append(y)
        return np.vstack(xs), np.concatenate(ys), np.full(n, 20)

    ranker = LambdaRanker(n_estimators=100, min_child_samples=5).fit(*lists(500))
    x, y, _ = lists(100)
    scores = ranker.score(x).reshape(100, 20)
    hits = (np.argmax(scores, axis=1) == np.argmax(y.reshape(100, 20), axis=1)).mean()
    assert hits > 0.6  # random: 0.05
    assert "lambdarank" in ranker.dump()
