"""The production web server: granian (HTTP in Rust) serving `config.wsgi:application` over WSGI.

One definition for `manage.py serve` (`make run`), docker/ and bench/serve.py. Picked by measurement:
on the bench store (bench/serve.py, 2 cores, cached answers, 8 clients) gunicorn's gthread workers served
1,500 to 2,100 requests/s at p95 7 to 12 ms, granian 2,300 to 3,600 at p95 4.5 to 8 ms, because its HTTP
parsing and connection handling cost no Python. Computed answers (CPU in numpy and PostgreSQL) are the
same on both. `bench/serve.py --server gunicorn` repeats the comparison.

Workers: WEB_CONCURRENCY, else one per core (at least two). Each runs the application on WEB_THREADS
threads (default 4), so a request waiting on PostgreSQL (an event's INSERT and commit, a profile rebuilt)
does not hold up the others of its process. bench/serve.py measured 2 threads against 4, alternating, two
runs each at 8 clients: the storefront loop did better with 4 (689 and 595 answers/s against 452 and
548); computed and cached answers were within the runs' noise either way.

    python -m config.web [--bind 0.0.0.0:8000] [--workers N]    (what docker/ runs)
"""

from __future__ import annotations

import os
import sys

BLOCKING_THREADS = int(os.environ.get("WEB_THREADS") or 4)


def default_workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY") or 0) or max(2, os.cpu_count() or 1)


def command(
    *, bind: str, workers: int | None = None, threads: int | None = None, access_log: bool = False
) -> list[str]:
    """The command line of the web server, bound to `host:port`."""
    host, _, port = bind.rpartition(":")
    return [
        sys.executable, "-m", "granian", "--interface", "wsgi", "config.wsgi:application",
        "--host", host.strip("[]") or "127.0.0.1", "--port", port,
        "--workers", str(workers or default_workers()),
        "--blocking-threads", str(threads or BLOCKING_THREADS),
        "--respawn-failed-workers",  # a worker that dies is replaced, as gunicorn's arbiter does
        "--workers-kill-timeout", "10",  # graceful stop: requests in flight get 10 s
        "--log-level", "warning",
        *(["--access-log"] if access_log else []),
    ]  # fmt: skip


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the production web server.")
    parser.add_argument("--bind", default=os.environ.get("BIND", "0.0.0.0:8000"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--access-log", action="store_true")
    options = parser.parse_args()
    line = command(bind=options.bind, workers=options.workers, access_log=options.access_log)
    os.execv(line[0], line)  # noqa: S606 - the server takes this process's place (signals reach it directly)
