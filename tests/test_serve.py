"""`make run` end to end: `manage.py serve` brings up the web server and a worker with demo data, answers
health and the API over real HTTP, and stops every child on Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "recsys_e2e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_call(
    port: int, method: str, path: str, key: str | None = None, body: object = None
) -> tuple[int, dict]:
    """(status, JSON body); a non-JSON body comes back as {"html": text}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(raw)
    return response.status, {"html": raw.decode()}


def drop_database() -> None:
    database = settings.DATABASES["default"]
    with psycopg.connect(
        host=database["HOST"], port=database["PORT"], user=database["USER"], password=database["PASSWORD"],
        dbname="postgres", autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


@pytest.mark.slow
def test_serve_runs_the_system_with_demo_data_and_stops_on_ctrl_c(tmp_path):
    if "DATABASE_URL" in os.environ:
        pytest.skip("serve's embedded database is what this test drives")
    drop_database()
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base", "RECSYS_DATABASE_NAME": DATABASE}
    env["RECSYS_LOCAL_DIR"] = str(ROOT / ".local")
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        # given the system comes up
        deadline = time.monotonic() + 120
        status, body = 0, {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, body = http_call(port, "GET", "/api/v1/health")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        log.seek(0)
        output = log.read()
        assert status == 200, output
        assert body["database"] == "ok" and body["broker"] == "ok"
        key = re.search(r"API key: (rk_\S+)", output)
        assert key, output
        assert re.search(r"admin: .*user 'admin', password '\S+'", output)
        # when the demo key is used
        status, store = http_call(port, "GET", "/api/v1/store", key.group(1))
        assert status == 200 and store["id"] == "demo"
        status, page = http_call(port, "GET", "/api/v1/products?limit=5", key.group(1))
        assert status == 200 and len(page["items"]) == 5
        status, result = http_call(
            port, "POST", "/api/v1/events", key.group(1),
            {"user_id": "e2e", "product_id": page["items"][0]["id"], "type": "view"},
        )  # fmt: skip
        assert status == 200 and result["accepted"] == 1
        # and the worker trains the demo store's first model, which then serves it
        deadline = time.monotonic() + 120
        models: dict = {"items": []}
        while time.monotonic() < deadline and not any(m["is_active"] for m in models["items"]):
            time.sleep(1)
            models = http_call(port, "GET", "/api/v1/models", key.group(1))[1]
        log.seek(0)
        assert any(m["is_active"] for m in models["items"]), (
            models,
            [line for line in log.read().splitlines() if "GET /api" not in line][-60:],
        )
        status, answer = http_call(
            port, "GET", "/api/v1/users/user-0001/recommendations?limit=5", key.group(1)
        )
        assert status == 200 and answer["source"].startswith("store-model:v1") and len(answer["items"]) == 5
        # metrics of all web and worker processes add up at /metrics
        status, page = http_call(port, "GET", "/metrics")
        assert status == 200
        assert 'recsys_events_ingested_total{outcome="accepted"} 1.0' in page["html"]
        assert 'recsys_training_runs_total{status="succeeded"} 1.0' in page["html"]
        status, page = http_call(port, "GET", "/admin/login/")
        assert status == 200 and "Log in" in page["html"]
        status, page = http_call(port, "GET", "/static/admin/css/base.css")
        assert status == 200  # static files are served by the production server
        # then Ctrl-C stops it and every child
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=40) == 0
        with pytest.raises(OSError):
            http_call(port, "GET", "/api/v1/health")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        drop_database()
