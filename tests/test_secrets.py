"""SECRET_KEY: production refuses to start without a real one; a local setup generates its own once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRINT_KEY = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"


def _settings(env: dict[str, str], local_dir: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", PRINT_KEY],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "RECSYS_LOCAL_DIR": str(local_dir),
            "CELERY_BROKER_URL": "memory://",
            "ANSWER_CACHE_URL": "",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


PRODUCTION = {"DATABASE_URL": "postgres://u@127.0.0.1:1/none"}


@pytest.mark.parametrize(
    "key", [None, "", "change-me-to-a-long-random-string", "short-key", "dev-insecure-xxxxxxx"]
)
def test_production_refuses_a_missing_placeholder_or_short_key(tmp_path, key):
    env = dict(PRODUCTION)
    if key is not None:
        env["SECRET_KEY"] = key
    done = _settings(env, tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "SECRET_KEY" in done.stderr


def test_production_takes_a_real_key(tmp_path):
    done = _settings({**PRODUCTION, "SECRET_KEY": "k" * 50}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "k" * 50
    assert not (tmp_path / "secret_key").exists()


def test_a_local_setup_generates_a_random_key_once(tmp_path):
    # (no DATABASE_URL: the embedded PostgreSQL's settings; printing the key queries nothing)
    first = _settings({"RECSYS_REQUIRE_SECRET_KEY": "", "DATABASE_URL": "postgres://u@127.0.0.1:1/none",
                       "DEBUG": "true"}, tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    key = first.stdout.strip()
    assert len(key) >= 50 and key != "dev-insecure-" + "x" * 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # its owner's only
    again = _settings({"DATABASE_URL": "postgres://u@127.0.0.1:1/none", "DEBUG": "true"}, tmp_path)
    assert again.stdout.strip() == key
    other = _settings({"DATABASE_URL": "postgres://u@127.0.0.1:1/none", "DEBUG": "true"}, tmp_path / "b")
    assert other.stdout.strip() != key
