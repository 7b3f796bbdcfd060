"""The ranking stage's quality through the API: Amazon Beauty's leave-last-out split loaded as a store,
trained by the worker's code path, each test shopper's for-user answer asked for through the production
WSGI application, scored against their held-out item; beside it, the same version's answers worked out
offline (two_stage.candidate_lists over the version's arrays, reordered by its ranker) for the same
shoppers, and the store's first stage alone (RANKING_STAGE off).

    python bench/api_quality.py [--retrain] [--users 22363]

The store (`quality-beauty-api` in the `recsys_bench` database) is built and trained on the first run
only. Its version is tuned on the store's own time split, as every store's is (bench/quality.py tunes on
leave-last-out), so its figures are compared with the offline figures of the same version, not with
bench/quality.py's.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import orjson
from bench_env import train_and_serve  # noqa: E402 - (on the path once serve is imported)

# (bench/serve.py sets up the bench's environment as it is imported: the recsys_bench database, the
# limits its servers run under, the project on the path)
from serve import beauty_as_store

SLUG = "quality-beauty-api"
K = 10


def beauty_split() -> tuple[list[dict], list[dict], dict[str, str]]:
    """The catalog, the training part's events (each shopper's reviews as purchases in their order,
    spread over the last 300 days) and each test shopper's held-out product."""
    from quality import load_beauty_with_tags

    from recommendations.engine.evaluation import leave_last_out

    data, tags = load_beauty_with_tags()
    holdout = leave_last_out(data)
    catalog, events = beauty_as_store(holdout.train, tags)
    targets = {
        f"U{user}": f"P{holdout.targets.indices[holdout.targets.indptr[user]]}"
        for user in holdout.users.tolist()
    }
    return catalog, events, targets


def prepare(retrain: bool) -> tuple[object, str, dict[str, str]]:
    from bench_env import django_setup

    django_setup()
    from django.core.management import call_command

    from catalog.services import product_bulk_upsert
    from events.services import event_ingest
    from tenants.models import Store
    from tenants.services import api_key_issue, store_create

    call_command("migrate", verbosity=0)
    catalog, events, targets = beauty_split()
    store = Store.objects.filter(slug=SLUG).first()
    if store is None:
        store, _ = store_create(slug=SLUG)
        started = time.perf_counter()
        for start in range(0, len(catalog), 10_000):
            product_bulk_upsert(store=store, rows=catalog[start : start + 10_000])
        for start in range(0, len(events), 10_000):
            event_ingest(store=store, payload=events[start : start + 10_000])
            print(f"  events {min(start + 10_000, len(events)):,} of {len(events):,}", flush=True)
        print(f"built the store in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    run = train_and_serve(store, retrain=retrain)
    if run is not None:
        print(f"trained in {time.perf_counter() - started:.0f} s: {run.message}; "
              f"ranking stage: {run.metrics.get('ranker')}", flush=True)  # fmt: skip
    return store, api_key_issue(store=store, name="bench").raw_key, targets


def through_api(key: str, shoppers: list[str], salt: str) -> dict[str, list[str]]:
    """Each shopper's for-user answer (ids), through the production WSGI application in this process."""
    from config.wsgi import application

    answers = {}
    for done, shopper in enumerate(shoppers):
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": f"/api/v1/users/{shopper}/recommendations",
            "QUERY_STRING": f"limit={K}&bench={salt}", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
            "HTTP_HOST": "127.0.0.1", "HTTP_AUTHORIZATION": f"Bearer {key}", "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
        }  # fmt: skip
        statuses: list[str] = []
        body = b"".join(application(environ, lambda status, headers, *_, seen=statuses: seen.append(status)))
        assert statuses[0].startswith("200"), body[:300]
        answers[shopper] = [item["id"] for item in orjson.loads(body)["items"]]
        if done and done % 5000 == 0:
            print(f"  {done:,} answers", flush=True)
    return answers


