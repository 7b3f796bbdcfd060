"""The API does what its OpenAPI schema says (issue #13): Schemathesis, run against a real server on the
test database, with every check (status codes, response schemas and headers, schema-valid requests
accepted and schema-violating ones refused, auth, methods, stateful sequences through the schema's links)
and bounded examples. tests/schemathesis.toml names the few rules the schema cannot state."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import make_tenant, product, subprocess_env

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "20"))
SEED = os.environ.get("CONTRACT_SEED", "20261202")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(transactional_db):
    port = _free_port()
    env = subprocess_env(LOG_LEVEL="WARNING")
    from config import web

    process = subprocess.Popen(web.command(bind=f"127.0.0.1:{port}", workers=1), cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)  # noqa: S310
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the server did not start")
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_the_api_does_what_its_schema_says(server):
    tenant = make_tenant("contract")
    tenant.store.rate_limit_per_second = 0  # thousands of requests a minute from one key
    tenant.store.save()
    api = tenant.api
    api.post(
        "/api/v1/products/bulk", [product(f"p{i}", price=10 + i, category_path=["A"]) for i in range(10)]
    )
    api.post("/api/v1/events", [
        {"user_id": f"u{i % 3}", "product_id": f"p{i % 10}", "type": "view"} for i in range(30)
    ])  # fmt: skip
    api.post("/api/v1/users/u0/aliases", {"alias_id": "device-1"})
    # an experiment runs on for_user: its answers name their variant (the schema must say so)
    experiment = {
        "name": "contract",
        "surface": "for_user",
        "variants": [
            {"name": "a", "traffic": 0.5, "config": {"strategy": "popularity"}},
            {"name": "b", "traffic": 0.5},
        ],
    }
    assert api.post("/api/v1/experiments", experiment).status_code == 201
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
         "run", f"{server}/api/v1/schema/", "-H", f"Authorization: Bearer {tenant.raw_key}",
         "--phases", "examples,coverage,fuzzing,stateful",  # every check: Schemathesis's default
         "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--workers", "1", "--no-color"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = ROOT / ".local" / "contract-report.txt"  # the whole run, for a failure's curl to replay
    report.parent.mkdir(exist_ok=True)
    report.write_text(done.stdout + done.stderr)
    failures = done.stdout.find("FAILURES")
    print(done.stdout[failures:][:20_000] if failures >= 0 else done.stdout[-3000:])
    assert done.returncode == 0, f"see the report above and {report}"
    assert "Authentication failed" not in done.stdout  # the run kept its key to the end
