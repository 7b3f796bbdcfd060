"""The network model's engine: canonical keys, store slices that leave the store's own events out, the
blend and its share chosen on validation, and the embedding refined by behaviour. No database."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from recommendations.engine.evaluation import temporal_split
from recommendations.engine.interactions import sorted_interactions
from recommendations.engine.network import (
    NetworkCooccurrence,
    blend_neighbours,
    canonical_key,
    category_cooccurrence,
    choose_global_share,
    network_embedding,
)
from recommendations.engine.recommender import SequentialItemKNN
from recommendations.engine.training import fit_store_model


def test_canonical_key():
    assert canonical_key(gtin="0001234567890", brand="X", title="t") == "gtin:1234567890"
    assert canonical_key(gtin="1234567890", brand=None, title=None) == "gtin:1234567890"
    assert canonical_key(gtin="", brand="Swift", title="Trail-Shoe, RED") == "name:swift|trail shoe red"
    assert canonical_key(gtin=None, brand="", title="Trail shoe") == ""
    assert canonical_key(gtin=None, brand="Swift", title="!!") == ""


def test_a_store_slice_leaves_its_own_events_out():
    network = NetworkCooccurrence(n_canonical=4, shrink=0.0)
    # store a: its shoppers take 0 with 1; store b: 0 with 2 (and 3 alone)
    network.add_store("a", users=np.array([0, 0, 1, 1]), canonical=np.array([0, 1, 0, 1]), weights=np.ones(4))
    network.add_store("b", users=np.array([0, 0, 1]), canonical=np.array([0, 2, 3]), weights=np.ones(3))
    a = network.store_slice("a", np.array([0, 1, 2])).toarray()
    assert a[0, 2] > 0 and a[2, 0] > 0  # learnt from b
    assert a[0, 1] == 0 and a[1, 0] == 0  # only a's own shoppers took 0 with 1
    b = network.store_slice("b", np.array([2, 0, 1])).toarray()
    assert b[1, 2] > 0  # b's 0 with 1 comes from a
    assert b[0, 1] == 0  # 2 with 0 is b's own
    # an item matched to nothing (-1) has no row; two items of one key are not each other's neighbour
    assert not network.store_slice("b", np.array([-1, 0, 1])).toarray()[0].any()
    assert network.store_slice("c", np.array([0, 0, 1])).toarray()[0, 1] == 0


def test_blend_neighbours():
    own = sp.csr_matrix(np.array([[0, 2.0, 0], [2.0, 0, 0], [0, 0, 0]], dtype=np.float32))
    network = sp.csr_matrix(np.array([[0, 0, 0.5], [0, 0, 0], [0.5, 0, 0]], dtype=np.float32))
    assert blend_neighbours(own, network, 0.0, k=10) is own
    half = blend_neighbours(own, network, 0.5, k=10).toarray()
    # the network is brought to the store's scale, then each gets half
    assert np.allclose(half[0], [0, 1.0, 1.0]) and np.allclose(half[2], [1.0, 0, 0])
    only = blend_neighbours(own, network, 1.0, k=10).toarray()
    assert only[0, 1] == 0 and only[0, 2] > 0
    assert blend_neighbours(own, network, 0.5, k=1).getnnz(axis=1).max() == 1


def planted(n_users: int, n_pairs: int, *, noise: float, seed: int):
    """Users view a random item then its planted partner (2p -> 2p+1); with `noise`, a random item instead."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(n_users):
        t = float(rng.integers(0, 10_000))
        for _ in range(3):
            first = 2 * int(rng.integers(n_pairs))
            second = int(rng.integers(2 * n_pairs)) if rng.random() < noise else first + 1
            users += [user, user]
            items += [first, second]
            times += [t, t + 1]
            t += 100
    return sorted_interactions(
        users=np.array(users), items=np.array(items), weights=np.ones(len(users)), times=np.array(times),
        n_users=n_users, n_items=2 * n_pairs,
    )  # fmt: skip


def network_of_pairs(n_pairs: int) -> sp.csr_matrix:
    rows = np.arange(0, 2 * n_pairs, 2)
    pairs = sp.csr_matrix((np.ones(n_pairs), (rows, rows + 1)), shape=(2 * n_pairs, 2 * n_pairs))
    return (pairs + pairs.T).tocsr().astype(np.float32)


def test_a_store_with_noisy_data_leans_on_the_network_and_gains():
    data = planted(300, 40, noise=0.8, seed=1)
    holdout = temporal_split(data, holdout_fraction=0.2)
    model = SequentialItemKNN(sequence_weight=0.0).fit(holdout.train)
    share, tried = choose_global_share(model, holdout, network_of_pairs(40), exclude_seen=False)
    assert share > 0 and tried[share] > tried[0.0]


def test_a_store_with_clean_data_keeps_its_own_model_against_a_wrong_network():
    data = planted(300, 40, noise=0.0, seed=2)
    wrong = sp.csr_matrix(np.roll(network_of_pairs(40).toarray(), 7, axis=1))  # links items at random
    holdout = temporal_split(data, holdout_fraction=0.2)
    model = SequentialItemKNN(sequence_weight=0.0).fit(holdout.train)
    share, tried = choose_global_share(model, holdout, wrong, exclude_seen=False)
    assert share <= 0.2 and tried[share] >= tried[1.0]


