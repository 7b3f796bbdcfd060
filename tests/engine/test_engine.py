"""The engine on small generated data with fixed seeds: it recovers planted structure. No database."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommendations.engine.baskets import FrequentlyBoughtTogether
from recommendations.engine.content import ContentEmbedding, nearest_neighbours
from recommendations.engine.evaluation import (
    evaluate,
    last_basket_out,
    leave_last_out,
    model_recommender,
    ranking_metrics,
    temporal_split,
)
from recommendations.engine.interactions import IdIndex, recency_weighted_history, sorted_interactions
from recommendations.engine.neighbors import ItemCooccurrence, ItemTransitions, top_k_per_row
from recommendations.engine.recommender import SequentialItemKNN, decayed_popularity, history_row, top_n


def interactions(events, n_users=None, n_items=None, baskets=None):
    users = np.array([e[0] for e in events])
    items = np.array([e[1] for e in events])
    times = np.array([e[2] for e in events], dtype=float)
    weights = np.array([e[3] if len(e) > 3 else 1.0 for e in events])
    return sorted_interactions(
        users=users, items=items, weights=weights, times=times,
        n_users=n_users or users.max() + 1, n_items=n_items or items.max() + 1, baskets=baskets,
    )  # fmt: skip


def paired_users(n_users=200, n_pairs=10, seed=0):
    """Every user takes one random item, then two planted pairs (2p, 2p+1), one after the other."""
    rng = np.random.default_rng(seed)
    events, t = [], 0
    for user in range(n_users):
        first, second = rng.choice(n_pairs, size=2, replace=False)
        noise = rng.integers(2 * n_pairs, 2 * n_pairs + 30)
        for item in (noise, 2 * first, 2 * first + 1, 2 * second, 2 * second + 1):
            events.append((user, int(item), t))
            t += 1
    return interactions(events, n_items=2 * n_pairs + 30)


def test_top_k_per_row_keeps_the_largest():
    matrix = sp.csr_matrix(np.array([[0, 5, 1, 3], [2, 0, 0, 0]], dtype=np.float32))
    pruned = top_k_per_row(matrix, 2).toarray()
    assert pruned.tolist() == [[0, 5, 0, 3], [2, 0, 0, 0]]


def test_id_index_maps_and_marks_unknown():
    index, codes = IdIndex.from_values(np.array([30, 10, 30, 20]))
    assert index.ids.tolist() == [10, 20, 30]
    assert codes.tolist() == [2, 0, 2, 1]
    assert index.positions(np.array([20, 99, 10])).tolist() == [1, -1, 0]


@pytest.mark.parametrize("seed", range(5))
def test_id_index_s_compiled_search_finds_what_numpy_finds(seed):
    """int64 ids are looked up by a compiled binary search; other ids by numpy: the same positions."""
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(-50, 400, size=rng.integers(1, 120)))
    values = rng.integers(-60, 420, size=300)
    values[:3] = [ids[0], ids[-1], ids[-1] + 1]
    compiled = IdIndex(ids=ids).positions(values)
    plain = IdIndex(ids=ids.astype(np.float64)).positions(values.astype(np.float64))  # (numpy's path)
    assert compiled.dtype == plain.dtype == np.int64
    assert compiled.tolist() == plain.tolist()
    assert (compiled >= 0).sum() > 0 and (compiled < 0).sum() > 0
    assert IdIndex(ids=ids).positions(np.zeros(0, np.int64)).tolist() == []


def test_cooccurrence_recovers_planted_pairs():
    data = paired_users()
    from recommendations.engine.interactions import user_item_matrix

    similarity = ItemCooccurrence(k=5, chunk_items=7).fit(user_item_matrix(data)).similarity_
    for pair in range(10):
        row = similarity[2 * pair].toarray().ravel()
        assert row.argmax() == 2 * pair + 1
        assert row[2 * pair] == 0  # never its own neighbour
    assert np.diff(similarity.indptr).max() <= 5


def test_chunking_does_not_change_the_answer():
    data = paired_users(seed=3)
    from recommendations.engine.interactions import user_item_matrix

    matrix = user_item_matrix(data)
    whole = ItemCooccurrence(k=10, chunk_items=10_000).fit(matrix).similarity_.toarray()
    chunked = ItemCooccurrence(k=10, chunk_items=3).fit(matrix).similarity_.toarray()
    np.testing.assert_allclose(whole, chunked, rtol=1e-6)


def test_transitions_learn_what_comes_next():
    # every user goes 0 -> 1 -> 2; some go 0 -> 3
    events, t = [], 0
    for user in range(50):
        path = [0, 1, 2] if user % 5 else [0, 3]
        for item in path:
            events.append((user, item, t))
            t += 1
    transitions = ItemTransitions(window=1).fit(interactions(events)).transitions_.toarray()
    assert transitions[0].argmax() == 1
    assert transitions[1].argmax() == 2
    assert transitions[0, 3] > 0
    np.testing.assert_allclose(transitions[0].sum(), 1.0, rtol=1e-6)
    assert transitions[2].sum() == 0  # nothing follows 2


def test_recommender_prefers_the_neighbours_of_the_latest_event():
    data = paired_users(n_users=300)
    model = SequentialItemKNN(k=20, history_decay=0.3, popularity_weight=0.0).fit(data)
    # a shopper who looked at item 0 long ago and item 4 just now
    history = history_row(np.array([0, 4]), np.array([1.0, 1.0]), n_items=data.n_items, decay=0.3)
    items, scores = model.recommend(history, n=2, exclude=history)
    assert items[0].tolist() == [5, 1]
    assert scores[0, 0] > scores[0, 1]


def test_recommender_excludes_and_can_repeat():
    data = paired_users()
    history = history_row(np.array([0]), np.array([1.0]), n_items=data.n_items, decay=0.5)
    model = SequentialItemKNN(repeat_weight=2.0).fit(data)
    assert model.recommend(history, n=1)[0][0, 0] == 0  # groceries: the item bought before comes back
    assert 0 not in model.recommend(history, n=5, exclude=history)[0][0]


def test_recency_weighted_history_decays_by_position():
    data = interactions([(0, 1, 0), (0, 2, 1), (0, 3, 2), (1, 1, 3)])
    history = recency_weighted_history(data, decay=0.5).toarray()
    assert history[0].tolist() == [0, 0.25, 0.5, 1.0]
    assert history[1].tolist() == [0, 1.0, 0, 0]


def test_frequently_bought_together_finds_bundles_by_lift():
    rng = np.random.default_rng(1)
    baskets, items = [], []
    for basket in range(400):
        chosen = list(rng.choice(np.arange(10, 40), size=2, replace=False))
        if basket % 4 == 0:
            chosen += [5, 6]  # the planted bundle
        baskets += [basket] * len(chosen)
        items += chosen
    model = FrequentlyBoughtTogether(min_support=3, k=5).fit(np.array(baskets), np.array(items), n_items=40)
    assert model.lift_[5].toarray().argmax() == 6
    assert model.lift_[6].toarray().argmax() == 5
    assert model.support_.data.min() >= 3


def test_popularity_decays_with_age():
    data = interactions([(0, 0, 0.0), (1, 1, 7 * 86400.0)])
    popularity = decayed_popularity(data, half_life_days=7)
    assert popularity.tolist() == [0.5, 1.0]


def test_content_embedding_puts_similar_texts_together():
    documents = [
        "red running shoe sport",
        "blue running shoe sport",
        "chocolate cake dessert sweet",
        "vanilla cake dessert sweet",
        "garden hose water green",
        "garden rake tool green",
    ]
    vectors = ContentEmbedding(dimensions=4).fit_transform(documents)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    neighbours = nearest_neighbours(vectors, k=1).toarray()
    assert neighbours.argmax(axis=1).tolist() == [1, 0, 3, 2, 5, 4]


def test_splits():
    data = interactions([(0, 1, 0), (0, 2, 1), (0, 3, 2), (1, 4, 3), (2, 5, 4), (2, 6, 5)])
    holdout = leave_last_out(data)
    assert holdout.users.tolist() == [0, 2]
    assert holdout.targets[0].indices.tolist() == [3] and holdout.targets[2].indices.tolist() == [6]
    assert len(holdout.train) == 4
    timed = temporal_split(
        interactions([(0, 1, 0), (1, 2, 1), (0, 3, 2), (1, 4, 3), (0, 5, 4), (2, 6, 5)]), holdout_fraction=0.4
    )
    assert timed.users.tolist() == [0, 1]  # user 2 has no history before the cut
    assert len(timed.train) == 3
    baskets = interactions([(0, 1, 0), (0, 2, 0), (0, 3, 1), (0, 1, 1)], baskets=np.array([7, 7, 8, 8]))
    last = last_basket_out(baskets)
    assert sorted(last.targets[0].indices.tolist()) == [1, 3]


def test_ranking_metrics_exact():
    top = np.array([[3, 1, 2], [0, 1, 2]])
    targets = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    metrics = ranking_metrics(top, targets, n_items=4)
    assert metrics.hit_rate == 0.5
    assert metrics.recall == 0.5
    assert metrics.ndcg == pytest.approx(0.5 * (1 / np.log2(3)))
    assert metrics.coverage == 1.0


def test_end_to_end_quality_beats_popularity_on_structured_data():
    data = paired_users(n_users=500, seed=7)
    holdout = leave_last_out(data)
    model = SequentialItemKNN().fit(holdout.train)
    engine = evaluate(model_recommender(model, holdout, k=5, exclude_seen=True), holdout, k=5)
    counts = np.bincount(holdout.train.items, minlength=data.n_items).astype(float)
    popular = evaluate(lambda users: top_n(np.repeat(counts[None], len(users), 0), 5)[0], holdout, k=5)
    assert engine.hit_rate > 0.9
    assert popular.hit_rate < 0.5


def test_content_neighbours_of_chosen_rows_only():
    vectors = ContentEmbedding(dimensions=3).fit_transform(
        ["red shoe", "red shoe sport", "blue cake", "blue cake sweet", "green tree", "green tree leaf"]
    )
    neighbours = nearest_neighbours(vectors, k=1, rows=np.array([2]))
    assert neighbours.shape == (6, 6)
    assert np.diff(neighbours.indptr).tolist() == [0, 0, 1, 0, 0, 0]
    assert neighbours[2].indices.tolist() == [3]


def test_interaction_half_life_favours_recent_cooccurrence():
    # long ago users paired 0 with 1; recently they pair 0 with 2, as often
    events, t = [], 0.0
    for user in range(20):
        events += [(user, 0, t), (user, 1, t + 1)]
        t += 2
    recent = 400 * 86400.0
    for user in range(20, 40):
        events += [(user, 0, recent + t), (user, 2, recent + t + 1)]
        t += 2
    data = interactions(events)
    plain = SequentialItemKNN(sequence_weight=0.0).fit(data).similar_[0].toarray().ravel()
    decayed = (
        SequentialItemKNN(sequence_weight=0.0, interaction_half_life_days=90).fit(data).similar_[0].toarray()
    )
    assert plain[1] == pytest.approx(plain[2])
    assert decayed.ravel()[2] > 2 * decayed.ravel()[1]


def test_sparse_personal_scores_match_the_dense_rule():
    from recommendations.engine.recommender import personal_scores_sparse, score_histories

    rng = np.random.default_rng(3)
    neighbours = sp.random(300, 300, density=0.03, random_state=4, format="csr", dtype=np.float32)
    popularity = rng.random(300).astype(np.float32)
    for repeat_weight in (0.0, 1.5):
        history = sp.csr_matrix(
            (rng.random(6).astype(np.float32), (np.zeros(6, int), rng.choice(300, 6, replace=False))),
            shape=(1, 300),
        )
        dense = score_histories(
            history, neighbours, popularity, repeat_weight=repeat_weight, popularity_weight=0.02
        )
        sparse = personal_scores_sparse(history, neighbours, repeat_weight=repeat_weight)
        assert np.allclose(sparse.toarray()[0] + 0.02 * popularity, dense[0], atol=1e-6)
        assert sparse.nnz < 300  # only what the history reaches


def test_gathered_rows_equal_the_sparse_product():
    from recommendations.engine.recommender import add_sparse, gather_rows

    matrix = sp.random(200, 150, density=0.05, random_state=7, format="csr", dtype=np.float32)
    rows = np.array([3, 3, 17, 199, 0])  # a row twice, and rows that may be empty
    weights = np.array([0.5, 1.0, 2.0, 0.25, 3.0], dtype=np.float32)
    indices, values = gather_rows(matrix, rows, weights)
    expected = np.asarray(weights @ matrix[rows].toarray()).ravel()
    dense = np.zeros(150, np.float32)
    dense[indices] = values
    assert np.allclose(dense, expected, atol=1e-6) and np.all(np.diff(indices) > 0)
    empty = sp.csr_matrix((5, 4), dtype=np.float32)
    assert gather_rows(empty, np.array([1, 2]), np.ones(2)).__len__() == 2
    assert gather_rows(empty, np.array([1, 2]), np.ones(2))[0].size == 0
    summed = add_sparse((np.array([4, 1]), np.array([1.0, 2.0])), (np.array([1]), np.array([0.5])))
    assert summed[0].tolist() == [1, 4] and summed[1].tolist() == [2.5, 1.0]


@pytest.mark.parametrize("weight", [0.0, 0.01, 1.0])
def test_ranked_by_full_score_is_every_candidate_scored_and_sorted(weight):
    """The compiled merge gives what serving computed before: the items with a personal part and the
    `at_most` most popular, scored in float32, sorted by score then item, cut at `at_most`; ties planted
    (quantised popularity and values), zero popularity, and personal parts of popular items."""
    from recommendations.engine.recommender import ranked_by_full_score

    rng = np.random.default_rng(11)
    for trial in range(300):
        n_items = int(rng.integers(1, 400))
        popularity = (rng.integers(0, 6, size=n_items) / 5).astype(np.float32)  # many ties, some zero
        order = np.argsort(-popularity, kind="stable")
        order = order[popularity[order] > 0]
        at_most = int(rng.integers(1, 60))
        personal = np.unique(rng.integers(0, n_items, size=int(rng.integers(0, 80))))
        values = (rng.integers(-1, 4, size=personal.size) / 3).astype(np.float32)
        items, scores = ranked_by_full_score(
            personal, values, popularity, order, weight=weight, at_most=at_most
        )
        # the reference: every candidate scored as serving scored them, then sorted
        top = np.sort(order[:at_most])
        candidates = np.union1d(top, personal)
        full = np.float32(weight) * popularity[candidates]
        at = np.searchsorted(candidates, personal)
        full[at] += values
        keep = np.isfinite(full) & (full > 0)
        candidates, full = candidates[keep], full[keep]
        ranked = np.lexsort((candidates, -full))[:at_most]
        assert items.tolist() == candidates[ranked].tolist(), trial
        assert scores.tobytes() == full[ranked].tobytes(), trial


def test_strongest_sources_name_the_history_item_that_contributed_most():
    """Against the dense form serving used before: history rows by target columns of link x weight, the
    first row of a column's maximum, none where no contribution is positive; targets named twice, absent
    from every row, and ties."""
    from recommendations.engine.recommender import strongest_sources

    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(2, 80))
        neighbours = sp.random(n, n, density=0.2, random_state=int(rng.integers(1 << 30)), format="csr",
                               dtype=np.float32)  # fmt: skip
        neighbours.data = (np.round(neighbours.data * 4) / 4).astype(np.float32)  # ties
        items = np.unique(rng.integers(0, n, size=int(rng.integers(0, 12))))
        weights = rng.choice([0.0, 0.5, 1.0, 2.0], size=items.size).astype(np.float32)
        targets = rng.integers(0, n, size=int(rng.integers(0, 8)))
        got = strongest_sources(neighbours, items, weights, targets)
        dense = neighbours[items].toarray() * weights[:, None] if items.size else np.zeros((0, n))
        expected = [
            int(np.argmax(dense[:, t])) if items.size and dense[:, t].max() > 0 else -1 for t in targets
        ]
        assert got.tolist() == expected, trial


def test_row_entries_are_the_rows_stored_entries():
    from recommendations.engine.recommender import row_entries

    matrix = sp.random(50, 40, density=0.1, random_state=9, format="csr", dtype=np.float32)
    rows = np.array([7, 0, 7, 49])
    owner, columns, values = row_entries(matrix, rows)
    rebuilt = np.zeros((rows.size, 40), np.float32)
    rebuilt[owner, columns] = values
    assert np.array_equal(rebuilt, matrix[rows].toarray())


def test_the_history_vector_and_one_row_scores_equal_the_matrix_forms():
    from recommendations.engine.recommender import (
        history_vector,
        personal_scores_one,
        personal_scores_sparse,
    )

    rng = np.random.default_rng(7)
    neighbours = sp.random(300, 300, density=0.05, random_state=3, dtype=np.float32, format="csr")
    for _ in range(200):
        size = int(rng.integers(1, 60))
        items = rng.integers(0, 40, size=size)  # many repeats
        weights = rng.choice([0.5, 1.0, 3.0, 5.0], size=size).astype(np.float32)
        decay = float(rng.uniform(0.3, 0.99))
        # the matrix form as serving built it before (scipy's COO -> CSR, then sum_duplicates)
        factors = np.power(decay, np.arange(size - 1, -1, -1, dtype=np.float64)).astype(np.float32)
        row = sp.csr_matrix((weights * factors, (np.zeros(size, np.int64), items)), shape=(1, 300))
        row.sum_duplicates()
        indices, values = history_vector(items, weights, decay=decay)
        assert indices.tolist() == row.indices.tolist()
        # equal up to the order in which float32 sums the repeats of an item
        np.testing.assert_allclose(values, row.data, rtol=1e-6)
        repeat = float(rng.choice([0.0, 0.3]))
        one = personal_scores_one(indices, values, neighbours, repeat_weight=repeat)
        same_row = sp.csr_matrix((values, indices, [0, indices.size]), shape=(1, 300))
        matrix = personal_scores_sparse(same_row, neighbours, repeat_weight=repeat)
        assert one[0].tolist() == matrix.indices.tolist() and one[1].tobytes() == matrix.data.tobytes()


def _dense_best(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The best n per row of a dense score matrix, ties to the lower item (the reference)."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :n]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("repeat_weight", [0.0, 1.5])
@pytest.mark.parametrize("popularity_weight", [0.0, 0.01])
def test_the_best_items_of_many_histories_equal_ranking_every_item(repeat_weight, popularity_weight):
    """recommend_histories ranks only what each history reaches and the most popular others: the same
    items and scores, to the bit, as scoring every item densely; seen items excluded, ties to the lower
    item; rows that reach nothing get the most popular; heavy rows that exclude most of the popular."""
    from recommendations.engine.recommender import recommend_histories, score_histories

    rng = np.random.default_rng(11)
    n_items = 400
    neighbours = sp.random(n_items, n_items, density=0.02, random_state=5, format="csr", dtype=np.float32)
    popularity = np.round(rng.random(n_items), 2).astype(np.float32)  # rounded: ties among the popular
    popularity[rng.choice(n_items, 40, replace=False)] = 0.0
    rows = []
    for size in [0, 1, 3, 8, 30, 150]:  # an empty history, and one that has seen most of the popular
        history = np.zeros(n_items, np.float32)
        history[rng.choice(n_items, size, replace=False)] = rng.random(size).astype(np.float32) + 0.1
        rows.append(history)
    history = sp.csr_matrix(np.vstack(rows))
    popular_seen = np.zeros((len(rows), n_items), np.float32)
    # rows 1 (one item seen) and the last: 60 of the most popular excluded too
    popular_seen[np.ix_([1, len(rows) - 1], np.argsort(-popularity)[:60])] = 1.0
    exclude = (history + sp.csr_matrix(popular_seen)).tocsr()
    dense = score_histories(
        history, neighbours, popularity, repeat_weight=repeat_weight, popularity_weight=popularity_weight
    )
    for excluded in (None, exclude):
        expected_scores = dense.copy()
        if excluded is not None:
            expected_scores[excluded.toarray() > 0] = -np.inf
        want_items, want_scores = _dense_best(expected_scores, 10)
        items, scores = recommend_histories(
            history, neighbours, popularity, n=10, exclude=excluded,
            repeat_weight=repeat_weight, popularity_weight=popularity_weight,
        )  # fmt: skip
        assert np.array_equal(scores, want_scores)
        if popularity_weight:  # without popularity, items past those reached all tie at zero
            assert np.array_equal(items, want_items)
        if excluded is not None:
            assert not (excluded.toarray()[np.arange(len(rows))[:, None], items] > 0).any()


def test_user_events_give_the_rows_of_the_whole_matrices():
    """UserEvents builds the asked users' rows of recency_weighted_history and the binary user_item_matrix
    from events grouped once: the same values, bit for bit, users in any order, repeats and empty rows."""
    from recommendations.engine.interactions import UserEvents, user_item_matrix

    rng = np.random.default_rng(3)
    size = 3000
    data = sorted_interactions(
        users=rng.integers(0, 200, size), items=rng.integers(0, 50, size),  # many repeats of an item
        weights=rng.choice([1.0, 3.0, 5.0], size), times=rng.integers(0, 10_000, size).astype(float),
        n_users=210, n_items=60,  # users 200-209 have no events
    )  # fmt: skip
    events = UserEvents(data)
    users = np.array([5, 205, 0, 5, 199, 17])
    for decay in (0.3, 1.0):
        whole = recency_weighted_history(data, decay=decay)[users]
        part = events.history(users, decay=decay)
        assert (part != whole).nnz == 0 and np.array_equal(part.toarray(), whole.toarray())
    assert np.array_equal(events.seen(users).toarray(), user_item_matrix(data, binary=True)[users].toarray())
    assert events.history(np.array([], dtype=int), decay=0.5).shape == (0, 60)


@pytest.mark.parametrize("cols", [300, 1000, 6400, 6431])  # narrow rows, a last block short or not
def test_top_k_columns_keep_the_best_values(cols):
    """top_k_columns gives each row's k largest values (the block maxima first for wide rows), with -inf
    rows, a row with fewer finite values than k and ties where any of the tied may come."""
    from recommendations.engine.neighbors import top_k_columns

    rng = np.random.default_rng(cols)
    scores = rng.standard_normal((7, cols)).astype(np.float32)
    scores[1] = np.round(scores[1])  # many ties
    scores[2, :] = -np.inf
    scores[2, [5, cols - 1]] = [1.0, 2.0]  # two finite values, one in the last column
    scores[3, cols - 1] = 50.0  # the best in the last (maybe short) block
    for k in (1, 5, 20):
        columns, values = top_k_columns(scores, k)
        assert columns.shape == values.shape == (7, k)
        want = -np.sort(-scores, axis=1)[:, :k]
        assert np.array_equal(np.sort(values, axis=1)[:, ::-1], want)
        assert np.array_equal(
            np.take_along_axis(scores, columns, axis=1)[values > -np.inf], values[values > -np.inf]
        )
        for row in range(7):  # columns are distinct where values are real
            real = columns[row][values[row] > -np.inf]
            assert len(set(real.tolist())) == real.size


@pytest.mark.parametrize("seed", range(6))
def test_compiled_sparse_sums_equal_numpy_s_to_the_bit(seed):
    """add_sparse and history_vector sum each index's values in a compiled pass: the same bits as
    np.unique with np.bincount (float64, then float32) and np.add.at (float32, oldest first)."""
    from recommendations.engine.recommender import add_sparse, history_vector

    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 300))
    items = rng.integers(0, 40 if seed % 2 else 5000, size=size)  # with many repeats, or few
    weights = rng.uniform(0, 5, size=size).astype(np.float32)
    weights[rng.random(size) < 0.1] = 0
    unique, inverse = np.unique(items, return_inverse=True)
    factors = np.power(0.97, np.arange(size - 1, -1, -1, dtype=np.float64)).astype(np.float32)
    expected = np.zeros(unique.size, np.float32)
    np.add.at(expected, inverse, weights * factors)
    indices, values = history_vector(items, weights, decay=0.97)
    assert indices.tolist() == unique.tolist() and values.dtype == np.float32
    assert values.tobytes() == expected.tobytes()
    other = rng.integers(0, 60, size=50)
    other_values = rng.uniform(0, 1, size=50).astype(np.float32)
    both = np.concatenate([items, other])
    merged, at = np.unique(both, return_inverse=True)
    summed = np.bincount(at, weights=np.concatenate([weights, other_values]), minlength=merged.size)
    indices, values = add_sparse((items, weights), (other, other_values))
    assert indices.tolist() == merged.tolist()
    assert values.tobytes() == summed.astype(np.float32).tobytes()
