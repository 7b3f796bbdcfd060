"""Test settings: the embedded PostgreSQL (unless DATABASE_URL is set) and a real broker."""

import os

from config import embedded

if not os.environ.get("CELERY_BROKER_URL") and embedded.tcp_redis_answers():
    # Redis on 127.0.0.1:6379 where one answers (CI has one); db 15 keeps tests apart from other users.
    os.environ["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/15"

# The events' archive of this test run (events/archive.py), inherited by the servers and workers it starts
if not os.environ.get("EVENT_ARCHIVE_URL"):
    import tempfile

    os.environ["EVENT_ARCHIVE_URL"] = tempfile.mkdtemp(prefix="recsys-test-archive-")

# The tests' own process creates the test database and migrates it: as the tables' owner (row-level
# security is forced, so it binds the owner too). The servers and workers a test starts connect as the
# application's role (the default of a process that is not told otherwise).
_role_set_here = "RECSYS_DATABASE_ROLE" not in os.environ
if _role_set_here:
    os.environ["RECSYS_DATABASE_ROLE"] = "owner"

from config.settings.base import *  # noqa: E402,F403

if _role_set_here:
    del os.environ["RECSYS_DATABASE_ROLE"]

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # noqa: S105 - fast test logins
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
