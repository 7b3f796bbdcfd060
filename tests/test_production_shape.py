"""The production shape: the compose file follows the Compose Specification and runs the commands and
settings the code reads; Celery is configured for idempotent, long tasks; schedules live in the database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
# The Compose Specification's JSON schema (compose-spec, Apache-2.0), as shipped in docker-compose 1.29.2.
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def errors_of(document: dict) -> list[str]:
    return [error.message for error in jsonschema.Draft201909Validator(SCHEMA).iter_errors(document)]


def test_compose_file_is_valid_and_the_validator_is_not_blind(compose):
    assert errors_of(compose) == []
    broken = {
        **compose,
        "services": {**compose["services"], "web": {**compose["services"]["web"], "portz": []}},
    }
    assert errors_of(broken)


def test_every_service_runs_a_command_the_project_has(compose):
    services = compose["services"]
    assert {"db", "redis", "migrate", "web", "worker-train", "worker-default", "beat"} <= set(services)
    assert services["web"]["command"][:3] == ["python", "-m", "config.web"]
    served: set[str] = set()
    for name in ("worker-train", "worker-default"):
        worker = services[name]["command"]
        assert worker[:4] == ["celery", "-A", "config", "worker"]
        served |= set(worker[worker.index("-Q") + 1].split(","))
    # every queue a task is routed to has a worker, and no worker waits on a queue nothing uses
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed <= served == set(settings.CELERY_TASK_QUEUES_USED)
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("db", "redis", "web"):
        assert "healthcheck" in services[name]
    assert "/api/v1/health" in " ".join(services["web"]["healthcheck"]["test"])


def test_the_env_file_sets_what_the_settings_read(compose):
    env_file = ROOT / "docker" / ".env.example"
    variables = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#")
    )
    read_by_settings = set(re.findall(r'os\.environ(?:\.get)?\(\s*"([A-Z_]+)"', (
        ROOT / "config" / "settings" / "base.py").read_text()))  # fmt: skip
    read_by_settings |= set(re.findall(r'env_(?:bool|list)\("([A-Z_]+)"', (
        ROOT / "config" / "settings" / "base.py").read_text()))  # fmt: skip
    assert set(variables) <= read_by_settings, set(variables) - read_by_settings
    assert {"DATABASE_URL", "CELERY_BROKER_URL"} <= set(variables)
    assert variables["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in variables["DATABASE_URL"]
    assert variables["CELERY_BROKER_URL"].startswith("redis://redis:6379")
    # no usable secret ships in the example: compose takes SECRET_KEY from the environment, or stops
    assert "SECRET_KEY" not in variables
    for name in ("migrate", "web", "worker-train", "worker-default", "beat"):
        assert compose["services"][name]["env_file"] == ".env.example"
        assert compose["services"][name]["environment"]["SECRET_KEY"].startswith("${SECRET_KEY:?")


def test_celery_is_configured_for_idempotent_long_tasks():
    from recommendations.tasks import train_store_task

    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_ROUTES["recommendations.tasks.train_store_task"] == {"queue": "train"}
    assert train_store_task.soft_time_limit < train_store_task.time_limit
    assert train_store_task.max_retries and train_store_task.retry_backoff


def test_beat_schedules_are_written_to_the_database_for_the_admin(transactional_db):
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery import app

    DatabaseScheduler(app=app, lazy=False)
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {"retrain-due-stores", "recover-lost-training-runs"} <= names


def test_one_web_server_command_for_make_run_docker_and_the_benches(monkeypatch):
    from config import web

    def option(line: list[str], name: str) -> str:
        return line[line.index(name) + 1]

    line = web.command(bind="10.0.0.7:8000", workers=3)
    assert line[1:6] == ["-m", "granian", "--interface", "wsgi", "config.wsgi:application"]
    assert option(line, "--host") == "10.0.0.7" and option(line, "--port") == "8000"
    assert option(line, "--workers") == "3" and "--respawn-failed-workers" in line
    assert option(web.command(bind="[::1]:9000"), "--host") == "::1"
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    assert web.default_workers() == 5
    monkeypatch.delenv("WEB_CONCURRENCY")
    assert web.default_workers() >= 2
