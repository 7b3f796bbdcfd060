"""Cold-start items from content (Etsy's): a product no shopper has touched gets collaborative neighbours
through a map learned at training from content (TF-IDF) to the warm items' behaviour factors, so a new
garden hose is related to the cleaning kits shoppers treat as they treat hoses, not only to other hoses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import scipy.sparse as sp

from recommendations.engine.coldstart import ContentToBehaviour, popularity_prior
from tests.conftest import product
from tests.test_recommendations import train

LINES = {
    "h": ("Garden hose, green, 25 metres", "Garden"),
    "k": ("Patio cleaning kit", "Garden"),  # nothing in common with a hose's text
    "n": ("Brass spray nozzle with trigger", "Garden"),
    "g": ("Leather work glove, lined", "Workwear"),
    "b": ("Rubber boot, steel toe", "Workwear"),
}
CATALOG = [
    product(f"{line}{i}", title=f"{title} {i}", category_path=[category])
    for line, (title, category) in LINES.items()
    for i in range(6)
] + [product("h9", title="Garden hose, green, 25 metres 9", category_path=["Garden"])]  # new: no events


def _events() -> list[dict]:
    """Shoppers view a hose or a cleaning kit, then nozzles (so kits are to shoppers what hoses are); or
    gloves, then boots."""
    start = datetime.now(tz=UTC) - timedelta(days=3)
    events = []
    for n in range(120):
        first = ("h", "k", "g")[n % 3]
        then = "b" if first == "g" else "n"
        moment = start + timedelta(minutes=10 * n)
        i = (n // 3) % 6
        for step, item in enumerate((f"{first}{i}", f"{then}{i}", f"{then}{(i + 1) % 6}")):
            at = (moment + timedelta(seconds=20 * step)).isoformat()
            events.append({"user_id": f"s{n}", "product_id": item, "type": "view", "timestamp": at})
    return events


def test_a_product_without_events_is_related_to_what_shoppers_of_products_like_it_chose(api, store):
    api.post("/api/v1/products/bulk", CATALOG)
    assert api.post("/api/v1/events", _events()).json()["rejected"] == 0
    run = train(store)
    assert run.status == "succeeded", run.message
    assert run.metrics["cold_items_mapped"] == 1
    answer = api.get("/api/v1/products/h9/related", limit=12).json()
    top = [item["id"] for item in answer["items"]]
    kits = [item for item in answer["items"] if item["id"].startswith("k")]
    assert kits, top  # nothing in a kit's text is like a hose's: it comes from what shoppers do
    assert kits[0]["reason"] == "shoppers of products like h9 chose this"
    assert not any(item_id[0] in "gb" for item_id in top)  # workwear is neither alike nor treated alike
    # its mapped neighbours in their own order, then products alike only in text: a hose is not put above
    # the kit shoppers treat as they treat it for reading like h9 (each kit i and hose i are alike to them)
    everything = api.get("/api/v1/products/h9/related", limit=30).json()["items"]
    mapped = [item["reason"] == "shoppers of products like h9 chose this" for item in everything]
    assert any(mapped) and mapped == sorted(mapped, reverse=True), everything
    score = {item["id"]: item["score"] for item in everything}
    twins = [(f"h{i}", f"k{i}") for i in range(6) if f"h{i}" in score and f"k{i}" in score]
    assert twins and all(score[hose] == score[kit] for hose, kit in twins), everything


def test_the_map_recovers_behaviour_that_content_alone_does_not_show():
    # items 0-3 and 4-7 co-occur in two blocks; content words: item i has word i % 4 and word 4 + i // 4
    # (the block), plus item 8, cold, with the words of item 1 (block 0)
    rng = np.random.default_rng(0)
    n = 9
    content = np.zeros((n, 6), np.float32)
    for item in range(8):
        content[item, item % 4] = 1.0
        content[item, 4 + item // 4] = 1.0 + rng.random() * 0.1
    content[8] = content[1]
    blocks = np.zeros((n, n), np.float32)
    blocks[:4, :4] = blocks[4:8, 4:8] = 1.0
    np.fill_diagonal(blocks, 0)
    warm = np.arange(n) < 8
    mapper = ContentToBehaviour(factors=2, alpha=0.01).fit(content, sp.csr_matrix(blocks), warm)
    neighbours = mapper.neighbours(content, np.array([8]), k=4).tocsr()
    assert set(neighbours[8].indices.tolist()) == {0, 1, 2, 3}  # its block, not item 5 (same first word)


def test_of_warm_items_about_as_near_the_popularity_prior_puts_the_more_taken_first():
    # two blocks of warm items; within block 0, items 0 and 1 have the same content (so the same predicted
    # nearness to a cold item like them), item 1 with far more events
    content = np.zeros((7, 4), np.float32)
    content[[0, 1], 0] = 1.0
    content[2, 1] = 1.0
    content[[3, 4, 5], 2] = 1.0
    content[6, 0] = 1.0  # cold: reads like items 0 and 1
    blocks = np.zeros((7, 7), np.float32)
    blocks[:3, :3] = blocks[3:6, 3:6] = 1.0
    np.fill_diagonal(blocks, 0)
    warm = np.arange(7) < 6
    mapper = ContentToBehaviour(factors=2, alpha=0.01).fit(content, sp.csr_matrix(blocks), warm)
    counts = np.array([2, 200, 20, 50, 50, 50, 0])
    plain = mapper.neighbours(content, np.array([6]), k=3).tocsr()[6]
    assert np.isclose(plain[0, 0], plain[0, 1])  # as near as each other without the prior
    prior = popularity_prior(counts, 0.1)
    assert prior[1] == np.float32(0.1) and prior[6] == 0.0 and 0 < prior[0] < prior[2] < prior[1]
    ranked = mapper.neighbours(content, np.array([6]), k=3, prior=prior).tocsr()[6]
    order = ranked.indices[np.argsort(-ranked.data)].tolist()
    assert order[0] == 1 and set(order) == {0, 1, 2}  # the block, the most taken first
    assert np.isclose(ranked[0, 1] - plain[0, 1], prior[1])


def test_no_prior_makes_a_neighbour_of_an_item_the_cold_one_is_not_near():
    class Map:  # predicts the factors (1, 0) for any content
        def predict(self, rows: np.ndarray) -> np.ndarray:
            return np.tile(np.array([1.0, 0.0], np.float32), (rows.shape[0], 1))

    mapper = ContentToBehaviour(factors=2)
    mapper.fitted_, mapper.map_ = True, Map()
    mapper.warm_ = np.array([0, 1, 2])
    # cosines with (1, 0): 0.6, 0 and -1
    mapper.item_factors_ = np.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    content = np.ones((4, 1), np.float32)
    prior = np.array([0.0, 0.5, 0.5, 0.0], np.float32)
    found = mapper.neighbours(content, np.array([3]), k=3, prior=prior).tocsr()[3]
    assert found.indices.tolist() == [0] and np.isclose(found.data[0], 0.6)
    assert mapper.neighbours(content, np.array([3]), k=3).tocsr()[3].indices.tolist() == [0]
