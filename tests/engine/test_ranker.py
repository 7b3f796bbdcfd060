"""The ranking stage's pieces: the feature matrix of (shopper, candidates), and LambdaRank learning a
planted signal."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommendations.engine.interactions import Interactions
from recommendations.engine.ranker import (
    FEATURES,
    FeatureSource,
    LambdaRanker,
    candidate_features,
    item_stats,
    load_ranker,
    ranker_features,
    session_run,
)
from recommendations.engine.two_stage import Lessons, learn_from_samples, lessons_dump, stage_candidates


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


def test_features_compare_each_candidate_with_the_rest_of_the_shopper_s_list():
    # history 0 then 1: candidate 3 follows 1 (0.7), candidate 2 co-occurs with 0 (0.2, older)
    features = candidate_features(_source(), np.array([0, 1]), np.array([2, 3]), np.array([0.9, 0.4]))
    column = {name: features[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert column["next_share"] == [0.0, 1.0] and column["next_list_rank"] == [1.0, 0.0]
    # co-occurrence summed with recency: 2 gets 0.7 x 0.2 from item 0; 3 gets 0.1 from item 1
    assert column["similar_recent"] == [np.float32(0.7 * 0.2), np.float32(0.1)]
    assert column["similar_list_rank"] == [0.0, 1.0]
    assert column["similar_share"] == [1.0, np.float32(0.1 / np.float32(0.7 * 0.2))]


def test_features_count_the_shopper_s_own_times_with_a_candidate():
    # oldest first: 1, 3, 1, 0; candidate 1 twice (last two events back), 3 once (three back), 2 never
    features = candidate_features(_source(), np.array([1, 3, 1, 0]), np.array([2, 1, 3]), np.ones(3))
    column = {name: features[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert column["own_count"] == [0.0, np.float32(np.log1p(2)), np.float32(np.log1p(1))]
    assert column["own_last"] == [0.0, np.float32(1 / 2), np.float32(1 / 3)]


def test_session_run_counts_the_latest_events_of_the_current_session():
    assert session_run(np.array([5, 5, 7, 7, 7])) == 3
    assert session_run(np.array([7, 5, 7])) == 1  # a session left and come back to: the run only
    assert session_run(np.array([7, 7, 0])) == 0  # the latest event came with no session
    assert session_run(np.array([7, 7])) == 2 and session_run(np.zeros(0)) == 0 and session_run(None) == 0


def test_features_sum_the_current_session_s_links():
    # oldest first 2, 1, 0; the session holds the last two (1 and 0): candidate 3 co-occurs with 1 (0.1)
    # and 2 (0.9, not in the session); candidate 2 with 0 (0.2)
    features = candidate_features(_source(), np.array([2, 1, 0]), np.array([2, 3]), np.ones(2), session=2)
    column = {name: features[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert column["session_length"] == [2.0, 2.0]
    assert column["similar_session"] == [np.float32(0.2), np.float32(0.1)]
    assert column["next_session"] == [0.0, np.float32(0.7)]  # shoppers go from 1 to 3
    none = candidate_features(_source(), np.array([2, 1, 0]), np.array([2, 3]), np.ones(2))
    assert not none[:, FEATURES.index("similar_session")].any() and not none[:, 34].any()


def test_item_stats_count_the_last_week_and_month_the_age_and_returns():
    day = 86400.0
    # item 0: events 40 and 3 days before the last event; item 1: only the last event; item 2: none
    data = Interactions(
        users=np.array([0, 0, 1]), items=np.array([0, 0, 1]), weights=np.ones(3),
        times=np.array([0.0, 37 * day, 40 * day]), n_users=2, n_items=3,
    )  # fmt: skip
    stats = item_stats(data)
    # item 0's one shopper came back to it; item 1's did not
    np.testing.assert_allclose(stats[0], [*np.log1p([1, 1, 40]), 1.0], rtol=1e-6)
    np.testing.assert_allclose(stats[1], [*np.log1p([1, 1, 0]), 0.0], rtol=1e-6)
    assert not stats[2].any()
    plain = _source()
    source = FeatureSource(
        plain.similar, plain.transitions, plain.popularity, plain.counts, plain.tags,
        stats=np.vstack([stats, np.zeros((1, 4), np.float32)]),
    )  # fmt: skip
    features = candidate_features(source, np.array([2]), np.array([0, 1, 3]), np.array([0.9, 0.5, 0.4]))
    column = {name: features[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert column["age"] == [np.float32(np.log1p(40)), 0.0, 0.0]
    assert column["return_rate"] == [1.0, 0.0, 0.0]
    # a week's daily rate against the month's: item 0 and item 1 alike (one event in each window)
    trend = np.log((1 / 7 + 1) / (1 / 30 + 1))
    np.testing.assert_allclose(column["trend"], [trend, trend, 0.0], rtol=1e-5)


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


def test_stage_candidates_keep_the_best_positive_scores_ties_to_the_lower_item():
    items = np.array([9, 4, 7, 1, 3, 8])
    scores = np.array([0.5, 0.9, 0.5, 0.0, -1.0, 0.5], np.float32)
    chosen, kept = stage_candidates(items, scores, depth=3)
    assert chosen.tolist() == [4, 7, 8] and kept.tolist() == [np.float32(0.9), 0.5, 0.5]
    assert stage_candidates(items, scores, depth=10)[0].tolist() == [4, 7, 8, 9]  # no zero or negative


def test_a_feature_source_reads_read_only_arrays_without_writing_them():
    """A version's arrays are memory-mapped read-only in serving: the source must not sort or rescale them
    in place."""
    source = _source()
    for matrix in (source.similar, source.transitions, source.tags):
        for array in (matrix.data, matrix.indices, matrix.indptr):
            array.flags.writeable = False
    again = FeatureSource(source.similar, source.transitions, source.popularity, source.counts, source.tags)
    features = candidate_features(again, np.array([2, 0]), np.array([1, 3]), np.array([0.9, 0.4]))
    assert np.array_equal(features, candidate_features(_source(), np.array([2, 0]), np.array([1, 3]),
                                                       np.array([0.9, 0.4])))  # fmt: skip


def test_price_features_and_a_ranker_learned_before_they_were_added():
    """Features are only appended: a ranker learned on the first 21 reads those of a wider matrix, and
    the network's ranker pools samples of either width."""
    base = _source()
    source = FeatureSource(base.similar, base.transitions, base.popularity, base.counts, base.tags,
                           prices=np.array([10.0, 20.0, 0.0, 40.0]))  # fmt: skip
    features = candidate_features(source, np.array([0, 1]), np.array([3, 2]), np.array([0.9, 0.4]))
    column = {name: features[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert column["log_price"] == [np.float32(np.log1p(40.0)), 0.0]
    # the shopper's usual: the median of 10 and 20; item 2's price is unknown
    assert np.allclose(column["price_vs_usual"], [np.log(40.0 / 15.0), 0.0])
    rng = np.random.default_rng(1)
    x = rng.random((2000, len(FEATURES))).astype(np.float32)
    y = (x[:, 3] > 0.95).astype(np.int32)
    old = LambdaRanker(n_estimators=5, min_child_samples=5).fit(x[:, :21], y, np.full(100, 20))
    loaded = load_ranker(old.dump())
    assert ranker_features(loaded) == 21
    # the compiled forest scores as LightGBM's own predict does
    expected = loaded.booster.predict(x[:20, :21], num_threads=1)
    assert loaded.forest is not None and np.array_equal(loaded.predict(x[:20, :21]), expected)
    narrow, wide = Lessons(), Lessons()
    for lessons, width in ((narrow, 21), (wide, len(FEATURES))):
        for start in range(0, 2000, 10):  # 200 lists each
            lessons.features.append(x[start : start + 10, :width])
            lessons.labels.append(np.r_[1, np.zeros(9, np.int32)])
            lessons.owners.append(start)
    text, figures = learn_from_samples([lessons_dump(narrow), lessons_dump(wide)])
    assert text is not None and figures == {**figures, "stores": 2, "lessons": 400}
    assert ranker_features(load_ranker(text)) == len(FEATURES)


def test_the_compiled_forest_scores_exactly_as_lightgbm():
    """The loaded ranker walks the trees itself: the same sums as LightGBM's predictor, NaN and zeros
    included; a model with categorical splits is left to LightGBM."""
    import lightgbm

    rng = np.random.default_rng(3)
    x = rng.random((6000, 6)).astype(np.float32)
    x[::9, 1] = np.nan  # NaN as the missing type of feature 1
    x[::4, 2] = 0.0
    y = ((np.nan_to_num(x[:, 1]) + x[:, 2] + 0.3 * rng.random(6000)) > 0.9).astype(np.int32)
    ranker = LambdaRanker(n_estimators=40, min_child_samples=5).fit(x, y, np.full(30, 200))
    loaded = load_ranker(ranker.dump())
    assert loaded.forest is not None
    test = rng.random((3000, 6)).astype(np.float32)
    test[::5, 1] = np.nan
    test[::3, 2] = 0.0
    for layout in (test, np.asfortranarray(test)):
        np.testing.assert_array_equal(loaded.predict(layout), loaded.booster.predict(test, num_threads=1))
    categorical = lightgbm.train(
        {"objective": "lambdarank", "verbosity": -1, "min_data_in_leaf": 5, "min_data_per_group": 5},
        lightgbm.Dataset(
            np.c_[x[:, :1], rng.integers(0, 6, len(x))], y, group=np.full(30, 200), categorical_feature=[1]
        ),
        num_boost_round=10,
    )
    fallback = load_ranker(categorical.model_to_string())
    assert fallback.forest is None
    rows = np.c_[test[:, :1], rng.integers(0, 6, len(test))].astype(np.float32)
    np.testing.assert_allclose(fallback.predict(rows), categorical.predict(rows))
