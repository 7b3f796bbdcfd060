"""python manage.py serve: the whole system on one machine (what `make run` calls).

Migrates (as the tables' owner), creates the demo store and an admin login on first start, then runs
granian (the production web server, config/web.py) on 127.0.0.1:8000 and a Celery worker, and stops all of
them, and the embedded services, on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from config import embedded, web

CREDENTIALS_FILE = embedded.LOCAL_DIR / "demo_credentials.json"


class Command(BaseCommand):
    help = "Run the API, the admin and a Celery worker with demo data (embedded services by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1:8000"))
        parser.add_argument(
            "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "0")) or None
        )
        parser.add_argument("--no-demo", action="store_true", help="do not create the demo store")
        parser.add_argument("--no-worker", action="store_true", help="do not start a Celery worker")

    def handle(self, *args: Any, **options: Any) -> None:
        # as the tables' owner (this process is the application's role, bound by row-level security)
        subprocess.run(
            [sys.executable, str(embedded.PROJECT_ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
            env={**os.environ, "RECSYS_DATABASE_ROLE": "owner"},
            check=True,
        )
        call_command("collectstatic", interactive=False, verbosity=0)
        credentials = self._credentials(create_demo=not options["no_demo"])
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.base"),
        }
        # Metrics of every web and worker process add up at /metrics (a fresh folder each start).
        metrics_dir = embedded.LOCAL_DIR / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        environment.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        # Children reattach to the same embedded broker; pin its URL so they need not probe for it.
        environment.setdefault("CELERY_BROKER_URL", settings.CELERY_BROKER_URL)
        children = [
            subprocess.Popen(
                web.command(bind=options["bind"], workers=options["workers"], access_log=True),
                env=environment,
            )
        ]
        if not options["no_worker"]:
            queues = ",".join(settings.CELERY_TASK_QUEUES_USED)
            for arguments in (
                ["worker", "--concurrency", "1", "-Q", queues],
                ["beat", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME],
            ):
                command = [sys.executable, "-m", "celery", "-A", "config", *arguments, "--loglevel", "INFO"]
                children.append(subprocess.Popen(command, env=environment))
        url = f"http://{options['bind']}"
        self.stdout.write(self.style.SUCCESS(f"\nServing on {url}"))
        self.stdout.write(f"  API docs:  {url}/api/v1/docs/")
        self.stdout.write(f"  health:    {url}/api/v1/health")
        self.stdout.write(
            f"  admin:     {url}/admin/  (user {credentials['admin_user']!r}, "
            f"password {credentials['admin_password']!r})"
        )
        if credentials.get("api_key"):
            self.stdout.write(f"  demo store {credentials['store']!r}, API key: {credentials['api_key']}")
            self.stdout.write(
                f"  try: curl -H 'Authorization: Bearer {credentials['api_key']}' {url}/api/v1/store"
            )
        self.stdout.write("Press Ctrl-C to stop.\n")
        self._wait(children)

    def _credentials(self, *, create_demo: bool) -> dict[str, Any]:
        from django.contrib.auth import get_user_model

        from operations.demo import demo_store_create
        from recommendations.services import training_run_create
        from tenants.models import Store

        stored: dict[str, Any] = {}
        if CREDENTIALS_FILE.exists():
            stored = json.loads(CREDENTIALS_FILE.read_text())
        user_model = get_user_model()
        if not user_model.objects.filter(username="admin").exists() or "admin_password" not in stored:
            password = secrets.token_urlsafe(12)
            user, _ = user_model.objects.get_or_create(username="admin", defaults={"is_staff": True})
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            stored.update(admin_user="admin", admin_password=password)
        if create_demo and not Store.objects.filter(slug="demo").exists():
            self.stdout.write("Creating the demo store (catalog and events)...")
            started = time.monotonic()
            store, issued = demo_store_create()
            self.stdout.write(
                f"  done in {time.monotonic() - started:.1f} s; the worker trains its first model"
            )
            training_run_create(store=store, trigger="demo")
            stored.update(store=store.slug, api_key=issued.raw_key)
        CREDENTIALS_FILE.parent.mkdir(parents=True, exist_ok=True)
        CREDENTIALS_FILE.write_text(json.dumps(stored))
        CREDENTIALS_FILE.chmod(0o600)
        return stored

    def _wait(self, children: list[subprocess.Popen]) -> None:
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.3)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            if settings.EMBEDDED_BROKER and embedded.started_here["broker"]:
                embedded.stop_broker()
            if settings.EMBEDDED_POSTGRES and embedded.started_here["postgres"]:
                from django.db import connections

                connections.close_all()
                embedded.stop_postgres()
            self.stdout.write("Stopped.")
