"""The gain of blending the global model into each store's model, by store size.

Generated data: many stores sell subsets of one hidden catalog (products carry a GTIN, so they match
across stores; some do not), and shoppers everywhere follow the same hidden structure (taste for a few
categories, categories that go together, products that lead to others). Every store is fitted with the
worker's own code (recommendations/engine/training.py: tuning, choosing the global share on the store's
validation split, evaluating) twice: alone, and with its slice of the network model. The network model
is built from events before one cut in time shared by all stores; every store is scored on its events
after that cut, which neither its model nor the network saw.

    python bench/blend.py [--small 10 --middle 6 --large 3 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recommendations.engine.evaluation import _holdout, evaluate, model_recommender  # noqa: E402
from recommendations.engine.interactions import Interactions, sorted_interactions  # noqa: E402
from recommendations.engine.network import NetworkCooccurrence  # noqa: E402
from recommendations.engine.training import fit_store_model  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
SIZES = {"small": 40, "middle": 400, "large": 4000}  # shoppers per store
SHARE_OF_CATALOG = {"small": 0.25, "middle": 0.4, "large": 0.6}


@dataclass
class World:
    n_products: int
    category: np.ndarray  # per canonical product
    companions: np.ndarray  # canonical product -> products that shoppers go on to
    partner: np.ndarray  # category -> the category that goes with it
    has_gtin: np.ndarray


def make_world(rng: np.random.Generator, n_products: int = 3000, n_categories: int = 30) -> World:
    category = rng.integers(0, n_categories, n_products)
    partner = rng.permutation(n_categories)
    by_category = [np.flatnonzero(category == c) for c in range(n_categories)]
    companions = np.zeros((n_products, 6), dtype=np.int64)
    for product in range(n_products):
        same = by_category[category[product]]
        other = by_category[partner[category[product]]]
        companions[product, :4] = rng.choice(same, 4)
        companions[product, 4:] = rng.choice(other, 2)
    return World(n_products, category, companions, partner, rng.random(n_products) < 0.85)


def make_store(rng: np.random.Generator, world: World, size: str, start: float, span: float):
    """A store's catalog (canonical ids it carries) and its events (users, canonical items, times)."""
    carried = np.sort(
        rng.choice(world.n_products, int(world.n_products * SHARE_OF_CATALOG[size]), replace=False)
    )
    carried_mask = np.zeros(world.n_products, dtype=bool)
    carried_mask[carried] = True
    by_category = {c: carried[world.category[carried] == c] for c in np.unique(world.category[carried])}
    categories = np.array(sorted(by_category))
    users, items, times = [], [], []
    for user in range(SIZES[size]):
        taste = rng.choice(categories, 2, replace=False)
        t = start + rng.random() * span * 0.6
        current = rng.choice(by_category[taste[0]])
        for _ in range(int(rng.integers(4, 16))):
            users.append(user)
            items.append(current)
            times.append(t)
            t += rng.exponential(span * 0.03)
            step = rng.random()
            options = world.companions[current][carried_mask[world.companions[current]]]
            if step < 0.6 and options.size:
                current = rng.choice(options)  # products lead to others, the same everywhere
            else:
                pool = by_category.get(world.partner[world.category[current]]) if step < 0.7 else None
                pool = pool if pool is not None and pool.size else by_category[rng.choice(taste)]
                current = rng.choice(pool)
    order = np.argsort(times, kind="stable")
    return carried, np.array(users)[order], np.array(items)[order], np.array(times)[order]


