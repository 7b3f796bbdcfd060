"""A shopper simulator: shoppers with hidden tastes browse, click and buy by a known model, through the API.

Every shopper has a favourite category, hidden from the system. The catalog's products each have a
category and a price. The simulator

1. posts a history: each shopper views products, mostly of their favourite category, and buys some;
2. (the caller trains the store's model on it);
3. runs an experiment of the store's model against the popularity control on "recommended for you": each
   visit posts a view, asks for the shopper's answer, and scans it in order: the item at position i is
   clicked with probability `click_match` (of the shopper's taste) or `click_other`, times `DECAY**i`;
   the first click ends the scan, and a click is
   followed by a purchase with probability `BUY[taste match]`, both citing the answer's recommendation id;
4. counts what it did (answers received = impressions, clicks, purchases, revenue at the catalog's
   price), per variant, and the CTR its own model expects of each variant given the answers it got: the
   true figures that the analytics and the experiment's results are checked against.

It speaks to the API through a client with `get(path, **query)` and `post(path, body)` answering objects
with `status_code` and `json()`: the tests' client, or bench/simulate.py's HTTP one. No Django here."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

CLICK_MATCH, CLICK_OTHER = 0.15, 0.01  # a shown item of the shopper's taste is clicked far more often
BUY = {True: 0.30, False: 0.05}
DECAY = 0.85  # attention falls with the position
VIEW_TASTE = 0.85  # a view is of the favourite category this often


class Response(Protocol):
    status_code: int

    def json(self) -> Any: ...


class Client(Protocol):
    def get(self, path: str, **query: Any) -> Response: ...

    def post(self, path: str, body: Any = None) -> Response: ...


@dataclass
class Counted:
    """What the simulator did in one variant, and what its model expected of it."""

    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    revenue: float = 0.0
    expected_clicks: float = 0.0  # sum over answers of P(at least one click), by the known model
    shoppers: set[str] = field(default_factory=set)

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def expected_ctr(self) -> float:
        return self.expected_clicks / self.impressions if self.impressions else 0.0


@dataclass
class World:
    categories: int = 6
    products: int = 120
    shoppers: int = 600
    history_views: int = 8  # per shopper
    click_match: float = CLICK_MATCH  # P(click) of the first item shown when it is of the shopper's taste
    click_other: float = CLICK_OTHER  # ... and when it is not
    seed: int = 20261204
    rng: random.Random = field(init=False)
    category_of: dict[str, int] = field(init=False)
    price_of: dict[str, float] = field(init=False)
    taste_of: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.category_of = {f"sim-p{i}": i % self.categories for i in range(self.products)}
        self.price_of = {pid: float(5 + (i * 7) % 40) for i, pid in enumerate(self.category_of)}
        self.taste_of = {f"sim-u{n}": self.rng.randrange(self.categories) for n in range(self.shoppers)}
        self._by_category: dict[int, list[str]] = {}
        for pid, category in self.category_of.items():
            self._by_category.setdefault(category, []).append(pid)

    def catalog(self) -> list[dict[str, Any]]:
        return [
            {
                "id": pid,
                "title": f"Product {pid}",
                "category_path": [f"Category {c}"],
                "price": self.price_of[pid],
            }
            for pid, c in self.category_of.items()
        ]

    def pick(self, shopper: str) -> str:
        """A product the shopper looks at: of their taste mostly, and within it the popular ones more."""
        taste = self.taste_of[shopper]
        category = taste if self.rng.random() < VIEW_TASTE else self.rng.randrange(self.categories)
        items = self._by_category[category]
        return items[min(int(self.rng.expovariate(0.5)), len(items) - 1)]

    def history(self) -> list[dict[str, Any]]:
        """Views and some purchases of every shopper, over the last 20 days (before any answer)."""
        start = datetime.now(tz=UTC) - timedelta(days=20)
        events = []
        for n, shopper in enumerate(self.taste_of):
            moment = start + timedelta(seconds=n * 7)
            for step in range(self.history_views):
                item = self.pick(shopper)
                at = (moment + timedelta(minutes=step)).isoformat()
                events.append({"user_id": shopper, "product_id": item, "type": "view", "timestamp": at})
                if self.rng.random() < 0.15 and self.category_of[item] == self.taste_of[shopper]:
                    events.append(
                        {"user_id": shopper, "product_id": item, "type": "purchase", "timestamp": at}
                    )
        return events

    def matches(self, shopper: str, item: str) -> bool:
        return self.category_of.get(item) == self.taste_of[shopper]

    def p_click(self, shopper: str, item: str, position: int) -> float:
        return (self.click_match if self.matches(shopper, item) else self.click_other) * DECAY**position

    def p_any_click(self, shopper: str, items: list[str]) -> float:
        none = 1.0
        for position, item in enumerate(items):
            none *= 1 - self.p_click(shopper, item, position)
        return 1 - none


def _patiently(send: Callable[[], Response], what: str) -> Any:
    """The answer of `send`, waiting as told when over the key's rate limit (429 with its retry_after)."""
    response = send()
    while response.status_code == 429 and response.json().get("code") == "rate_limited":
        time.sleep(float(response.json()["details"].get("retry_after", 1)))
        response = send()
    if response.status_code >= 300:
        raise RuntimeError(f"{what} answered {response.status_code}: {response.json()}")
    return response.json()