def test_fit_store_model_reports_the_share_and_the_store_only_figure():
    data = planted(300, 40, noise=0.8, seed=3)
    fitted = fit_store_model(data, repeats=False, network=network_of_pairs(40))
    assert fitted.global_share and fitted.share_chosen_by == "validation"
    assert fitted.metrics["ndcg@10"] >= fitted.metrics["ndcg@10_store_only"]
    # the blended neighbours reach the planted partner that the store's own data barely shows
    assert fitted.model.neighbours_[0].toarray().argmax() == 1
    assert fit_store_model(data, repeats=False).global_share is None
    fixed = fit_store_model(data, repeats=False, network=network_of_pairs(40), fixed_share=0.3)
    assert fixed.global_share == 0.3 and fixed.share_chosen_by == "the store's setting"
    tiny = planted(3, 40, noise=0.0, seed=4)
    assert fit_store_model(tiny, repeats=False, network=network_of_pairs(40)).share_chosen_by.startswith(
        "default"
    )


def test_categories_that_go_together():
    # shoppers of two stores touch categories 0 and 1 together; 2 goes alone
    matrix = category_cooccurrence(
        [
            (np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.ones(4)),
            (np.array([0, 0, 1]), np.array([0, 1, 2]), np.ones(3)),
        ],
        3,
    ).toarray()
    assert matrix[0, 1] > 0.5 and matrix[0, 2] == 0 and np.isclose(matrix[2, 2], 1.0)


def test_behaviour_brings_products_with_different_words_together():
    text = normalize(
        sp.random(6, 40, density=0.3, random_state=0, format="csr") + sp.eye(6, 40, format="csr")
    )
    behaviour = sp.csr_matrix(np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]))

    def cosine(vectors, i, j):
        return float(vectors[i] @ vectors[j])

    plain = network_embedding(text, dimensions=5)
    refined = network_embedding(text, behaviour, behaviour_weight=2.0, dimensions=5)
    assert np.allclose(np.linalg.norm(refined, axis=1), 1.0, atol=1e-5)
    assert cosine(refined, 0, 1) > cosine(plain, 0, 1) + 0.2
    assert cosine(refined, 0, 1) > cosine(refined, 0, 2)


def test_the_network_holds_what_its_stores_touched_not_stores_times_products():
    """Each store's counts are held over its own products: 200 small stores in a network of 2,000,000
    canonical products cost megabytes (a network-wide square and mass per store would cost 16 MB each)."""
    import tracemalloc

    rng = np.random.default_rng(3)
    n_canonical = 2_000_000
    tracemalloc.start()
    try:
        network = NetworkCooccurrence(n_canonical=n_canonical)
        catalogs = {}
        for store in range(200):
            catalogs[store] = rng.choice(n_canonical, 30, replace=False)
            users = rng.integers(0, 20, 120)
            network.add_store(
                store, users=users, canonical=rng.choice(catalogs[store], 120), weights=np.ones(120)
            )
        slices = [network.store_slice(store, catalogs[store]) for store in range(0, 200, 20)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert network.total_.nnz > 0 and all(matrix.shape == (30, 30) for matrix in slices)
    assert peak < 120 * 2**20, f"{peak / 2**20:.0f} MB"


def test_counts_kept_in_a_folder_give_the_same_slices(tmp_path):
    """The in-process engine keeps each store's counts on disk and the network's sum apart; its slices
    are those of a network built by adding the stores in memory."""
    from recommendations.engine.network import CountsFolder, CountsTotal, NetworkCounts, store_counts

    rng = np.random.default_rng(5)
    in_memory = NetworkCooccurrence(n_canonical=40)
    folder = CountsFolder(tmp_path)
    total = CountsTotal(40, block=50)  # folded many times
    for store in "abcd":
        users, canonical = rng.integers(0, 15, 90), rng.integers(0, 40, 90)
        weights = rng.choice([1.0, 3.0], 90).astype(np.float32)
        in_memory.add_store(store, users=users, canonical=canonical, weights=weights)
        counts = store_counts(users, canonical, weights)
        folder[store] = counts
        total.add(counts)
    assert sorted(folder) == list("abcd") and len(list(tmp_path.iterdir())) == 4 * len(CountsFolder.ARRAYS)
    built = NetworkCooccurrence.from_counts(
        NetworkCounts(folder, total.total, total.mass, sp.csr_matrix((1, 1)), 0), n_canonical=40
    )
    assert np.allclose(built.total_.toarray(), in_memory.total_.toarray())
    catalog = np.r_[rng.permutation(40)[:25], 7, -1]  # two items of one key, one matched to nothing
    for store in "abcde":
        ours, theirs = built.store_slice(store, catalog), in_memory.store_slice(store, catalog)
        assert np.array_equal(ours.indptr, theirs.indptr) and np.array_equal(ours.indices, theirs.indices)
        assert np.allclose(ours.data, theirs.data, rtol=1e-6)
    del folder["a"]
    assert "a" not in folder and len(list(tmp_path.iterdir())) == 3 * len(CountsFolder.ARRAYS)