def interactions_of(users, items_local, times, n_items) -> Interactions:
    return sorted_interactions(
        users=users, items=items_local, weights=np.ones(len(users), np.float32), times=times,
        n_users=int(users.max()) + 1 if len(users) else 0, n_items=n_items,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--middle", type=int, default=6)
    parser.add_argument("--large", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    world = make_world(rng)
    span = 100 * 86400.0
    stores = []
    for size in ("small", "middle", "large"):
        for _ in range(getattr(args, size)):
            stores.append((size, *make_store(rng, world, size, 1.7e9, span)))
    all_times = np.concatenate([s[4] for s in stores])
    cut = float(np.quantile(all_times, 0.85))
    # the canonical key: the GTIN when the product has one; the others match nothing across stores
    started = time.monotonic()
    network = NetworkCooccurrence(n_canonical=world.n_products)
    for index, (_, _carried, users, items, times) in enumerate(stores):
        before = (times < cut) & world.has_gtin[items]
        network.add_store(index, users=users[before], canonical=items[before], weights=np.ones(before.sum()))
    network_seconds = time.monotonic() - started
    print(f"{len(stores)} stores, {len(all_times)} events; network model over events before the cut: "
          f"{network_seconds:.1f} s")  # fmt: skip

    rows = []
    for index, (size, carried, users, items, times) in enumerate(stores):
        local = np.searchsorted(carried, items)
        data = interactions_of(users, local, times, len(carried))
        before = data.times < cut
        holdout = _holdout(data, before, np.flatnonzero(~before))
        canonical = np.where(world.has_gtin[carried], carried, -1)
        store_slice = network.store_slice(index, canonical)
        alone = fit_store_model(holdout.train, repeats=False)
        blended = fit_store_model(holdout.train, repeats=False, network=store_slice)
        scores = {}
        for name, fitted in (("store", alone), ("blend", blended)):
            scores[name] = evaluate(
                model_recommender(fitted.model, holdout, k=10, exclude_seen=True), holdout, k=10
            )
        rows.append(
            {
                "size": size,
                "store": index,
                "shoppers": SIZES[size],
                "events": int(before.sum()),
                "test_users": scores["store"].users,
                "share": blended.global_share,
                "chosen_by": blended.share_chosen_by,
                "ndcg_store": scores["store"].ndcg,
                "ndcg_blend": scores["blend"].ndcg,
                "recall_store": scores["store"].recall,
                "recall_blend": scores["blend"].recall,
            }
        )
        print(f"  store {index:2d} {size:6s} events {before.sum():6d} test users {scores['store'].users:5d} "
              f"share {blended.global_share:.2f} ({blended.share_chosen_by}) NDCG@10 "
              f"{scores['store'].ndcg:.4f} -> {scores['blend'].ndcg:.4f}")  # fmt: skip

    print(
        "\n| stores | shoppers each | test users | global share (median) | NDCG@10 store only "
        "| NDCG@10 blend | gain | recall@10 store only | recall@10 blend |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for size in ("small", "middle", "large"):
        group = [row for row in rows if row["size"] == size]
        if not group:
            continue
        weights = np.array([row["test_users"] for row in group], dtype=float)

        def mean(key, group=group, weights=weights):
            return float(np.average([row[key] for row in group], weights=weights)) if weights.sum() else 0.0

        store, blend = mean("ndcg_store"), mean("ndcg_blend")
        gain = (blend / store - 1) * 100 if store else float("nan")
        share = float(np.median([row["share"] for row in group]))
        summary[size] = {"ndcg_store": store, "ndcg_blend": blend, "gain_percent": gain, "share": share}
        recall_store, recall_blend = mean("recall_store"), mean("recall_blend")
        print(f"| {len(group)} {size} | {SIZES[size]} | {int(weights.sum())} | {share:.2f} | {store:.4f} | "
              f"{blend:.4f} | {gain:+.1f}% | {recall_store:.4f} | {recall_blend:.4f} |")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "blend.json").write_text(json.dumps({"stores": rows, "summary": summary}, indent=1))
    _plot(rows)


def _plot(rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    colours = {"small": "tab:red", "middle": "tab:orange", "large": "tab:green"}
    for size, colour in colours.items():
        group = [row for row in rows if row["size"] == size]
        axis.scatter([row["ndcg_store"] for row in group], [row["ndcg_blend"] for row in group],
                     c=colour, label=size)  # fmt: skip
    top = max([row["ndcg_blend"] for row in rows] + [row["ndcg_store"] for row in rows]) * 1.05
    axis.plot([0, top], [0, top], color="grey", linewidth=0.8)
    axis.set_xlabel("NDCG@10, store model alone")
    axis.set_ylabel("NDCG@10, blended with the global model")
    axis.set_title("Blend gain per store (points above the line gain)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(OUT / "blend-gain.png", dpi=110)
    print(f"plot: {OUT / 'blend-gain.png'}")


if __name__ == "__main__":
    main()