def post_ok(client: Client, path: str, body: Any) -> Any:
    return _patiently(lambda: client.post(path, body), f"POST {path}")


def setup_store(client: Client, world: World, *, batch: int = 1000) -> None:
    post_ok(client, "/api/v1/products/bulk", world.catalog())
    events = world.history()
    for start in range(0, len(events), batch):
        post_ok(client, "/api/v1/events", events[start : start + batch])


def run_visits(
    client: Client,
    world: World,
    visits: int,
    *,
    limit: int = 10,
    progress: Callable[[int], None] = lambda done: None,
    counted: dict[str, Counted] | None = None,
) -> dict[str, Counted]:
    """The experiment's traffic: `visits` visits of shoppers drawn at random; counted per variant (added
    to `counted` when given, so that a run in parts adds up)."""
    counted = {} if counted is None else counted
    shoppers = list(world.taste_of)
    for visit in range(visits):
        shopper = world.rng.choice(shoppers)
        post_ok(
            client, "/api/v1/events", {"user_id": shopper, "product_id": world.pick(shopper), "type": "view"}
        )
        path = f"/api/v1/users/{shopper}/recommendations"
        answer = _patiently(lambda: client.get(path, limit=limit), f"GET {path}")  # noqa: B023
        items = [item["id"] for item in answer["items"]]
        figures = counted.setdefault(answer.get("variant") or "", Counted())
        figures.impressions += 1
        figures.shoppers.add(shopper)
        figures.expected_clicks += world.p_any_click(shopper, items)
        cited = {"user_id": shopper, "recommendation_id": answer["recommendation_id"]}
        for position, item in enumerate(items):
            taste = world.matches(shopper, item)
            if world.rng.random() < world.p_click(shopper, item, position):
                post_ok(client, "/api/v1/events", {**cited, "product_id": item, "type": "click"})
                figures.clicks += 1
                if world.rng.random() < BUY[taste]:
                    purchase = {**cited, "product_id": item, "type": "purchase", "quantity": 1}
                    post_ok(client, "/api/v1/events", purchase)
                    figures.purchases += 1
                    figures.revenue += world.price_of[item]
                break
        if (visit + 1) % 100 == 0:
            progress(visit + 1)
    return counted


def totals(counted: dict[str, Counted]) -> dict[str, Any]:
    impressions = sum(c.impressions for c in counted.values())
    return {
        "impressions": impressions,
        "clicks": sum(c.clicks for c in counted.values()),
        "purchases": sum(c.purchases for c in counted.values()),
        "revenue": round(sum(c.revenue for c in counted.values()), 2),
    }


A_A = {  # the same strategy twice: no difference to find, however often it is looked at
    "name": "A/A (simulated)",
    "surface": "for_user",
    "variants": [
        {"name": "a", "traffic": 0.5, "config": {"strategy": "model"}},
        {"name": "b", "traffic": 0.5, "config": {"strategy": "model"}},
    ],
}
EXPERIMENT = {
    "name": "store model against popularity (simulated)",
    "surface": "for_user",
    "variants": [
        {"name": "popularity", "traffic": 0.5, "config": {"strategy": "popularity"}},
        {"name": "model", "traffic": 0.5, "config": {"strategy": "model"}},
    ],
}