def offline(store: object, shoppers: list[str]) -> tuple[dict[str, list[str]], str]:
    """The same version's answers worked out offline: its first stage rebuilt from its arrays, the
    shoppers' candidates and features as training builds them, ordered by its ranker."""
    from catalog.models import Product
    from recommendations.artifacts import artifact_load
    from recommendations.engine.ranker import FeatureSource, load_ranker, ranker_features
    from recommendations.engine.recommender import SequentialItemKNN
    from recommendations.engine.two_stage import candidate_lists
    from recommendations.models import TrainedModel
    from recommendations.services import _load
    from tenants.models import StoreSettings

    version = TrainedModel.objects.get(store=store, is_active=True)
    arrays = artifact_load(bytes(version.artifact))
    first = SequentialItemKNN(
        history_decay=version.parameters["history_decay"], repeat_weight=0.0,
        popularity_weight=version.parameters["popularity_weight"],
    )  # fmt: skip
    first.neighbours_, first.popularity_ = arrays["neighbours"], np.asarray(arrays["popularity"])
    data = _load(store, StoreSettings.objects.get(store=store))
    source = FeatureSource(
        arrays["similar"], arrays["transitions"], arrays["popularity"], arrays["counts"], arrays.get("tags"),
        arrays.get("arrivals"), arrays.get("prices"), arrays.get("stats"),
    )  # fmt: skip
    assert "ranker" in arrays, "the version serves without a ranking stage: nothing to compare"
    ranker = load_ranker(str(np.asarray(arrays["ranker"])))
    width = ranker_features(ranker)
    users = data.user_ids.positions(np.array(shoppers, dtype=object).astype(str))
    lists = candidate_lists(first, data.interactions, users, source, exclude_seen=True)
    external = dict(Product.objects.filter(store=store).values_list("id", "external_id"))
    answers = {}
    for shopper, items, rows in zip(shoppers, lists.candidates, lists.features, strict=True):
        ordered = items[np.argsort(-ranker.predict(rows[:, :width]), kind="stable")][:K]
        answers[shopper] = [external[int(data.product_ids.ids[i])] for i in ordered]
    return answers, f"store-model:v{version.version}"


def score(answers: dict[str, list[str]], targets: dict[str, str]) -> tuple[float, float]:
    hits, gains = [], []
    for shopper, items in answers.items():
        at = items.index(targets[shopper]) if targets[shopper] in items[:K] else -1
        hits.append(at >= 0)
        gains.append(1.0 / np.log2(at + 2) if at >= 0 else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--users", type=int, default=0, help="test shoppers (default: all)")
    args = parser.parse_args()
    store, key, targets = prepare(args.retrain)
    shoppers = sorted(targets, key=lambda name: int(name[1:]))
    if args.users:
        shoppers = shoppers[: args.users]
    from django.conf import settings

    from recommendations.serving.state import serving_state

    rows = []
    started = time.perf_counter()
    served = through_api(key, shoppers, f"{time.time():.0f}")
    sources = set()
    rows.append(("through the API, ranking stage on", *score(served, targets), time.perf_counter() - started))
    started = time.perf_counter()
    worked_out, source = offline(store, shoppers)
    sources.add(source)
    rows.append(("offline, the same version", *score(worked_out, targets), time.perf_counter() - started))
    same = sum(served[s] == worked_out[s] for s in shoppers)
    settings.RANKING_STAGE = False
    serving_state().clear()
    started = time.perf_counter()
    first = through_api(key, shoppers, f"first-{time.time():.0f}")
    rows.append(("through the API, first stage alone", *score(first, targets), time.perf_counter() - started))
    print(f"\n== Amazon Beauty as a store ({source}), {len(shoppers):,} test shoppers, leave-last-out")
    print(f"{'answers':<36} {'HR@10':>7} {'NDCG@10':>8} {'seconds':>8}")
    for label, hit, ndcg, seconds in rows:
        print(f"{label:<36} {hit:>7.4f} {ndcg:>8.4f} {seconds:>8.1f}")
    print(f"answers identical through the API and offline: {same:,} of {len(shoppers):,}")


if __name__ == "__main__":
    main()
